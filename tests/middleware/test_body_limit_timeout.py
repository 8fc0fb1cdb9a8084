"""A slow upload that the body limit and the timeout both see: the timeout answers when the
client is slow (408), the body limit when the body is big (413), in either order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from asgikit.contract import enforce
from asgikit.middleware.body_limit import BodyLimitMiddleware
from asgikit.middleware.timeout import TimeoutMiddleware
from asgikit.testing import request
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

IDLE = 0.2  # the timeout's request_body_idle
SLOW = 10.0  # a gap between chunks far past IDLE: no passing test sits through it
BRISK = 0.01  # a gap well within IDLE
LIMIT = 1000
BOUND = 5.0  # "promptly", on a loaded 2-core machine


async def upload(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body (returns on a disconnect), answers 200 with its length."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"%d" % size})


def timeout_outside(app: ASGIApp) -> ASGIApp:
    limited = enforce(BodyLimitMiddleware(enforce(app), max_body_size=LIMIT))
    return enforce(TimeoutMiddleware(limited, total=None, request_body_idle=IDLE))


def body_limit_outside(app: ASGIApp) -> ASGIApp:
    timed = enforce(TimeoutMiddleware(enforce(app), total=None, request_body_idle=IDLE))
    return enforce(BodyLimitMiddleware(timed, max_body_size=LIMIT))


STACKS = [timeout_outside, body_limit_outside]


def trickle(app: ASGIApp, gap: float, after: int = 1, read: list[int] | None = None) -> ASGIApp:
    """A client that sends its first ``after`` chunks at once, then one every ``gap`` s
    (*read*: the body bytes of each message taken from it)."""

    async def client_side(scope: Scope, receive: Receive, send: Send) -> None:
        calls = 0

        async def slow_receive() -> Message:
            nonlocal calls
            calls += 1
            if calls > after:
                await anyio.sleep(gap)
            message = await receive()
            if read is not None:
                read.append(len(message.get("body", b"")))
            return message

        await app(scope, slow_receive, send)

    return client_side


async def timed(app: ASGIApp, **kwargs: Any) -> tuple[int, bytes, float]:
    begin = anyio.current_time()
    response = await request(app, "PUT", "/files/a", **kwargs)
    return response.status, response.body, anyio.current_time() - begin


@pytest.mark.parametrize("stack", STACKS)
async def test_a_slow_small_upload_gets_the_timeouts_408(
    stack: Callable[[ASGIApp], ASGIApp],
) -> None:
    status, body, elapsed = await timed(trickle(stack(upload), SLOW), body=[b"x" * 10] * 3)
    assert (status, body) == (408, b"Request Timeout")
    assert IDLE <= elapsed < BOUND


@pytest.mark.parametrize("stack", STACKS)
async def test_a_brisk_big_upload_gets_the_body_limits_413(
    stack: Callable[[ASGIApp], ASGIApp],
) -> None:
    chunks = [b"x" * 100] * 50  # 5000 bytes, no Content-Length, a chunk every BRISK s
    read: list[int] = []
    status, body, _ = await timed(trickle(stack(upload), BRISK, read=read), body=chunks)
    assert (status, body) == (413, b"Content Too Large")
    assert sum(read) == LIMIT + 100  # stopped at the chunk that passed the limit, not 50


@pytest.mark.parametrize("stack", STACKS)
async def test_a_slow_upload_announced_too_big_never_waits(
    stack: Callable[[ASGIApp], ASGIApp],
) -> None:
    headers = {"content-length": str(LIMIT + 1)}
    status, body, elapsed = await timed(
        trickle(stack(upload), SLOW, after=0), headers=headers, body=[b"x"] * (LIMIT + 1)
    )
    assert (status, body) == (413, b"Content Too Large")
    assert elapsed < IDLE  # answered before a single body byte was awaited


@pytest.mark.parametrize("stack", STACKS)
async def test_a_brisk_upload_within_both_passes(stack: Callable[[ASGIApp], ASGIApp]) -> None:
    status, body, _ = await timed(trickle(stack(upload), BRISK), body=[b"x" * 100] * 10)
    assert (status, body) == (200, b"1000")
