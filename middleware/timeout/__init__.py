"""TimeoutMiddleware: response deadlines that hold on asyncio and trio, even for sync handlers.

Theory of operation
===================

The app runs in the caller's task, inside an anyio cancel scope, so contextvars flow
both ways and the ASGI call stays one task (contract rule E3). Something else keeps the
deadline and acts on it, whatever the app is doing: an app stuck in a worker thread (a
Starlette ``def`` endpoint) or one that swallows cancellation never gets back to its own
task in time, so only another task can answer at the deadline. On asyncio that is the
event loop's shared watch (``watch``: one timer for every request, a task only
when a deadline passes); on trio, a *watchdog* task beside the app in a task group.

Every message the app sends goes through ``_Exchange.send``, which keeps the response
state (``_State``). The state decides, without any await between deciding and acting,
what a deadline means:

* ``WAITING`` (no ``http.response.start`` has gone out): the middleware answers itself
  (504 or the configured status; 408 for an idle upload), then cancels the app;
* ``STREAMING`` (the app's start has gone out): too late to answer, so the exchange is
  aborted: the app is cancelled and ``ResponseTimeout`` propagates, so the server resets
  the connection instead of passing a truncated body off as whole;
* ``COMPLETE`` (the final body has gone out): the deadline no longer applies, so work
  after the body (Starlette background tasks) runs on.

Once the middleware answered or aborted, nothing more the app sends reaches the server.
After cancelling, the middleware gives the app ``cancel_grace`` seconds to unwind; an app
still running then (a thread cannot be cancelled) is counted and logged as abandoned. The
call itself returns only when the app's code returns: a thread cannot be killed, and
structured concurrency never leaves a task behind.
"""

from __future__ import annotations

import contextvars
import enum
import functools
import math
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import structlog

from asgikit.paths import PathTable
from asgikit.scopes import DEADLINE_KEY, TIMEOUT_KEY, derive_scope
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

from .routes import Policy, build_routes, make_policy
from .watch import Watches, later, spawn

if TYPE_CHECKING:
    import asyncio
    from collections import OrderedDict

    from .watch import _Watch

__all__ = ["DEADLINE_SCOPE_KEY", "INFO_SCOPE_KEY", "ResponseTimeout", "TimeoutMiddleware"]

DEADLINE_SCOPE_KEY = DEADLINE_KEY
"""Scope key of the response start's deadline (``asgikit.scopes.DEADLINE_KEY``)."""

INFO_SCOPE_KEY = TIMEOUT_KEY
"""Scope key of the dict saying which limit fired (``asgikit.scopes.TIMEOUT_KEY``)."""

_log = structlog.get_logger("asgikit.timeout")


class ResponseTimeout(TimeoutError):
    """A limit passed after the response had started: the exchange was aborted.

    Raised out of the middleware so the server resets the connection (a response that
    was cut short must not look complete).

    Attributes:
        limit: ``"total"`` or ``"request_body_idle"``.
        seconds: The limit that passed, in seconds.
    """

    def __init__(self, limit: str, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        super().__init__(
            f"the {limit} limit ({seconds:g} s) passed after the response started; "
            "the response was aborted"
        )


class _State(enum.Enum):
    WAITING = "no response start has gone out"
    STREAMING = "the app's response is going out"
    COMPLETE = "the app's response is complete"
    ANSWERED = "the middleware answered; the app's messages are dropped"
    ABORTED = "a limit passed mid-response; the app's messages are dropped"


@functools.cache
def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Timeout"


def _ends_response(message: Message, trailers: bool) -> bool:
    kind = message["type"]
    if kind == "http.response.body" or kind == "http.response.zerocopysend":
        return not trailers and not message.get("more_body", False)
    if kind == "http.response.pathsend":
        return not trailers
    if kind == "http.response.trailers":
        return not message.get("more_trailers", False)
    return False


class _Exchange:
    """One request: its deadlines and response state, shared by the app's ``send`` and
    ``receive`` (in the caller's task) and the watchdog (in its own task)."""

    __slots__ = (
        "abandoned",
        "answering",
        "app_done",
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
        "owner",
        "pending",
        "policy",
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
        policy: Policy,
        now: float,
        scope: Scope,
        receive: Receive,
        send: Send,
        info: dict[str, Any],
    ) -> None:
        self.policy = policy
        self.scope = scope
        self.upstream = receive
        self.downstream = send
        self.info = info
        self.state = _State.WAITING
        self.trailers = False
        self.app_done = False
        self.abandoned = False
        self.body_done = False
        self.start_time = self.idle_from = now
        self.error: Exception | None = None
        self.fired = ""  # the limit that fired, if one did
        self.cancel_scope: anyio.CancelScope | None = None
        self.total_at = None if policy.total is None else now + policy.total
        self.first_byte_at = None if policy.first_byte is None else now + policy.first_byte
        # Made by the watchdog when it starts waiting on them, so a fast app that is done
        # before the watchdog first runs costs no events and no extra trip round the loop.
        self.started: anyio.Event | None = None
        self.settled: anyio.Event | None = None
        # On asyncio, the loop's watch (see watch.py) instead of a watchdog task.
        self.watching = False
        self.queue: OrderedDict[_Exchange, float] | None = None
        self.pending = ""  # the limit the watch waits for
        self.answering: asyncio.Task[None] | None = None
        self.late: list[_Exchange | None] | None = None  # its entry on the watch's heap
        self.context: contextvars.Context | None = None  # the request's, for the answer
        self.owner: TimeoutMiddleware | None = None

    # ---- the app's side (the caller's task) ----------------------------------------

    async def send(self, message: Message) -> None:
        # A coroutine function, not a plain function returning the downstream awaitable:
        # the state changes when the message is sent, not when send() is called (an app
        # may call it and await later), and asgiref's AsyncToSync wants one.
        state = self.state
        if state is _State.WAITING:
            if message["type"] == "http.response.start":
                # Decided before the await: a deadline passing while the start is on its
                # way to the server finds the response started, and aborts.
                self.state = _State.STREAMING
                self.trailers = bool(message.get("trailers", False))
                if self.started is not None:
                    self.started.set()
        elif state is _State.STREAMING:
            if _ends_response(message, self.trailers):
                self.state = _State.COMPLETE
                if self.watching:
                    self.unwatch()
                if self.settled is not None:
                    self.settled.set()
        elif state is not _State.COMPLETE:
            # Answered or aborted: nothing of the app's reaches the server. The
            # checkpoint re-delivers the cancellation to an app that swallowed it.
            await anyio.lowlevel.checkpoint()
            return
        await self.downstream(message)

    async def receive(self) -> Message:
        """``receive`` with the ``request_body_idle`` limit, until the body is complete."""
        if self.body_done:
            return await self.upstream()
        idle = self.policy.request_body_idle
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
        if state is _State.COMPLETE:
            # The response is out; reading what is left of the body is the app's business.
            self.body_done = True
            return await self.upstream()
        if state is _State.WAITING:
            await self.answer("request_body_idle", 408)
        elif state is _State.STREAMING:
            self.abort("request_body_idle")
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

    async def answer(self, limit: str, status: int) -> None:
        self.answered(limit, status)
        await self.send_answer(status)

    def answered(self, limit: str, status: int) -> None:
        if self.watching:
            self.unwatch()
        self.state = _State.ANSWERED
        self.fired = limit
        self.info.update({"error.type": "timeout", "limit": limit, "status": status})

    async def send_answer(self, status: int) -> None:
        body = _phrase(status)
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode("ascii")),
        ]
        if status == 408 and self.scope.get("http_version", "1.1") in ("1.0", "1.1"):
            # A client that stalls an upload does not get to reuse the connection. Not on
            # HTTP/2 and 3, where connection-specific fields are malformed.
            headers.append((b"connection", b"close"))
        try:
            await self.downstream(
                {"type": "http.response.start", "status": status, "headers": headers}
            )
            await self.downstream({"type": "http.response.body", "body": body})
        except OSError:
            pass  # the client is gone (contract H7): there is no one left to tell

    def abort(self, limit: str) -> None:
        if self.watching:
            self.unwatch()
        self.state = _State.ABORTED
        self.fired = limit
        self.info.update({"error.type": "timeout", "limit": limit, "status": None})

    async def expire(self) -> str | None:
        """Wait for the deadline that applies, act on it, and name it (None: none fired)."""
        if self.first_byte_at is not None and self.state is _State.WAITING and not self.app_done:
            self.started = started = anyio.Event()
            with anyio.move_on_at(self.first_byte_at):
                await started.wait()
            if self.state is _State.WAITING and not self.app_done:
                await self.answer("first_byte", self.policy.status_code)
                return "first_byte"
        if self.total_at is None:
            return None
        if not self.app_done and (self.state is _State.WAITING or self.state is _State.STREAMING):
            self.settled = settled = anyio.Event()
            with anyio.move_on_at(self.total_at):
                await settled.wait()
        if self.app_done:
            return None
        if self.state is _State.WAITING:
            await self.answer("total", self.policy.status_code)
            return "total"
        if self.state is _State.STREAMING:
            self.abort("total")
            return "total"
        # COMPLETE: work after the final body is not bounded by the deadline. (ANSWERED
        # or ABORTED: the idle limit acted first and cancelled this task.)
        return None

    # ---- the asyncio watch (watch.py): a loop callback, no await ----------------

    def watch(self, watch: _Watch, owner: TimeoutMiddleware) -> None:
        """Have the loop's watch act on the first deadline that applies."""
        self.owner = owner
        self.watching = True
        self.context = contextvars.copy_context()
        policy = self.policy
        if policy.first_byte is not None and self.first_byte_at is not None:
            self.pending = "first_byte"
            watch.add(self, policy.first_byte, self.first_byte_at)
        else:  # a watched policy has first_byte or total
            assert policy.total is not None
            assert self.total_at is not None
            self.pending = "total"
            watch.add(self, policy.total, self.total_at)

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

    def expired(self, watch: _Watch, now: float) -> None:
        """The pending deadline passed (called by the watch, between task steps)."""
        self.watching = False
        state = self.state
        if state is _State.WAITING:
            status = self.policy.status_code
            self.answered(self.pending, status)
            assert self.context is not None
            self.answering = spawn(watch, self._deliver(watch, self.pending, status), self.context)
        elif self.pending == "first_byte":
            # Started in time: the stream runs free, bounded by total alone.
            if self.total_at is not None:
                self.pending = "total"
                self.watching = True
                self.late = watch.add_late(self, self.total_at)
        else:
            self.abort("total")
            self._cancel(watch, "total")

    async def _deliver(self, watch: _Watch, limit: str, status: int) -> None:
        """Answer at the deadline, from a task of its own, then cancel the app."""
        try:
            await self.send_answer(status)
        except Exception as exc:  # a failing send: re-raised by the caller's task
            self.error = exc
        self._cancel(watch, limit)

    def _cancel(self, watch: _Watch, limit: str) -> None:
        assert self.cancel_scope is not None
        assert self.owner is not None
        self.cancel_scope.cancel()
        if not self.app_done:
            assert self.context is not None
            later(watch, self.owner.cancel_grace, lambda: self._grace_over(limit), self.context)

    def _grace_over(self, limit: str) -> None:
        if not self.app_done:
            assert self.owner is not None
            self.owner._abandon(self, limit)

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


class TimeoutMiddleware:
    """Bound how long an http request may take to be answered.

    Args:
        app: The ASGI app to wrap.
        total: Seconds for the whole response, or None. Before the response starts, the
            client gets ``status_code`` at the deadline; after, the exchange is aborted.
        first_byte: Seconds until ``http.response.start``, or None; once the response
            started it runs free (streaming). Must be shorter than ``total``.
        request_body_idle: Seconds the app may wait for the next request-body bytes, or
            None; past it the client gets 408 (with ``connection: close`` on HTTP/1).
        status_code: The status of the middleware's answer: 504 (default) or 503.
        exclude_paths: Path prefixes (whole segments) the middleware leaves alone.
        routes: Per path prefix (whole segments, longest wins), overrides of ``total``,
            ``first_byte``, ``request_body_idle`` and ``status_code``.
        cancel_grace: Seconds the app gets to unwind after it was cancelled before it is
            counted and logged as abandoned (``abandoned``).

    Attributes:
        abandoned: How many requests' apps did not unwind within ``cancel_grace`` after a
            deadline (a sync handler in a thread cannot be cancelled).
        abandoned_running: How many of those are still running.
    """

    __slots__ = (
        "_default",
        "_routes",
        "_watches",
        "abandoned",
        "abandoned_running",
        "app",
        "cancel_grace",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        total: float | None = 30.0,
        first_byte: float | None = None,
        request_body_idle: float | None = None,
        status_code: int = 504,
        exclude_paths: Iterable[str] = (),
        routes: Mapping[str, Mapping[str, Any]] | None = None,
        cancel_grace: float = 1.0,
    ) -> None:
        defaults = {
            "total": total,
            "first_byte": first_byte,
            "request_body_idle": request_body_idle,
            "status_code": status_code,
        }
        self._default = make_policy(defaults)
        entries = build_routes(defaults, {} if routes is None else routes, exclude_paths)
        self._routes = PathTable(entries, self._default) if entries else None
        if (
            isinstance(cancel_grace, bool)
            or not isinstance(cancel_grace, int | float)
            or not math.isfinite(cancel_grace)
            or cancel_grace < 0
        ):
            raise ValueError(
                f"cancel_grace must be a finite number of seconds >= 0: {cancel_grace!r}"
            )
        self.app = app
        self.cancel_grace = float(cancel_grace)
        self.abandoned = 0
        self.abandoned_running = 0
        self._watches = Watches()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self._default if self._routes is None else self._routes.match(scope["path"])
        if policy is None:
            await self.app(scope, receive, send)
            return

        holder = scope.get(INFO_SCOPE_KEY)
        info: dict[str, Any] = holder if isinstance(holder, dict) else {}
        watch = self._watches.current() if policy.watched else None
        # anyio.current_time() is the loop's clock, read at four times the cost.
        now = anyio.current_time() if watch is None else watch.loop.time()
        ex = _Exchange(policy, now, scope, receive, send, info)
        scope = derive_scope(scope, {INFO_SCOPE_KEY: info})
        deadline = ex.first_byte_at if ex.first_byte_at is not None else ex.total_at
        if deadline is not None:
            earlier = scope.get(DEADLINE_SCOPE_KEY)
            # Deadlines only shrink: an outer one that is earlier still holds.
            if isinstance(earlier, float) and earlier < deadline:
                deadline = earlier
            scope[DEADLINE_SCOPE_KEY] = deadline
        app_receive = receive if policy.request_body_idle is None else ex.receive
        error: Exception | None = None
        try:
            if watch is not None:  # asyncio: the loop's watch, no task per request
                try:
                    with anyio.CancelScope() as ex.cancel_scope:
                        ex.watch(watch, self)
                        try:
                            await self.app(scope, app_receive, ex.send)
                        except Exception as exc:  # re-raised below, once the answer is out
                            error = exc
                        finally:
                            ex.finish()
                    if ex.answering is not None:
                        await ex.answering
                finally:
                    if ex.answering is not None:
                        # Cancelled from outside: the answer must not go on sending
                        # after this call returned.
                        ex.answering.cancel()
            elif policy.watched:
                async with anyio.create_task_group() as tg:
                    ex.cancel_scope = tg.cancel_scope
                    tg.start_soon(self._watch, ex)
                    try:
                        await self.app(scope, app_receive, ex.send)
                    except Exception as exc:  # re-raised below, not wrapped in a group
                        error = exc
                    finally:
                        ex.finish()
            else:
                with anyio.CancelScope() as ex.cancel_scope:
                    try:
                        await self.app(scope, app_receive, ex.send)
                    finally:
                        ex.finish()
        finally:
            if ex.abandoned:
                self._returned_late(ex)
        error = error or ex.error
        if error is not None:
            try:
                raise error
            finally:
                del error
        if ex.state is _State.ABORTED:
            raise ResponseTimeout(ex.fired, getattr(policy, ex.fired))

    async def _watch(self, ex: _Exchange) -> None:
        try:
            limit = await ex.expire()
            if limit is not None and not await ex.unwind(self.cancel_grace):
                self._abandon(ex, limit)
        except Exception as exc:  # a failing send: re-raised by the caller's task
            ex.error = exc
            assert ex.cancel_scope is not None
            ex.cancel_scope.cancel()

    def _abandon(self, ex: _Exchange, limit: str) -> None:
        ex.abandoned = True
        ex.info["abandoned"] = True
        self.abandoned += 1
        self.abandoned_running += 1
        _log.warning(
            "abandoned after deadline",
            limit=limit,
            method=ex.scope.get("method"),
            path=ex.scope.get("path"),
            cancel_grace=self.cancel_grace,
            abandoned_running=self.abandoned_running,
        )

    def _returned_late(self, ex: _Exchange) -> None:
        self.abandoned_running -= 1
        _log.info(
            "abandoned request returned",
            method=ex.scope.get("method"),
            path=ex.scope.get("path"),
            duration=round(anyio.current_time() - ex.start_time, 6),
            abandoned_running=self.abandoned_running,
        )
