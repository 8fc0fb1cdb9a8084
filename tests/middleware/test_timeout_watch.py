"""TimeoutMiddleware with many requests at once: the shared deadline watch on asyncio.

On asyncio one timer per event loop serves every request's deadline (see
``middleware/timeout/watch.py``); on trio each request has its own watchdog task. These
tests run on both backends and check what users see (statuses, order, aborts), and that
the middleware lets go of every request once it is over.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import weakref
from typing import Any

import anyio
import pytest

from asgikit.contract import enforce
from asgikit.middleware.timeout import ResponseTimeout, TimeoutMiddleware
from asgikit.testing import http_scope, request
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

SHORT = 0.05
LONG = 10.0
BOUND = 3.0
GRACE = SHORT  # the cancel grace of the tests that check what is held

START: Message = {"type": "http.response.start", "status": 200, "headers": []}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """``/fast/...`` answers at once, ``/slow/...`` sleeps past any deadline,
    ``/stream/...`` starts and stalls, ``/finish/...`` starts, waits, then completes."""
    path = scope["path"]
    if path.startswith(("/slow/", "/short/", "/long/")):
        await anyio.sleep(LONG)
    if path.startswith("/stream/"):
        await send(START)
        await anyio.sleep(LONG)
    if path.startswith("/finish/"):
        await send({**START, "headers": []})
        await anyio.sleep(SHORT * 2)
        await send({"type": "http.response.body", "body": b"done"})
        return
    await send(START)
    await send({"type": "http.response.body", "body": path.encode()})


def middleware(**options: Any) -> tuple[Any, TimeoutMiddleware]:
    inner = TimeoutMiddleware(enforce(app), **options)
    return enforce(inner), inner


class Held:
    """Hands the middleware a fresh ``send`` per request and keeps only a weak reference
    to it: whatever the middleware still holds of a request keeps its ``send`` alive."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner
        self.sends: list[weakref.ref[Send]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def this_requests_send(message: Message) -> None:
            await send(message)

        self.sends.append(weakref.ref(this_requests_send))
        await self.inner(scope, receive, this_requests_send)

    async def assert_none_held(self, wait: float = GRACE * 2) -> None:
        """Once every request is over (and the cancel grace of those cancelled passed),
        nothing of it is held."""
        await anyio.sleep(wait)
        gc.collect()
        assert self.sends and [ref() for ref in self.sends] == [None] * len(self.sends)


def held_middleware(**options: Any) -> tuple[Any, TimeoutMiddleware, Held]:
    inner = TimeoutMiddleware(enforce(app), cancel_grace=GRACE, **options)
    held = Held(inner)
    return enforce(held), inner, held


async def test_concurrent_requests_each_get_their_own_outcome() -> None:
    served, inner, held = held_middleware(total=SHORT)
    outcomes: dict[str, tuple[int, float]] = {}
    began = anyio.current_time()

    async def one(path: str) -> None:
        response = await request(served, "GET", path)
        outcomes[path] = (response.status, anyio.current_time() - began)

    async with anyio.create_task_group() as tg:
        for number in range(20):
            tg.start_soon(one, f"/fast/{number}")
            tg.start_soon(one, f"/slow/{number}")
    assert {path: status for path, (status, _) in outcomes.items()} == {
        **{f"/fast/{number}": 200 for number in range(20)},
        **{f"/slow/{number}": 504 for number in range(20)},
    }
    assert max(elapsed for _, elapsed in outcomes.values()) < BOUND
    assert inner.abandoned == 0
    await held.assert_none_held()


async def test_shorter_limits_fire_first_whatever_the_arrival_order() -> None:
    served, _, held = held_middleware(
        total=LONG, routes={"/short": {"total": SHORT}, "/long": {"total": SHORT * 4}}
    )
    answered: list[str] = []

    async def one(path: str) -> None:
        response = await request(served, "GET", path)
        assert response.status == 504
        answered.append(path.split("/")[1])

    async with anyio.create_task_group() as tg:
        # The long ones arrive first: the short ones' deadline is earlier than the timer.
        for number in range(5):
            tg.start_soon(one, f"/long/{number}")
        await anyio.sleep(0.001)
        for number in range(5):
            tg.start_soon(one, f"/short/{number}")
    assert answered == ["short"] * 5 + ["long"] * 5
    await held.assert_none_held()


async def test_streams_past_first_byte_are_bounded_by_total_and_finished_ones_let_go() -> None:
    served, _, held = held_middleware(total=SHORT * 4, first_byte=SHORT)
    outcomes: dict[str, str] = {}

    async def one(path: str) -> None:
        try:
            response = await request(served, "GET", path)
        except ResponseTimeout as exc:
            outcomes[path] = f"aborted by {exc.limit}"
        else:
            outcomes[path] = f"{response.status} {response.body.decode()}"

    async with anyio.create_task_group() as tg:
        for number in range(3):
            tg.start_soon(one, f"/stream/{number}")
            tg.start_soon(one, f"/finish/{number}")
            tg.start_soon(one, f"/slow/{number}")
    assert outcomes == {
        **{f"/stream/{number}": "aborted by total" for number in range(3)},
        **{f"/finish/{number}": "200 done" for number in range(3)},
        **{f"/slow/{number}": "504 Gateway Timeout" for number in range(3)},
    }
    await held.assert_none_held()


async def test_requests_are_let_go_when_they_end_not_at_their_deadline() -> None:
    # The deadlines are still ahead when the requests end: /fast/ ones are queued for
    # total, /finish/ ones outlive first_byte and are re-armed for total.
    served, _, held = held_middleware(total=LONG, routes={"/finish": {"first_byte": SHORT}})
    async with anyio.create_task_group() as tg:
        for number in range(5):
            tg.start_soon(request, served, "GET", f"/fast/{number}")
            tg.start_soon(request, served, "GET", f"/finish/{number}")
    await held.assert_none_held(wait=0)


async def test_an_app_that_unwinds_within_the_grace_is_not_abandoned() -> None:
    served, inner = middleware(total=SHORT, cancel_grace=SHORT)
    response = await request(served, "GET", "/slow/")
    assert response.status == 504
    await anyio.sleep(SHORT * 2)  # the grace passes with the app long gone
    assert inner.abandoned == 0


def test_one_middleware_serves_event_loops_in_two_threads() -> None:
    served, _ = middleware(total=SHORT)
    results: dict[str, list[int]] = {}
    both_running = threading.Barrier(2, timeout=BOUND)

    def serve(name: str) -> None:
        async def main() -> None:
            statuses = []
            for _ in range(3):  # the loops take turns with the middleware
                both_running.wait()
                responses = await asyncio.gather(
                    request(served, "GET", f"/slow/{name}"),
                    request(served, "GET", f"/fast/{name}"),
                )
                statuses += [response.status for response in responses]
            results[name] = statuses

        asyncio.run(main())

    threads = [threading.Thread(target=serve, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
    assert results == {"a": [504, 200] * 3, "b": [504, 200] * 3}


REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")


async def test_each_answer_goes_out_in_its_own_requests_context() -> None:
    # An outer middleware (the access log, tracing) reads its context in send: a 504
    # sent by the middleware must come with the answered request's context, not with
    # that of whichever request armed the shared timer.
    inner = TimeoutMiddleware(app, total=SHORT * 4)
    seen: dict[str, str] = {}

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        REQUEST.set(scope["path"])

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen[scope["path"]] = REQUEST.get()
            await send(message)

        await inner(scope, receive, noting)

    async with anyio.create_task_group() as tg:
        tg.start_soon(request, outer, "GET", "/fast/a")  # arms the timer first
        await anyio.sleep(SHORT / 5)
        tg.start_soon(request, outer, "GET", "/slow/b")
        tg.start_soon(request, outer, "GET", "/slow/c")
    assert seen == {"/fast/a": "/fast/a", "/slow/b": "/slow/b", "/slow/c": "/slow/c"}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_nothing_is_sent_after_an_outside_cancellation(anyio_backend: str) -> None:
    # The deadline passed and the 504 is on its way (the client reads slowly); then the
    # server cancels the request: once the call is over, nothing more may be sent.
    sends: list[tuple[str, bool]] = []
    returned = False

    async def slow_send(message: Message) -> None:
        sends.append((message["type"], returned))
        await anyio.sleep(SHORT * 4)

    async def never(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(LONG)

    scope = http_scope("GET", "/slow/")
    middleware = TimeoutMiddleware(never, total=SHORT)
    with anyio.move_on_after(SHORT * 2):
        await middleware(scope, receive_nothing, slow_send)
    returned = True
    await anyio.sleep(SHORT * 10)
    assert sends == [("http.response.start", False)]


async def receive_nothing() -> Message:
    await anyio.sleep(LONG)
    return {"type": "http.disconnect"}


def test_event_loops_are_not_kept_alive_by_the_middleware() -> None:
    served, _ = middleware(total=LONG)
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        assert (await request(served, "GET", "/fast/x")).status == 200

    for _ in range(3):
        asyncio.run(main())
    gc.collect()
    assert [ref() for ref in loops] == [None, None, None]
