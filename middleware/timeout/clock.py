"""One request's deadlines and response state (TimeoutMiddleware; see its docstring).

``RequestClock`` is shared by the app's ``send`` and ``receive`` (in the caller's task)
and by whatever keeps the deadline: the watchdog task on trio, the loop's watch
(``watch.py``) on asyncio. ``Abandonments`` counts and logs the apps that did not unwind
within the cancel grace.
"""

from __future__ import annotations

import contextvars
import enum
from collections import OrderedDict
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import structlog

from asgikit.types import Message, Receive, Scope, Send

from .routes import Limit, Limits
from .watch import LoopWatch, Watched, later, spawn

if TYPE_CHECKING:
    import asyncio

__all__ = ["Abandonments", "RequestClock", "ResponseState"]

_log = structlog.get_logger("asgikit.timeout")


class ResponseState(enum.Enum):
    WAITING = "no response start has gone out"
    STREAMING = "the app's response is going out"
    COMPLETE = "the app's response is complete"
    ANSWERED = "the middleware answered; the app's messages are dropped"
    ABORTED = "a limit passed mid-response; the app's messages are dropped"


def _ends_response(message: Message, trailers: bool) -> bool:
    kind = message["type"]
    if kind in ("http.response.body", "http.response.zerocopysend"):
        return not trailers and not message.get("more_body", False)
    if kind == "http.response.pathsend":
        return not trailers
    if kind == "http.response.trailers":
        return not message.get("more_trailers", False)
    return False


def _answer_messages(status: int, http_version: str) -> tuple[Message, Message]:
    """The middleware's own response: the status's phrase as plain text."""
    try:
        body = HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        body = b"Timeout"
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    if status == 408 and http_version in ("1.0", "1.1"):
        # A client that stalls an upload does not get to reuse the connection. Not on
        # HTTP/2 and 3, where connection-specific fields are malformed.
        headers.append((b"connection", b"close"))
    start = {"type": "http.response.start", "status": status, "headers": headers}
    return start, {"type": "http.response.body", "body": body}


class Abandonments:
    """The apps that did not unwind within ``cancel_grace`` after a deadline: counted,
    logged when abandoned and again when they return."""

    __slots__ = ("cancel_grace", "count", "running")

    def __init__(self, cancel_grace: float) -> None:
        self.cancel_grace = cancel_grace
        self.count = 0
        self.running = 0

    def abandon(self, clock: RequestClock, limit: Limit) -> None:
        clock.abandoned = True
        clock.info["abandoned"] = True
        self.count += 1
        self.running += 1
        _log.warning(
            "abandoned after deadline",
            limit=limit.value,
            method=clock.scope.get("method"),
            path=clock.scope.get("path"),
            cancel_grace=self.cancel_grace,
            abandoned_running=self.running,
        )

    def returned(self, clock: RequestClock) -> None:
        self.running -= 1
        _log.info(
            "abandoned request returned",
            method=clock.scope.get("method"),
            path=clock.scope.get("path"),
            duration=round(anyio.current_time() - clock.start_time, 6),
            abandoned_running=self.running,
        )


class RequestClock:
    """One request: its deadlines and response state, shared by the app's ``send`` and
    ``receive`` (in the caller's task) and the watchdog (in its own task) or the loop's
    watch."""

    __slots__ = (
        "abandoned",
        "abandonments",
        "answering",
        "app_done",
        "app_error",
        "body_done",
        "cancel_scope",
        "context",
        "downstream",
        "error",
        "fired",
        "first_byte_at",
        "idle_from",
        "info",
        "late",
        "limits",
        "pending",
        "queue",
        "scope",
        "settled",
        "start_time",
        "started",
        "state",
        "total_at",
        "trailers",
        "upstream",
        "watching",
    )

    def __init__(
        self,
        limits: Limits,
        now: float,
        scope: Scope,
        receive: Receive,
        send: Send,
        info: dict[str, Any],
        abandonments: Abandonments,
    ) -> None:
        self.limits = limits
        self.scope = scope
        self.upstream = receive
        self.downstream = send
        self.info = info
        self.abandonments = abandonments
        self.state = ResponseState.WAITING
        self.trailers = False
        self.app_done = False
        self.abandoned = False
        self.body_done = False
        self.start_time = self.idle_from = now
        self.error: Exception | None = None
        """A failing send of the deadline's answer, re-raised in the caller's task."""
        self.app_error: Exception | None = None
        """What the app raised, re-raised once the answer is out."""
        self.fired: Limit | None = None
        self.cancel_scope: anyio.CancelScope | None = None
        self.total_at = None if limits.total is None else now + limits.total
        self.first_byte_at = None if limits.first_byte is None else now + limits.first_byte
        # Made by the watchdog when it starts waiting on them, so a fast app that is done
        # before the watchdog first runs costs no events and no extra trip round the loop,
        # and the asyncio watch, which never waits on them, none at all. bench_timeout,
        # both scenarios, p10: -4.25 µs of 8.81 (bare), -4.34 of 16.68 (Starlette); noise
        # 0.03 (p10s of identical code in the run), 2026-12-07.
        self.started: anyio.Event | None = None
        self.settled: anyio.Event | None = None
        # On asyncio, the loop's watch (see watch.py) instead of a watchdog task.
        self.watching = False
        self.queue: OrderedDict[Watched, float] | None = None
        self.pending: Limit | None = None  # the limit the watch waits for
        self.answering: asyncio.Task[None] | None = None
        self.late: list[Watched | None] | None = None  # its entry on the watch's heap
        self.context: contextvars.Context | None = None  # the request's, for the answer

    @property
    def deadline(self) -> float | None:
        """The response start's deadline: first byte's if set, else the total's."""
        return self.first_byte_at if self.first_byte_at is not None else self.total_at

    # ---- the app's side (the caller's task) ----------------------------------------

    async def send(self, message: Message) -> None:
        # A coroutine function, not a plain function returning the downstream awaitable:
        # the state changes when the message is sent, not when send() is called (an app
        # may call it and await later), and asgiref's AsyncToSync wants one.
        state = self.state
        if state is ResponseState.WAITING:
            if message["type"] == "http.response.start":
                # Decided before the await: a deadline passing while the start is on its
                # way to the server finds the response started, and aborts.
                self.state = ResponseState.STREAMING
                self.trailers = bool(message.get("trailers", False))
                if self.started is not None:
                    self.started.set()
        elif state is ResponseState.STREAMING:
            if _ends_response(message, self.trailers):
                self.state = ResponseState.COMPLETE
                if self.watching:
                    self.unwatch()
                if self.settled is not None:
                    self.settled.set()
        elif state is not ResponseState.COMPLETE:
            # Answered or aborted: nothing of the app's reaches the server. The
            # checkpoint re-delivers the cancellation to an app that swallowed it.
            await anyio.lowlevel.checkpoint()
            return
        await self.downstream(message)

    async def receive(self) -> Message:
        """``receive`` with the ``request_body_idle`` limit, until the body is complete."""
        if self.body_done:
            return await self.upstream()
        idle = self.limits.request_body_idle
        assert idle is not None
        message: Message | None = None
        with anyio.move_on_at(self.idle_from + idle):
            message = await self.upstream()
        if message is None:
            return await self._body_idle()
        if message["type"] == "http.request":
            if message.get("body"):
                self.idle_from = anyio.current_time()
            if not message.get("more_body", False):
                self.body_done = True
        else:  # http.disconnect: nothing more will arrive
            self.body_done = True
        return message

    async def _body_idle(self) -> Message:
        state = self.state
        if state is ResponseState.COMPLETE:
            # The response is out; reading what is left of the body is the app's business.
            self.body_done = True
            return await self.upstream()
        if state is ResponseState.WAITING:
            await self.answer(Limit.REQUEST_BODY_IDLE, 408)
        elif state is ResponseState.STREAMING:
            self.abort(Limit.REQUEST_BODY_IDLE)
        assert self.cancel_scope is not None
        self.cancel_scope.cancel()
        await anyio.lowlevel.checkpoint()  # the cancellation, raised inside the app's receive
        # Reached only by an app that shields its receive from cancellation.
        return {"type": "http.disconnect"}

    def finish(self) -> None:
        """The app's call returned (or raised): wake the watchdog."""
        self.app_done = True
        if self.watching:
            self.unwatch()
        if self.started is not None:
            self.started.set()
        if self.settled is not None:
            self.settled.set()

    # ---- what a deadline does (state checked by the caller, no await in between) ----

    async def answer(self, limit: Limit, status: int) -> None:
        self.answered(limit, status)
        await self.send_answer(status)

    def answered(self, limit: Limit, status: int) -> None:
        if self.watching:
            self.unwatch()
        self.state = ResponseState.ANSWERED
        self.fired = limit
        self.info.update({"error.type": "timeout", "limit": limit.value, "status": status})

    async def send_answer(self, status: int) -> None:
        start, body = _answer_messages(status, self.scope.get("http_version", "1.1"))
        try:
            await self.downstream(start)
            await self.downstream(body)
        except OSError:
            pass  # the client is gone (contract H7): there is no one left to tell

    def abort(self, limit: Limit) -> None:
        if self.watching:
            self.unwatch()
        self.state = ResponseState.ABORTED
        self.fired = limit
        self.info.update({"error.type": "timeout", "limit": limit.value, "status": None})

    # ---- the trio watchdog (a task beside the app) -----------------------------------

    async def expire(self) -> Limit | None:
        """Wait for the deadline that applies, act on it, and name it (None: none fired)."""
        if self.first_byte_at is not None and self._waiting():
            self.started = started = anyio.Event()
            with anyio.move_on_at(self.first_byte_at):
                await started.wait()
            if self._waiting():
                await self.answer(Limit.FIRST_BYTE, self.limits.status_code)
                return Limit.FIRST_BYTE
        if self.total_at is None:
            return None
        if not self.app_done and self.state in (ResponseState.WAITING, ResponseState.STREAMING):
            self.settled = settled = anyio.Event()
            with anyio.move_on_at(self.total_at):
                await settled.wait()
        if self.app_done:
            return None
        if self.state is ResponseState.WAITING:
            await self.answer(Limit.TOTAL, self.limits.status_code)
            return Limit.TOTAL
        if self.state is ResponseState.STREAMING:
            self.abort(Limit.TOTAL)
            return Limit.TOTAL
        # COMPLETE: work after the final body is not bounded by the deadline. (ANSWERED
        # or ABORTED: the idle limit acted first and cancelled this task.)
        return None

    def _waiting(self) -> bool:
        """No response start has gone out and the app is still running."""
        return self.state is ResponseState.WAITING and not self.app_done

    async def unwind(self, grace: float) -> bool:
        """Cancel the app; give it ``grace`` seconds to return. Did it?"""
        assert self.cancel_scope is not None
        self.cancel_scope.cancel()
        if not self.app_done:
            if self.settled is None:
                self.settled = anyio.Event()
            # This task is inside the scope just cancelled: shield the bounded wait.
            with anyio.CancelScope(shield=True), anyio.move_on_after(grace):
                await self.settled.wait()
        return self.app_done

    # ---- the asyncio watch (watch.py): a loop callback, no await ----------------

    def watch(self, watch: LoopWatch) -> None:
        """Have the loop's watch act on the first deadline that applies."""
        self.watching = True
        self.context = contextvars.copy_context()
        limits = self.limits
        if limits.first_byte is not None and self.first_byte_at is not None:
            self.pending = Limit.FIRST_BYTE
            watch.add(self, limits.first_byte, self.first_byte_at)
        else:  # a watched limits has first_byte or total
            assert limits.total is not None
            assert self.total_at is not None
            self.pending = Limit.TOTAL
            watch.add(self, limits.total, self.total_at)

    def unwatch(self) -> None:
        self.watching = False
        queue = self.queue
        if queue is not None:
            self.queue = None
            queue.pop(self, None)
        late = self.late
        if late is not None:  # its heap entry stays until its deadline, but holds nothing
            self.late = None
            late[0] = None

    def expired(self, watch: LoopWatch, now: float) -> None:
        """The pending deadline passed (called by the watch, between task steps)."""
        self.watching = False
        assert self.pending is not None
        if self.state is ResponseState.WAITING:
            status = self.limits.status_code
            self.answered(self.pending, status)
            assert self.context is not None
            self.answering = spawn(watch, self._deliver(watch, self.pending, status), self.context)
        elif self.pending is Limit.FIRST_BYTE:
            # Started in time: the stream runs free, bounded by total alone.
            if self.total_at is not None:
                self.pending = Limit.TOTAL
                self.watching = True
                self.late = watch.add_late(self, self.total_at)
        else:
            self.abort(Limit.TOTAL)
            self._cancel(watch, Limit.TOTAL)

    async def _deliver(self, watch: LoopWatch, limit: Limit, status: int) -> None:
        """Answer at the deadline, from a task of its own, then cancel the app."""
        try:
            await self.send_answer(status)
        except Exception as exc:  # a failing send: re-raised by the caller's task
            self.error = exc
        self._cancel(watch, limit)

    def _cancel(self, watch: LoopWatch, limit: Limit) -> None:
        assert self.cancel_scope is not None
        self.cancel_scope.cancel()
        if not self.app_done:
            assert self.context is not None
            grace = self.abandonments.cancel_grace
            later(watch, grace, lambda: self._grace_over(limit), self.context)

    def _grace_over(self, limit: Limit) -> None:
        if not self.app_done:
            self.abandonments.abandon(self, limit)
