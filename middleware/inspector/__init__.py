"""DevInspectorMiddleware: the last requests, their spans and headers, live in a browser."""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Sequence
from typing import Any, Final

import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.trace import ProxyTracerProvider

from asgikit import WORKERS_ENV
from asgikit.observe import Exchange, current_span_context, route_of
from asgikit.options import bounded_int, flag, string_list
from asgikit.redact import (
    ALWAYS_REDACTED_HEADERS,
    DEFAULT_REDACTED_QUERY_PARAMS,
    header_names,
    truncate,
)
from asgikit.scopes import CHAIN_KEY, PEER_KEY, REQUEST_ID_KEY, end_chain, start_chain
from asgikit.types import ASGIApp, Receive, Scope, Send

from .records import MAX_TRACEBACK, Record, Renderer
from .serve import Endpoints, local_client, local_server
from .store import REQUEST_SPAN, InspectorSpanProcessor, RingBuffer, SpanStore

__all__ = ["DevInspectorMiddleware"]

_RETRY_SECONDS: Final = 1.0
"""How often the global tracer provider is looked at again until one is set."""
_now = time.perf_counter
_time_ns = time.time_ns


def _workers_notice() -> str:
    """What the page says when it is one of several worker processes (``asgikit serve
    --workers N`` says how many in ``ASGIKIT_WORKERS``): each keeps its own requests."""
    workers = os.environ.get(WORKERS_ENV, "")
    if not workers.isdecimal() or int(workers) < 2:
        return ""
    return (
        f"This page shows the requests of one worker process (pid {os.getpid()}) of "
        f"{workers}: each keeps its own, and a request is answered by any of them. Serve "
        "with one worker to see every request here."
    )


def _check_path(path: object) -> None:
    if not isinstance(path, str):
        raise TypeError(f"path must be a str, not {path!r}")
    if not (path.startswith("/") and path.endswith("/") and len(path) > 2 and path.isascii()):
        raise ValueError(f"path must start and end with '/', like '/_asgikit/', not {path!r}")


def _check_provider(tracer_provider: object) -> None:
    if tracer_provider is not None and not callable(
        getattr(tracer_provider, "add_span_processor", None)
    ):
        raise TypeError(
            "tracer_provider: expected an OpenTelemetry SDK TracerProvider "
            f"(with add_span_processor), not {tracer_provider!r}"
        )


def _error(exc: BaseException, limit: int) -> tuple[str, str, str]:
    text = "".join(traceback.format_exception(exc))
    if len(text) > MAX_TRACEBACK:
        text = f"...[{len(text) - MAX_TRACEBACK} chars]\n" + text[-MAX_TRACEBACK:]
    return type(exc).__qualname__, truncate(str(exc), limit), text


class DevInspectorMiddleware:
    """Keep the last requests in memory and show them, live, on a page of their own.

    For development only. The page (``path``, ``/_asgikit/`` by default) lists the
    recent http requests as they happen (server-sent events) and, for each, its
    access-log fields, its request and response headers (redacted as the access log
    redacts them), its exception and traceback, and a waterfall of its spans, collected
    by a span processor added to the OpenTelemetry SDK tracer provider.

    It refuses to run anywhere but on loopback: the first request that arrived on a
    non-loopback address (``scope["server"]``) switches it off for good (it logs why),
    and its pages are only served to loopback clients, directly (no proxy headers), for
    a loopback ``Host``. ``allow_non_loopback=True`` lifts both. Websockets pass through.

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

    Raises:
        ValueError: An option's value is out of range or malformed.
        TypeError: An option has the wrong type.
    """

    __slots__ = (
        "_allow_any",
        "_bare",
        "_endpoints",
        "_limit",
        "_logger",
        "_off",
        "_path",
        "_pending_global",
        "_retry_at",
        "_ring",
        "_store",
        "_tracing",
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
    ) -> None:
        _check_path(path)
        flag(enabled, "enabled")
        flag(allow_non_loopback, "allow_non_loopback")
        bounded_int(max_requests, "max_requests", 1)
        bounded_int(max_spans, "max_spans", 1)
        bounded_int(max_field_length, "max_field_length", 16)
        _check_provider(tracer_provider)
        renderer = Renderer(
            limit=max_field_length,
            redacted_headers=frozenset(
                [name.encode("ascii") for name in ALWAYS_REDACTED_HEADERS]
                + header_names(redact_headers, "redact_headers")
            ),
            query_params=[
                *DEFAULT_REDACTED_QUERY_PARAMS,
                *string_list(redact_query_params, "redact_query_params"),
            ],
        )
        self.app = app
        self._path = path
        self._bare = path[:-1]
        self._off = not enabled
        self._allow_any = allow_non_loopback
        self._limit = max_field_length
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
        self._endpoints = Endpoints(
            ring=self._ring,
            store=self._store,
            renderer=renderer,
            tracing=self._is_tracing,
            max_rows=max_requests,
            notice=_workers_notice(),
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

    def _refuse(self, scope: Scope) -> None:
        self._off = True
        self._logger.error(
            "inspector.refused",
            reason=f"a request arrived on {scope['server'][0]}, not a loopback address: the "
            "development inspector is switched off (allow_non_loopback=True to force it)",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._off:
            await self.app(scope, receive, send)
            return
        allow_any = self._allow_any
        if not allow_any and not local_server(scope):
            self._refuse(scope)
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith(self._path) or path == self._bare:
            if allow_any or local_client(scope):
                if path == self._bare:
                    await _redirect(send, self._path)
                else:
                    await self._endpoints.serve(scope, receive, send, path[len(self._path) :])
                return
            await self.app(scope, receive, send)  # as if there were no inspector
            return
        if self._pending_global and _now() >= self._retry_at:
            self._attach_global()
        await self._recorded(scope, receive, send)

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

        try:
            await self.app(scope, ex.receive, ex.send)
        except BaseException as exc:
            ex.caught(exc)
            raise
        finally:
            if token is not None:
                REQUEST_SPAN.reset(token)
            self._record(self._recorded_as(scope, ex, first_span, started_ns, start))
            if started:
                end_chain(scope)
            ex.release()

    def _recorded_as(
        self,
        scope: Scope,
        ex: Exchange,
        first_span: list[int] | None,
        started_ns: int,
        start: float,
    ) -> Record:
        """The request's record, from what its exchange saw (a frame of its own: the
        exception is not kept in the frame that ran the app)."""
        trace_id = span_id = 0
        span_context = ex.span_context
        if span_context is not None:
            trace_id, span_id = span_context.trace_id, span_context.span_id
        elif first_span is not None:
            trace_id, span_id = first_span
        status = ex.status
        error = ex.error
        if status is None and isinstance(error, Exception) and not ex.disconnected:
            status = 500  # what every ASGI server answers
        first_byte = ex.first_byte
        return Record(
            scope=self._facts(scope),
            started_ns=started_ns,
            status=status,
            duration=_now() - start,
            ttfb=None if first_byte is None else first_byte - start,
            received=ex.received,
            sent=ex.sent,
            response_headers=ex.response_headers,
            trace_id=trace_id,
            span_id=span_id,
            error=None if error is None else _error(error, self._limit),
            disconnected=ex.disconnected,
        )

    @staticmethod
    def _facts(scope: Scope) -> dict[str, Any]:
        """What the page shows of the scope, read after the app ran (the route is known)."""
        facts = {
            "method": scope["method"],
            "path": scope["path"],
            "query_string": scope.get("query_string", b""),
            "http_version": scope.get("http_version", "1.1"),
            "scheme": scope.get("scheme", "http"),
            "client": scope.get("client"),
            "headers": scope.get("headers", ()),
            REQUEST_ID_KEY: scope.get(REQUEST_ID_KEY),
            PEER_KEY: scope.get(PEER_KEY),
        }
        route = route_of(scope)
        if route is not None:
            facts["path_template"] = route
        return facts

    def _record(self, record: Record) -> None:
        if record.trace_id:
            self._store.pin(record.trace_id)
        _, dropped = self._ring.append(record)
        if dropped is not None and dropped.trace_id:
            self._store.unpin(dropped.trace_id)
        self._endpoints.notify()


async def _redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 308,
            "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})
