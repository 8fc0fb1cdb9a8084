"""TrustedHostMiddleware and HTTPSRedirectMiddleware beside Starlette's, the ones users
pick for the job.

python -m benchmarks.bench_front_door [--rounds 15] [--min-time 0.05]

Mostly these two let a request through, so that is what is timed first: a request for
an allowed host (``Host: api.example.com``, the list ``example.com, *.example.com``, as
Starlette and asgikit both take it), and a request that is already https. Each beside
the bare app and a *pure pass-through* layer (``await self.app(...)``, nothing else): the
least any middleware costs. For https, asgikit's middleware is timed twice: as
Starlette's (no options) and with ``hsts=True``, which adds Strict-Transport-Security to
the response. Then, for completeness, what they answer themselves: a refused host (400)
and a plain http request (307 to https).

Besides the ratio to Starlette, the added per-request cost over the bare app is printed:
ours, the pass-through's, and ours as a ratio to Starlette's.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.middleware.httpsredirect import (
    HTTPSRedirectMiddleware as StarletteHTTPSRedirectMiddleware,
)
from starlette.middleware.trustedhost import (
    TrustedHostMiddleware as StarletteTrustedHostMiddleware,
)

from asgikit.middleware.https_redirect import HTTPSRedirectMiddleware
from asgikit.middleware.trusted_host import TrustedHostMiddleware
from asgikit.types import ASGIApp, Scope
from benchmarks.harness import PassThrough, Request, Result, added_cost, bare_app, report, run_asgi

__all__ = ["SCENARIOS", "PassThrough", "SchemeRequest", "main"]

BARE = "bare app"
FLOOR = "pure pass-through"
HOSTS = ["example.com", "*.example.com"]


@dataclass
class SchemeRequest(Request):
    """``Request`` with the scheme the request arrived with (the harness's is http)."""

    scheme: str = "http"

    def scope(self) -> Scope:
        scope = super().scope()
        scope["scheme"] = self.scheme
        return scope


def _headers(host: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"host", host),
        (b"user-agent", b"asgikit-benchmarks/1"),
        (b"accept", b"*/*"),
        (b"accept-encoding", b"gzip, deflate, br, zstd"),
    ]


def trusted_host_apps() -> dict[str, ASGIApp]:
    return {
        BARE: bare_app,
        FLOOR: PassThrough(bare_app),
        "Starlette TrustedHostMiddleware": StarletteTrustedHostMiddleware(
            bare_app, allowed_hosts=HOSTS
        ),
        "asgikit TrustedHostMiddleware": TrustedHostMiddleware(bare_app, allowed_hosts=HOSTS),
    }


def https_redirect_apps() -> dict[str, ASGIApp]:
    return {
        BARE: bare_app,
        FLOOR: PassThrough(bare_app),
        "Starlette HTTPSRedirectMiddleware": StarletteHTTPSRedirectMiddleware(bare_app),
        "asgikit HTTPSRedirectMiddleware": HTTPSRedirectMiddleware(bare_app),
        "asgikit HTTPSRedirectMiddleware, hsts=True": HTTPSRedirectMiddleware(bare_app, hsts=True),
    }


# title -> (the cases, the request, the anchor, ours)
SCENARIOS: dict[str, tuple[dict[str, ASGIApp], Request, str, str]] = {
    "TrustedHost, allowed host (a subdomain of the wildcard)": (
        trusted_host_apps(),
        SchemeRequest(headers=_headers(b"api.example.com")),
        "Starlette TrustedHostMiddleware",
        "asgikit TrustedHostMiddleware",
    ),
    "HTTPSRedirect, already https": (
        https_redirect_apps(),
        SchemeRequest(headers=_headers(b"api.example.com"), scheme="https"),
        "Starlette HTTPSRedirectMiddleware",
        "asgikit HTTPSRedirectMiddleware",
    ),
    "TrustedHost, refused host (400)": (
        trusted_host_apps(),
        SchemeRequest(headers=_headers(b"evil.example.org")),
        "Starlette TrustedHostMiddleware",
        "asgikit TrustedHostMiddleware",
    ),
    "HTTPSRedirect, plain http (307 to https)": (
        https_redirect_apps(),
        SchemeRequest(path="/items?id=3", headers=_headers(b"api.example.com")),
        "Starlette HTTPSRedirectMiddleware",
        "asgikit HTTPSRedirectMiddleware",
    ),
}


def _note(results: Sequence[Result], anchor: str, ours: str) -> str:
    floor = added_cost(results, FLOOR, BARE)
    mine = added_cost(results, ours, BARE)
    theirs = added_cost(results, anchor, BARE)
    return (
        f"Added per-request cost over the bare app: {mine:+.3f} µs (the pass-through's: "
        f"{floor:+.3f} µs; {anchor}'s: {theirs:+.3f} µs); vs {anchor}'s: {mine / theirs:.2f}x\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_front_door")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.05)
    args = parser.parse_args(argv)
    for title, (cases, scenario, anchor, ours) in SCENARIOS.items():
        options: dict[str, Any] = {"rounds": args.rounds, "min_time": args.min_time}
        results = run_asgi(cases, baseline=anchor, request=scenario, **options)
        print(report(results, title))
        print(_note(results, anchor, ours))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
