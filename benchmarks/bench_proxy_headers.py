"""ProxyHeadersMiddleware beside uvicorn's, for a trusted and an untrusted peer.

python -m benchmarks.bench_proxy_headers [--rounds 15] [--min-time 0.05] [--uvloop]

Both middleware get the same request: the harness's GET / from 127.0.0.1 with
``X-Forwarded-For: 203.0.113.7, 10.0.0.2`` and ``X-Forwarded-Proto: https``, and the same
trust: 127.0.0.1 and 10.0.0.0/8 (the peer is trusted; the client is 203.0.113.7), then
10.0.0.0/8 alone (the peer is untrusted; nothing changes). uvicorn's middleware is the
baseline of each scenario; the bare app is shown for scale.

Both cache by header value: uvicorn the trust decision per address (an LRU cache),
asgikit what a set of proxy header values resolves to and each address it parsed. The
harness repeats one request, which both then answer from their caches. The "cache miss"
cases empty those caches before every request (through one more pass-through layer, about
0.2 µs): the cost when a request brings addresses never seen before, the worst case.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Sequence
from typing import Any, cast

from asgikit.middleware.proxy_headers import ProxyHeadersMiddleware
from asgikit.types import ASGIApp, Message, Receive, Scope, Send
from benchmarks.harness import BenchmarkError, Request, bare_app, report, run_asgi

__all__ = [
    "ASGIKIT",
    "ASGIKIT_MISS",
    "REQUEST",
    "SCENARIOS",
    "UVICORN",
    "UVICORN_MISS",
    "cases",
    "main",
]

REQUEST = Request(
    headers=[
        *Request().headers,
        (b"x-forwarded-for", b"203.0.113.7, 10.0.0.2"),
        (b"x-forwarded-proto", b"https"),
    ]
)

_PEER = ("127.0.0.1", 50000)  # the harness's client

# title -> the trusted proxies given to both middleware, and the client the app must see.
SCENARIOS: dict[str, tuple[list[str], tuple[str, int]]] = {
    "Trusted peer: X-Forwarded-For two hops + X-Forwarded-Proto": (
        ["127.0.0.1", "10.0.0.0/8"],
        ("203.0.113.7", 0),
    ),
    "Untrusted peer: the same headers, ignored": (["10.0.0.0/8"], _PEER),
}

UVICORN = "uvicorn ProxyHeadersMiddleware"
ASGIKIT = "asgikit ProxyHeadersMiddleware"
ASGIKIT_MISS = "asgikit ProxyHeadersMiddleware, cache miss"
UVICORN_MISS = "uvicorn ProxyHeadersMiddleware, cache miss"


class _CacheMiss:
    """A middleware with its caches of header values emptied before every request."""

    def __init__(self, middleware: ASGIApp, clear: Callable[[], object]) -> None:
        self.middleware = middleware
        self.clear = clear

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.clear()
        await self.middleware(scope, receive, send)


def _asgikit_miss(trusted: list[str]) -> ASGIApp:
    middleware = ProxyHeadersMiddleware(bare_app, trusted_proxies=trusted)

    def clear() -> None:
        middleware._results.clear()
        middleware._nodes.clear()
        middleware._peers.clear()

    return _CacheMiss(middleware, clear)


def _uvicorn_miss(trusted: list[str]) -> ASGIApp:
    middleware: Any = _uvicorn(bare_app, trusted)
    return _CacheMiss(middleware, middleware.trusted_hosts._trusts.cache_clear)


def _uvicorn(app: ASGIApp, trusted: list[str]) -> ASGIApp:
    # Imported here: uvicorn is an optional dependency, and only the benchmark needs it.
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware as UvicornProxyHeaders

    # uvicorn types its middleware with its own (stricter) ASGI TypedDicts.
    middleware = UvicornProxyHeaders(app, trusted_hosts=trusted)  # type: ignore[arg-type]
    return cast(ASGIApp, middleware)


def cases(trusted: list[str], *, cache_miss: bool = True) -> dict[str, ASGIApp]:
    """The bare app, and the bare app under each middleware trusting ``trusted``."""
    apps: dict[str, ASGIApp] = {
        "bare app": bare_app,
        UVICORN: _uvicorn(bare_app, trusted),
        ASGIKIT: ProxyHeadersMiddleware(bare_app, trusted_proxies=trusted),
    }
    if cache_miss:
        apps[UVICORN_MISS] = _uvicorn_miss(trusted)
        apps[ASGIKIT_MISS] = _asgikit_miss(trusted)
    return apps


def _check_same_results(trusted: list[str], expected: tuple[str, int]) -> None:
    """Both must hand the app the same client and scheme, or they do different jobs."""
    seen: dict[str, tuple[object, object]] = {}

    def probe(name: str) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            seen[name] = (tuple(scope["client"]), scope["scheme"])

        return app

    async def receive() -> Message:
        raise AssertionError("the probe app does not receive")

    async def send(message: Message) -> None:
        raise AssertionError("the probe app does not send")

    async def run() -> None:
        for app in (
            _uvicorn(probe(UVICORN), trusted),
            ProxyHeadersMiddleware(probe(ASGIKIT), trusted_proxies=trusted),
        ):
            await app(REQUEST.scope(), receive, send)

    asyncio.run(run())
    scheme = "http" if expected == _PEER else "https"
    for name, result in seen.items():
        if result != (expected, scheme):
            raise BenchmarkError(f"{name} gave the app {result}, expected {(expected, scheme)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run both scenarios and print one table each."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_proxy_headers", description=__doc__
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per case per round")
    parser.add_argument("--uvloop", action="store_true", help="run the event loop on uvloop")
    args = parser.parse_args(argv)
    loop = "uvloop" if args.uvloop else "asyncio"
    tables = []
    for title, (trusted, expected) in SCENARIOS.items():
        _check_same_results(trusted, expected)
        results = run_asgi(
            cases(trusted, cache_miss=expected != _PEER),
            baseline=UVICORN,
            request=REQUEST,
            rounds=args.rounds,
            min_time=args.min_time,
            use_uvloop=args.uvloop,
        )
        tables.append(report(results, f"{title} ({loop})"))
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
