"""One request's deadlines and response state (TimeoutMiddleware; see its docstring).

``RequestClock`` is shared by the app's ``send`` and ``receive`` (in the caller's task)
and by whatever keeps the deadline: the watchdog task on trio, the loop's watch
(``watch.py``) on asyncio.
"""

from __future__ import annotations

import contextvars
import enum
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from asgikit.answers import decide
from asgikit.types import Message, Receive, Scope, Send

from .answers import Abandonments, answer_messages
from .routes import Limit, Limits
from .watch import LoopWatch, Watched, later, spawn

if TYPE_CHECKING:
    import asyncio

__all__ = ["RequestClock", "ResponseState"]


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
        "chunk_at",
        "context",
        "downstream",
        "error",
        "fired",
        "first_byte_at",
        "idle_from",
        "info",
        "late",
        "limits",
        "loop_watch",
        "pending",
        "queue",
        "scope",
        "settled",
        "start_time",
        "started",
        "state",
        "streaming",
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
        self.loop_watch: LoopWatch | None = None  # the watch, to re-arm when a stream begins
        # A streamed body: whether it began, and when the app last sent a chunk or the
        # server last took one (a client slow to take chunks does not make the app idle).
        self.streaming = False
        self.chunk_at = now

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
            elif message["type"] == "http.response.body" and message.get("more_body", False):
                await self._send_chunk(message)
                return
        elif state is not ResponseState.COMPLETE:
            # Answered or aborted: nothing of the app's reaches the server. The
            # checkpoint re-delivers the cancellation to an app that swallowed it.
            await anyio.lowlevel.checkpoint()
            return
        await self.downstream(message)

    async def _send_chunk(self, message: Message) -> None:
        """A chunk of a streamed body: the stream limits replace ``total`` at the first."""
        if not self.streaming:
            self._stream_begins()
        self.chunk_at = anyio.current_time()  # a chunk came; while it goes, it is the mark
        try:
            await self.downstream(message)
        finally:
            self.chunk_at = anyio.current_time()

    def _stream_begins(self) -> None:
        self.streaming = True
        self.chunk_at = anyio.current_time()
        if self.loop_watch is not None:  # asyncio: from total's deadline to the stream's
            if self.watching:
                self.unwatch()
            self._arm_stream(self.loop_watch, self.chunk_at)
        elif self.settled is not None:  # trio: the watchdog waits on total: wake it
            self.settled.set()

    def stream_deadline(self, now: float) -> tuple[float, Limit] | None:
        """The stream's next deadline and its limit, or None when it has none.

        Idle time runs from the last chunk the app sent, or, while a chunk is on its
        way, from when that send began: a client slow to take chunks is not idle time,
        but one that takes none for a whole ``stream_idle`` ends the stream.
        """
        limits = self.limits
        found: tuple[float, Limit] | None = None
        if limits.stream_total is not None:
            found = (self.start_time + limits.stream_total, Limit.STREAM_TOTAL)
        if limits.stream_idle is not None:
            idle_at = self.chunk_at + limits.stream_idle
            if found is None or idle_at < found[0]:
                found = (idle_at, Limit.STREAM_IDLE)
        return found

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
        decide(self.scope, "timed_out", **{"timeout.limit": limit.value})

    async def send_answer(self, status: int) -> None:
        start, body = answer_messages(status, self.scope.get("http_version", "1.1"))
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
        while not self.app_done and self.state in (ResponseState.WAITING, ResponseState.STREAMING):
            if self.streaming:
                deadline = self.stream_deadline(anyio.current_time())
            else:
                deadline = None if self.total_at is None else (self.total_at, Limit.TOTAL)
            # Set when the response completes, the app returns, or a stream begins.
            self.settled = settled = anyio.Event()
            if deadline is None:
                await settled.wait()
                continue
            with anyio.move_on_at(deadline[0]):
                await settled.wait()
            if settled.is_set() or self.app_done:
                continue
            limit = deadline[1]
            if limit is Limit.STREAM_IDLE and self._stream_alive(anyio.current_time()):
                continue  # a chunk came since: its own deadline is later
            if self.state is ResponseState.WAITING:
                await self.answer(limit, self.limits.status_code)
                return limit
            if self.state is ResponseState.STREAMING:
                self.abort(limit)
                return limit
        # COMPLETE: work after the final body is not bounded by the deadline. (ANSWERED
        # or ABORTED: the idle limit acted first and cancelled this task.)
        return None

    def _stream_alive(self, now: float) -> bool:
        """Whether the stream sent a chunk (or began sending one) within ``stream_idle``."""
        idle = self.limits.stream_idle
        assert idle is not None
        return now < self.chunk_at + idle

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
        self.context = contextvars.copy_context()
        self.loop_watch = watch
        limits = self.limits
        if limits.first_byte is not None and self.first_byte_at is not None:
            self.watching = True
            self.pending = Limit.FIRST_BYTE
            watch.add(self, limits.first_byte, self.first_byte_at)
        elif limits.total is not None and self.total_at is not None:
            self.watching = True
            self.pending = Limit.TOTAL
            watch.add(self, limits.total, self.total_at)
        # else: only stream limits, armed when a stream begins

    def _arm_stream(self, watch: LoopWatch, now: float) -> None:
        deadline = self.stream_deadline(now)
        if deadline is not None:
            self.watching = True
            self.pending = deadline[1]
            self.late = watch.add_late(self, deadline[0])

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
        elif self.streaming:
            pending = self.pending
            if pending is Limit.FIRST_BYTE or (
                pending is Limit.STREAM_IDLE and self._stream_alive(now)
            ):
                self._arm_stream(watch, now)  # not idle: re-armed for the stream's deadline
            else:
                self.abort(pending)
                self._cancel(watch, pending)
        elif self.pending is Limit.FIRST_BYTE:
            # Started in time: the response runs on, bounded by total (until it streams).
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
