"""TimeoutMiddleware: response deadlines that hold on asyncio and trio, even for sync handlers.

Theory of operation
===================

The app runs in the caller's task, inside an anyio cancel scope, so contextvars flow
both ways and the ASGI call stays one task (contract rule E3). Something else keeps the
deadline and acts on it, whatever the app is doing: an app stuck in a worker thread (a
Starlette ``def`` endpoint) or one that swallows cancellation never gets back to its own
task in time, so only another task can answer at the deadline. On asyncio that is the
event loop's shared watch (``watch.py``: one timer for every request, a task only
when a deadline passes); on trio, a *watchdog* task beside the app in a task group.

Every message the app sends goes through ``RequestClock.send`` (``clock.py``), which
keeps the response state (``ResponseState``). The state decides, without any await
between deciding and acting, what a deadline means:

* ``WAITING`` (no ``http.response.start`` has gone out): the middleware answers itself
  (504 or the configured status; 408 for an idle upload), then cancels the app;
* ``STREAMING`` (the app's start has gone out): too late to answer, so the exchange is
  aborted: the app is cancelled and ``ResponseTimeout`` propagates, so the server resets
  the connection instead of passing a truncated body off as whole;
* ``COMPLETE`` (the final body has gone out): the deadline no longer applies, so work
  after the body (Starlette background tasks) runs on.

A streamed body (a first chunk sent with ``more_body``) trades ``total`` for the stream
limits: ``stream_idle`` between two chunks (measured lazily: each chunk only notes the
time, and a deadline that finds a later chunk is put off until the chunk's own) and
``stream_total`` for the whole; server-sent events last as long as they keep sending.

Once the middleware answered or aborted, nothing more the app sends reaches the server.
After cancelling, the middleware gives the app ``cancel_grace`` seconds to unwind; an app
still running then (a thread cannot be cancelled) is counted and logged as abandoned. The
call itself returns only when the app's code returns: a thread cannot be killed, and
structured concurrency never leaves a task behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import anyio

from asgikit.paths import PathTable
from asgikit.scopes import DEADLINE_KEY, TIMEOUT_KEY, derive_scope
from asgikit.types import ASGIApp, Receive, Scope, Send

from .answers import Abandonments
from .clock import RequestClock, ResponseState
from .routes import Limits, build_routes, grace_seconds, make_limits
from .watch import Watches

__all__ = ["DEADLINE_SCOPE_KEY", "INFO_SCOPE_KEY", "ResponseTimeout", "TimeoutMiddleware"]

DEADLINE_SCOPE_KEY = DEADLINE_KEY
"""Scope key of the response start's deadline (``asgikit.scopes.DEADLINE_KEY``)."""

INFO_SCOPE_KEY = TIMEOUT_KEY
"""Scope key of the dict saying which limit fired (``asgikit.scopes.TIMEOUT_KEY``)."""


class ResponseTimeout(TimeoutError):
    """A limit passed after the response had started: the exchange was aborted.

    Raised out of the middleware so the server resets the connection (a response that
    was cut short must not look complete).

    Attributes:
        limit: ``"total"``, ``"request_body_idle"``, ``"stream_idle"`` or
            ``"stream_total"``.
        seconds: The limit that passed, in seconds.
    """

    def __init__(self, limit: str, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        super().__init__(
            f"the {limit} limit ({seconds:g} s) passed after the response started; "
            "the response was aborted"
        )


def _app_scope(scope: Scope, info: dict[str, Any], deadline: float | None) -> Scope:
    """The app's scope: the outcome dict, and the deadline unless an outer one is earlier
    (deadlines only shrink)."""
    scope = derive_scope(scope, {INFO_SCOPE_KEY: info})
    if deadline is not None:
        earlier = scope.get(DEADLINE_SCOPE_KEY)
        if isinstance(earlier, float) and earlier < deadline:
            deadline = earlier
        scope[DEADLINE_SCOPE_KEY] = deadline
    return scope


def _aborted(clock: RequestClock) -> ResponseTimeout:
    """What an exchange aborted mid-response raises: the limit that fired, and its length."""
    assert clock.fired is not None
    seconds = clock.limits.seconds(clock.fired)
    assert seconds is not None
    return ResponseTimeout(clock.fired.value, seconds)


class TimeoutMiddleware:
    """Bound how long an http request may take to be answered.

    Args:
        app: The ASGI app to wrap.
        total: Seconds for the whole response, or None. Before the response starts, the
            client gets ``status_code`` at the deadline; after, the exchange is aborted.
            A streamed body (one sent in several chunks: server-sent events, a download)
            is not bounded by ``total`` once its first chunk went out, but by
            ``stream_idle`` and ``stream_total``.
        first_byte: Seconds until ``http.response.start``, or None; once the response
            started it runs free (streaming). Must be shorter than ``total``.
        request_body_idle: Seconds the app may wait for the next request-body bytes, or
            None; past it the client gets 408 (with ``connection: close`` on HTTP/1).
        stream_idle: Seconds a streamed body may go without a chunk from the app, or
            None; past it the exchange is aborted. A client slow to take chunks is not
            idle, as long as it takes each within this time.
        stream_total: Seconds for the whole of a streamed response, from the request's
            start, or None (the default: a stream may last as long as it keeps sending).
        status_code: The status of the middleware's answer: 504 (default) or 503.
        exclude_paths: Path prefixes (whole segments) the middleware leaves alone.
        routes: Per path prefix (whole segments, longest wins), overrides of ``total``,
            ``first_byte``, ``request_body_idle``, ``stream_idle``, ``stream_total`` and
            ``status_code``.
        cancel_grace: Seconds the app gets to unwind after it was cancelled before it is
            counted and logged as abandoned (``abandoned``).

    Attributes:
        abandoned: How many requests' apps did not unwind within ``cancel_grace`` after a
            deadline (a sync handler in a thread cannot be cancelled).
        abandoned_running: How many of those are still running.
    """

    __slots__ = ("_abandonments", "_default", "_routes", "_watches", "app")

    def __init__(
        self,
        app: ASGIApp,
        *,
        total: float | None = 30.0,
        first_byte: float | None = None,
        request_body_idle: float | None = None,
        stream_idle: float | None = 60.0,
        stream_total: float | None = None,
        status_code: int = 504,
        exclude_paths: str | Iterable[str] = (),
        routes: Mapping[str, Mapping[str, Any]] | None = None,
        cancel_grace: float = 1.0,
    ) -> None:
        defaults = {
            "total": total,
            "first_byte": first_byte,
            "request_body_idle": request_body_idle,
            "stream_idle": stream_idle,
            "stream_total": stream_total,
            "status_code": status_code,
        }
        self._default = make_limits(defaults)
        entries = build_routes(defaults, {} if routes is None else routes, exclude_paths)
        self._routes = PathTable(entries, self._default) if entries else None
        self._abandonments = Abandonments(grace_seconds(cancel_grace))
        self.app = app
        self._watches = Watches()

    @property
    def cancel_grace(self) -> float:
        """Seconds the app gets to unwind after it was cancelled."""
        return self._abandonments.cancel_grace

    @property
    def abandoned(self) -> int:
        return self._abandonments.count

    @property
    def abandoned_running(self) -> int:
        return self._abandonments.running

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limits = self._default if self._routes is None else self._routes.match(scope["path"])
        if limits is None:
            return await self.app(scope, receive, send)
        holder = scope.get(INFO_SCOPE_KEY)
        info: dict[str, Any] = holder if isinstance(holder, dict) else {}
        watch = self._watches.current() if limits.watched else None
        if watch is None:  # trio, or request_body_idle alone
            return await self._unwatched(limits, scope, receive, send, info)
        # asyncio: the loop's watch, no task per request. anyio.current_time()'s clock,
        # read directly: bench_timeout p10 -1.08 µs of 8.81 (bare), -1.03 of 16.68
        # (Starlette); noise 0.03 (p10s of identical code, same run), 2026-12-07.
        clock = RequestClock(
            limits, watch.loop.time(), scope, receive, send, info, self._abandonments
        )
        app_receive = receive if limits.request_body_idle is None else clock.receive
        try:
            with anyio.CancelScope() as clock.cancel_scope:
                clock.watch(watch)
                try:
                    app_scope = _app_scope(scope, info, clock.deadline)
                    await self.app(app_scope, app_receive, clock.send)
                except Exception as exc:  # re-raised below, once the answer is out
                    clock.app_error = exc
                finally:
                    clock.finish()
            if clock.answering is not None:
                await clock.answering
        except BaseException:
            _forget(clock)  # cancelled from outside: that is what propagates
            raise
        finally:
            self._settle(clock)
        return _conclude(clock)

    def _settle(self, clock: RequestClock) -> None:
        if clock.answering is not None:
            # Cancelled from outside: the answer must not go on sending after this call
            # returned.
            clock.answering.cancel()
        if clock.abandoned:
            self._abandonments.returned(clock)

    async def _unwatched(
        self, limits: Limits, scope: Scope, receive: Receive, send: Send, info: dict[str, Any]
    ) -> None:
        """A request without the loop's watch: a watchdog task (trio), or nothing to watch
        but the request body's idle time (``receive`` keeps that one)."""
        clock = RequestClock(
            limits, anyio.current_time(), scope, receive, send, info, self._abandonments
        )
        app_scope = _app_scope(scope, info, clock.deadline)
        app_receive = receive if limits.request_body_idle is None else clock.receive
        try:
            if limits.watched:
                await self._run_with_watchdog(clock, app_scope, app_receive)
            else:
                with anyio.CancelScope() as clock.cancel_scope:
                    try:
                        await self.app(app_scope, app_receive, clock.send)
                    finally:
                        clock.finish()
        except BaseException:
            _forget(clock)
            raise
        finally:
            if clock.abandoned:
                self._abandonments.returned(clock)
        return _conclude(clock)

    async def _run_with_watchdog(self, clock: RequestClock, scope: Scope, receive: Receive) -> None:
        """Run the app beside a watchdog task; what it raises is kept on the clock."""
        async with anyio.create_task_group() as tg:
            clock.cancel_scope = tg.cancel_scope
            tg.start_soon(self._watchdog, clock)
            try:
                await self.app(scope, receive, clock.send)
            except Exception as exc:  # re-raised by the caller, not wrapped in a group
                clock.app_error = exc
            finally:
                clock.finish()

    async def _watchdog(self, clock: RequestClock) -> None:
        try:
            limit = await clock.expire()
            if limit is not None and not await clock.unwind(self.cancel_grace):
                self._abandonments.abandon(clock, limit)
        except Exception as exc:  # a failing send: re-raised by the caller's task
            clock.error = exc
            assert clock.cancel_scope is not None
            clock.cancel_scope.cancel()


def _conclude(clock: RequestClock) -> None:
    """Raise what the app raised (once its answer is out), or the abort of a response
    a limit cut short; return when the response went out whole.

    The clock lets go of the exceptions first: the frames that hold the clock are in
    their tracebacks, and keeping them would make every failed request a cycle.
    """
    error = clock.app_error if clock.app_error is not None else clock.error
    _forget(clock)
    if error is not None:
        try:
            raise error
        finally:
            del error  # no cycle through this frame's traceback
    if clock.state is ResponseState.ABORTED:
        raise _aborted(clock)


def _forget(clock: RequestClock) -> None:
    """Let go of the exceptions the clock kept: the frames that hold the clock are in
    their tracebacks."""
    clock.app_error = clock.error = None
