"""TimeoutMiddleware beside the timeout middleware users write themselves.

python -m benchmarks.bench_timeout [--rounds 15] [--min-time 0.05]

No library is the usual pick for request timeouts in ASGI; users write one of two recipes,
both here: ``anyio.fail_after`` around the app, or ``asyncio.wait_for``, each answering 504
if nothing was sent yet. Neither answers while a sync handler holds a worker thread, and
the ``wait_for`` one runs the app in another task. TimeoutMiddleware acts on a deadline
from outside the app's task (on asyncio one timer per event loop serves every request,
on trio a watchdog task), so it does both; this measures what that costs on a handler
that answers at once (the deadline never passes), as the added microseconds over the
bare app.

One more case is a floor, not a middleware: the app inside one ``anyio.CancelScope`` and
nothing else. The issue asks for anyio cancel scopes (so the app's own shielded scopes
hold on asyncio and trio alike), and entering and leaving one is a cost no such
middleware can go under.

Two scenarios: the smallest ASGI app, and a Starlette app with one async endpoint, for
the share of a realistic fast request.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

import anyio
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgikit.middleware.timeout import TimeoutMiddleware
from asgikit.types import ASGIApp, Message, Receive, Scope, Send
from benchmarks.harness import Request, added_cost, bare_app, report, run_asgi

__all__ = [
    "CancelScopeFloor",
    "FailAfterRecipe",
    "WaitForRecipe",
    "fail_after_app",
    "main",
    "timeout_app",
]

TIMEOUT = 30.0
BASELINE = "bare app"
OURS = "asgikit TimeoutMiddleware"

_BODY = b"Gateway Timeout"
_START: Message = {
    "type": "http.response.start",
    "status": 504,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"15")],
}


class FailAfterRecipe:
    """The common recipe: ``anyio.fail_after`` around the app, 504 if nothing started."""

    def __init__(self, app: ASGIApp, timeout: float = TIMEOUT) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            with anyio.fail_after(self.timeout):
                await self.app(scope, receive, send_wrapper)
        except TimeoutError:
            if started:
                raise
            await send(_START)
            await send({"type": "http.response.body", "body": _BODY})


class WaitForRecipe:
    """The other common recipe: ``asyncio.wait_for`` (asyncio only; the app runs in a task)."""

    def __init__(self, app: ASGIApp, timeout: float = TIMEOUT) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, send_wrapper), self.timeout)
        except TimeoutError:
            if started:
                raise
            await send(_START)
            await send({"type": "http.response.body", "body": _BODY})


async def _hello(request: StarletteRequest) -> Response:
    return PlainTextResponse("Hello, world!")


def starlette_app() -> ASGIApp:
    """A Starlette app with one async endpoint: a realistic fast handler."""
    return Starlette(routes=[Route("/", _hello)])


# For the end-to-end runner (python -m benchmarks.e2e --case NAME=benchmarks.bench_timeout:ATTR).
timeout_app = TimeoutMiddleware(bare_app, total=TIMEOUT)
fail_after_app = FailAfterRecipe(bare_app)


FLOOR = "floor: the app in one anyio.CancelScope, nothing else"


class CancelScopeFloor:
    """The app inside one anyio cancel scope: the least an anyio timeout can cost."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with anyio.CancelScope():
            await self.app(scope, receive, send)


def cases(inner: ASGIApp) -> dict[str, ASGIApp]:
    return {
        BASELINE: inner,
        FLOOR: CancelScopeFloor(inner),
        "recipe: anyio.fail_after": FailAfterRecipe(inner),
        "recipe: asyncio.wait_for": WaitForRecipe(inner),
        OURS: TimeoutMiddleware(inner, total=TIMEOUT),
        f"{OURS}, first_byte only": TimeoutMiddleware(inner, total=None, first_byte=TIMEOUT),
        f"{OURS}, excluded path": TimeoutMiddleware(inner, exclude_paths=["/"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_timeout")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.05)
    args = parser.parse_args(argv)
    scenarios = {"bare ASGI handler": bare_app, "Starlette async endpoint": starlette_app()}
    for title, inner in scenarios.items():
        results = run_asgi(
            cases(inner),
            baseline=BASELINE,
            request=Request(),
            rounds=args.rounds,
            min_time=args.min_time,
        )
        print(report(results, f"Timeout, {title} (the deadline never passes)"))
        print()
        for result in results:
            if result.case != BASELINE:
                extra = added_cost(results, result.case, BASELINE)
                print(f"- {result.case}: +{extra:.2f} µs per request over the bare app")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
