"""DevInspectorMiddleware: the last requests, their spans and headers, live in a browser."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from contextvars import Token
from typing import Any, Final

import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.trace import ProxyTracerProvider

from asgikit.observe import Exchange, WebSocketExchange, current_span_context
from asgikit.options import bounded_int, flag, string_list
from asgikit.redact import (
    ALWAYS_REDACTED_HEADERS,
    DEFAULT_REDACTED_QUERY_PARAMS,
    header_names,
)
from asgikit.scopes import CHAIN_KEY, end_chain, start_chain
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

from . import logs
from .logs import LOG_LINES, LogBuffer
from .recording import (
    check_path,
    check_provider,
    error_of,
    facts,
    open_shared,
    redirect,
    worker_count,
    workers_notice,
)
from .records import Record, Renderer
from .serve import Endpoints, local_client, local_server
from .shared import SharedStore
from .store import REQUEST_SPAN, InspectorSpanProcessor, RingBuffer, SpanStore

__all__ = ["DevInspectorMiddleware"]

_RETRY_SECONDS: Final = 1.0
"""How often the global tracer provider is looked at again until one is set."""
_now = time.perf_counter
_time_ns = time.time_ns
_monotonic = time.monotonic


def _renderer(
    limit: int, redact_headers: str | Sequence[str], redact_query_params: str | Sequence[str]
) -> Renderer:
    """The renderer of the page's JSON, redacting as the access log does, and more."""
    return Renderer(
        limit=limit,
        redacted_headers=frozenset(
            [name.encode("ascii") for name in ALWAYS_REDACTED_HEADERS]
            + header_names(redact_headers, "redact_headers")
        ),
        query_params=[
            *DEFAULT_REDACTED_QUERY_PARAMS,
            *string_list(redact_query_params, "redact_query_params"),
        ],
    )


class DevInspectorMiddleware:
    """Keep the last requests in memory and show them, live, on a page of their own.

    For development only. The page (``path``, ``/_asgikit/`` by default) lists the
    recent http requests and websockets as they happen (server-sent events) and, for
    each, its access-log fields, its request and response headers (redacted as the
    access log redacts them), the app's log lines while it ran (structlog's and
    ``logging``'s), its exception and traceback, a waterfall of its spans (collected by
    a span processor added to the OpenTelemetry SDK tracer provider) and the request
    as a curl command.

    It refuses to run anywhere but on loopback: the first request that arrived on a
    non-loopback address (``scope["server"]``) switches it off for good (it logs why),
    and its pages are only served to loopback clients, directly (no proxy headers), for
    a loopback ``Host``. ``allow_non_loopback=True`` lifts both.

    Args:
        app: The ASGI app to wrap.
        path: Where the page is served; its JSON is under ``{path}api/``. Requests
            under it are not recorded.
        max_requests: How many requests are kept (the oldest is dropped first).
        enabled: False makes the middleware a plain pass-through.
        allow_non_loopback: Run and serve the page whatever the addresses. Only behind
            something that keeps strangers out: the page shows headers and tracebacks.
        tracer_provider: An OpenTelemetry SDK ``TracerProvider`` to collect spans from;
            by default the global one, once it is an SDK provider.
        redact_headers: More header names shown as ``[REDACTED]``, on top of
            ``ALWAYS_REDACTED_HEADERS``.
        redact_query_params: More query parameter name patterns to redact, on top of
            the access log's ``DEFAULT_REDACTED_QUERY_PARAMS``.
        max_spans: How many spans are kept per trace.
        max_field_length: Longer values (paths, headers, attributes) are cut.
        capture_logs: Keep the log lines (structlog and ``logging``) the app writes
            while a request runs, with the request.
        max_log_lines: How many log lines are kept per request; later ones are counted.

    Raises:
        ValueError: An option's value is out of range or malformed.
        TypeError: An option has the wrong type.
    """

    __slots__ = (
        "_allow_any",
        "_bare",
        "_capture",
        "_endpoints",
        "_hooked",
        "_limit",
        "_log_limit",
        "_logger",
        "_off",
        "_path",
        "_pending_global",
        "_renderer",
        "_retry_at",
        "_ring",
        "_shared",
        "_store",
        "_to_start",
        "_tracing",
        "_workers",
        "app",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        path: str = "/_asgikit/",
        max_requests: int = 200,
        enabled: bool = True,
        allow_non_loopback: bool = False,
        tracer_provider: Any = None,
        redact_headers: str | Sequence[str] = (),
        redact_query_params: str | Sequence[str] = (),
        max_spans: int = 1000,
        max_field_length: int = 1024,
        capture_logs: bool = True,
        max_log_lines: int = 100,
    ) -> None:
        check_path(path)
        flag(enabled, "enabled")
        flag(allow_non_loopback, "allow_non_loopback")
        flag(capture_logs, "capture_logs")
        bounded_int(max_requests, "max_requests", 1)
        bounded_int(max_spans, "max_spans", 1)
        bounded_int(max_field_length, "max_field_length", 16)
        bounded_int(max_log_lines, "max_log_lines", 1)
        check_provider(tracer_provider)
        renderer = _renderer(max_field_length, redact_headers, redact_query_params)
        self.app = app
        self._path = path
        self._bare = path[:-1]
        self._off = not enabled
        self._allow_any = allow_non_loopback
        self._limit = max_field_length
        self._capture = capture_logs
        self._to_start = enabled  # until started (see _start), or shut down
        self._log_limit = max_log_lines
        self._hooked = False
        self._logger = structlog.get_logger("asgikit.inspector")
        self._ring: RingBuffer[Record] = RingBuffer(max_requests)
        self._store = SpanStore(max_loose=max_requests, max_spans=max_spans)
        self._tracing = False
        self._pending_global = False
        self._retry_at = 0.0
        if enabled:  # disabled, it adds no span processor anywhere
            if tracer_provider is not None:
                tracer_provider.add_span_processor(InspectorSpanProcessor(self._store))
                self._tracing = True
            else:
                self._pending_global = True
                self._attach_global()
        self._renderer = renderer
        self._shared: SharedStore | None = None
        self._workers = worker_count()
        self._endpoints = Endpoints(
            ring=self._ring,
            store=self._store,
            renderer=renderer,
            tracing=self._is_tracing,
            max_rows=max_requests,
            notice=workers_notice(self._workers, None),
        )

    def _is_tracing(self) -> bool:
        return self._tracing

    def _attach_global(self) -> None:
        """Add the span processor to the global provider once one is set (looked at
        again every second until then, at a request: it may be set after the app is
        built, at start-up)."""
        provider = trace.get_tracer_provider()
        if isinstance(provider, ProxyTracerProvider):
            self._retry_at = _now() + _RETRY_SECONDS  # not set yet (asking reads os.environ)
            return
        self._pending_global = False
        if isinstance(provider, SDKTracerProvider):
            provider.add_span_processor(InspectorSpanProcessor(self._store))
            self._tracing = True

    def _start(self) -> None:
        """At lifespan start-up, or at the first request without one (never when the app
        is only built): log hooks in, the store shared by the workers opened."""
        self._to_start = False
        if self._capture:
            self._hooked = True
            logs.acquire()
        if self._workers > 1:
            shared = self._shared = open_shared(self._workers, self._ring.capacity)
            path = None if shared is None else shared.path
            self._endpoints.share(shared, workers_notice(self._workers, path))

    def _stop(self) -> None:
        """At lifespan shutdown (or refusing to run): take out what ``_start`` put in."""
        self._to_start = False  # a later request does not put them back
        if self._hooked:
            self._hooked = False
            logs.release()
        shared, self._shared = self._shared, None
        if shared is not None:
            self._endpoints.shared = None
            shared.close()

    def _refuse(self, scope: Scope) -> None:
        self._off = True
        self._stop()
        self._logger.error(
            "inspector.refused",
            reason=f"a request arrived on {scope['server'][0]}, not a loopback address: the "
            "development inspector is switched off (allow_non_loopback=True to force it)",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if self._off or kind not in ("http", "websocket"):
            if kind == "lifespan" and not self._off:
                await self.app(scope, self._watch_lifespan(receive), send)
                return
            await self.app(scope, receive, send)
            return
        if not self._allow_any and not local_server(scope):
            self._refuse(scope)
            await self.app(scope, receive, send)
            return
        if self._to_start:
            self._start()
        path = scope["path"]
        if kind == "http" and (path.startswith(self._path) or path == self._bare):
            await self._own(scope, receive, send, path)
            return
        if self._pending_global and _now() >= self._retry_at:
            self._attach_global()
        if kind == "http":
            await self._recorded(scope, receive, send)
        else:
            await self._recorded_websocket(scope, receive, send)

    def _watch_lifespan(self, receive: Receive) -> Receive:
        """The server's ``receive``, watched: hooks in at start-up, out at shutdown."""

        async def watched() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self._to_start:
                    self._start()
            else:  # lifespan.shutdown, the only other message
                self._stop()
            return message

        return watched

    async def _own(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """A request for the inspector's own pages."""
        if self._allow_any or local_client(scope):
            if path == self._bare:
                await redirect(send, self._path)
            elif path == self._path + "api/clear":
                await self._endpoints.clear(scope, send, self._clear)
            else:
                await self._endpoints.serve(scope, receive, send, path[len(self._path) :])
            return
        await self.app(scope, receive, send)  # as if there were no inspector

    def _clear(self) -> None:
        if self._shared is not None:
            self._shared.clear()
        for record in self._ring.clear():
            if record.trace_id:
                self._store.unpin(record.trace_id)

    def _buffer(self) -> tuple[LogBuffer | None, Token[LogBuffer | None] | None]:
        """The request's log lines, made current (none when logs are not captured)."""
        if not self._hooked:
            return None, None
        lines = LogBuffer(self._log_limit, self._limit)
        return lines, LOG_LINES.set(lines)

    async def _recorded(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = _now()
        started_ns = _time_ns()
        started = CHAIN_KEY not in scope
        scope = start_chain(scope)
        ex = Exchange(send, receive, _now, spans=True)
        ex.span_context = current_span_context()  # on entry; the one at the start wins
        # The first span started inside, for a request that fails before it responds.
        first_span = [0, 0] if self._tracing else None
        token = None if first_span is None else REQUEST_SPAN.set(first_span)
        lines, log_token = self._buffer()
        try:
            await self.app(scope, ex.receive, ex.send)
        except BaseException as exc:
            ex.caught(exc)
            raise
        finally:
            if log_token is not None:
                LOG_LINES.reset(log_token)
            if token is not None:
                REQUEST_SPAN.reset(token)
            self._record(self._recorded_as(scope, ex, first_span, started_ns, start, lines))
            if started:
                end_chain(scope)
            ex.release()

    async def _recorded_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = _now()
        started_ns = _time_ns()
        ex = WebSocketExchange(send, receive, spans=True)
        ex.span_context = current_span_context()
        lines, log_token = self._buffer()
        try:
            await self.app(scope, ex.receive, ex.send)
        except BaseException as exc:
            ex.caught(exc)
            raise
        finally:
            if log_token is not None:
                LOG_LINES.reset(log_token)
            self._record(self._recorded_as(scope, ex, None, started_ns, start, lines))
            ex.release()

    def _recorded_as(
        self,
        scope: Scope,
        ex: Exchange | WebSocketExchange,
        first_span: list[int] | None,
        started_ns: int,
        start: float,
        lines: LogBuffer | None,
    ) -> Record:
        """The request's record, from what its exchange saw (a frame of its own: the
        exception is not kept in the frame that ran the app)."""
        trace_id = span_id = 0
        span_context = ex.span_context
        if span_context is not None:
            trace_id, span_id = span_context.trace_id, span_context.span_id
        elif first_span is not None:
            trace_id, span_id = first_span
        error = ex.error
        if isinstance(ex, WebSocketExchange):
            kind, ttfb, response_headers, close_code = "websocket", None, None, ex.close_code
        else:
            first_byte = ex.first_byte
            ttfb = None if first_byte is None else first_byte - start
            kind, response_headers, close_code = "http", ex.response_headers, None
        return Record(
            scope=facts(scope),
            started_ns=started_ns,
            status=ex.client_status(),
            duration=_now() - start,
            ttfb=ttfb,
            received=ex.received,
            sent=ex.sent,
            response_headers=response_headers,
            trace_id=trace_id,
            span_id=span_id,
            error=None if error is None else error_of(error, self._limit),
            disconnected=ex.disconnected,
            logs=lines,
            kind=kind,
            close_code=close_code,
        )

    def _record(self, record: Record) -> None:
        if record.trace_id:
            self._store.pin(record.trace_id)
        number, dropped = self._ring.append(record)
        if dropped is not None and dropped.trace_id:
            self._store.unpin(dropped.trace_id)
        if self._shared is not None:
            self._shared.put(_monotonic(), functools.partial(self._rendered, number, record))
        self._endpoints.notify()

    def _rendered(self, number: int, record: Record) -> tuple[dict[str, Any], dict[str, Any]]:
        """A record as the page reads it (for the shared store: in its writer thread)."""
        spans = self._store.spans(record.trace_id) if record.trace_id else []
        renderer = self._renderer
        return renderer.summary(number, record), renderer.detail(
            number, record, spans, self._tracing
        )
