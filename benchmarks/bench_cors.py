"""CORSMiddleware beside Starlette's CORSMiddleware, the one users pick for the job.

python -m benchmarks.bench_cors [--rounds 15] [--min-time 0.05]

Both middleware get equivalent options: a list of two allowed origins, GET and PUT, one
custom request header, one exposed header, credentials allowed (the usual SPA set-up);
and, for the allow-all rows, ``allow_origins=["*"]`` without credentials. Four requests:

* no ``Origin`` (not a CORS request): only ``Vary: Origin`` is added, or, with the
  allow-all policy, nothing at all;
* a simple CORS request (GET with an allowed ``Origin``);
* a preflight (OPTIONS with ``Origin``, ``Access-Control-Request-Method: PUT`` and a
  custom header), answered by the middleware without calling the app.

Besides the ratio to Starlette, the added per-request cost over the bare app is compared:
(ours - bare) / (Starlette - bare), and printed in µs for the no-Origin rows.

The no-Origin scenarios also time a *floor*, the least any pure ASGI middleware does for
that request: an ``async def __call__`` that reads ``Origin`` and passes the request on
(allow-all), and one that also wraps ``send`` to add ``Vary: Origin`` to a new copy of
the start message (origin list). No option parsing, no policy, no checks.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware as StarletteCORSMiddleware

from asgikit.middleware.cors import CORSMiddleware
from asgikit.types import ASGIApp, Message, Receive, Scope, Send
from benchmarks.harness import Request, added_cost, bare_app, report, run_asgi

__all__ = ["main"]

ANCHOR = "Starlette CORSMiddleware"
OURS = "asgikit CORSMiddleware"
BARE = "bare app"

ORIGIN = b"https://app.example.com"
SPA_OPTIONS: dict[str, object] = {
    "allow_origins": ["https://app.example.com", "https://admin.example.com"],
    "allow_methods": ["GET", "PUT"],
    "allow_headers": ["X-Custom"],
    "allow_credentials": True,
    "expose_headers": ["X-Total-Count"],
}
ALLOW_ALL_OPTIONS: dict[str, object] = {"allow_origins": ["*"]}


def _headers(*extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b"host", b"api.example.com"),
        (b"user-agent", b"asgikit-benchmarks/1"),
        (b"accept", b"*/*"),
        (b"accept-encoding", b"gzip, deflate, br, zstd"),
        *extra,
    ]


SCENARIOS: dict[str, tuple[dict[str, object], Request]] = {
    "no Origin (not a CORS request), origin list": (SPA_OPTIONS, Request(headers=_headers())),
    "no Origin (not a CORS request), allow-all policy": (
        ALLOW_ALL_OPTIONS,
        Request(headers=_headers()),
    ),
    "simple CORS request (GET, allowed Origin), origin list": (
        SPA_OPTIONS,
        Request(headers=_headers((b"origin", ORIGIN))),
    ),
    "simple CORS request (GET, any Origin), allow-all policy": (
        ALLOW_ALL_OPTIONS,
        Request(headers=_headers((b"origin", ORIGIN))),
    ),
    "preflight (OPTIONS, PUT + X-Custom, allowed Origin), origin list": (
        SPA_OPTIONS,
        Request(
            method="OPTIONS",
            headers=_headers(
                (b"origin", ORIGIN),
                (b"access-control-request-method", b"PUT"),
                (b"access-control-request-headers", b"x-custom"),
            ),
        ),
    ),
}


FLOOR = "floor: read Origin, pass on"
VARY_FLOOR = "floor: read Origin, add Vary to a copy of the start"


class OriginFloor:
    """The least a CORS middleware does without an Origin: look for one, pass on."""

    def __init__(self, app: ASGIApp, vary: bool = False) -> None:
        self.app = app
        self.vary = vary

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
                break
        if origin is not None or not self.vary:
            await self.app(scope, receive, send)
            return

        async def send_with_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (b"vary", b"Origin")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_vary)


def apps(options: dict[str, object], floor: str | None = None) -> dict[str, ASGIApp]:
    """The bare app, and the bare app under Starlette's and asgikit's middleware (and the
    *floor*, when named)."""
    found: dict[str, ASGIApp] = {
        BARE: bare_app,
        ANCHOR: StarletteCORSMiddleware(bare_app, **options),  # type: ignore[arg-type]
        OURS: CORSMiddleware(bare_app, **options),  # type: ignore[arg-type]
    }
    if floor is not None:
        found[floor] = OriginFloor(bare_app, vary=floor == VARY_FLOOR)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_cors")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.05)
    args = parser.parse_args(argv)
    for title, (options, scenario) in SCENARIOS.items():
        floor = None
        if title.startswith("no Origin"):
            floor = FLOOR if options is ALLOW_ALL_OPTIONS else VARY_FLOOR
        results = run_asgi(
            apps(options, floor),
            baseline=ANCHOR,
            request=scenario,
            rounds=args.rounds,
            min_time=args.min_time,
        )
        print(report(results, f"CORS, {title}"))
        floor_us = None if floor is None else added_cost(results, floor, BARE)
        floor_note = "" if floor_us is None else f" (the floor's: {floor_us:+.3f} µs)"
        print(
            f"Added per-request cost over the bare app: {added_cost(results, OURS, BARE):+.3f} µs"
            f"{floor_note}; vs {ANCHOR}'s: {added_cost(results, OURS, BARE, ANCHOR):.2f}x\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
