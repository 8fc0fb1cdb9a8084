"""TracingMiddleware: OpenTelemetry spans and metrics to the stable HTTP conventions."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from contextvars import ContextVar, Token
from typing import Any, Final

from opentelemetry import metrics, trace
from opentelemetry.context import attach, detach
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.propagate import extract
from opentelemetry.trace import (
    Span,
    SpanKind,
    get_current_span,
    set_span_in_context,
)

from asgikit import __version__
from asgikit.logging import Field, structlog_contextvar
from asgikit.observe import Exchange, current_otel_context
from asgikit.options import string_list
from asgikit.paths import PathMatcher
from asgikit.redact import DEFAULT_REDACTED_QUERY_PARAMS, header_names
from asgikit.scopes import CHAIN_KEY
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

from .attributes import (
    ACTIVE_REQUESTS,
    CANCELLED,
    DISCONNECTED,
    DURATION_BUCKETS,
    METHOD,
    METHODS,
    OTHER_METHOD,
    REQUEST_BODY_SIZE,
    REQUEST_DURATION,
    RESPONSE_BODY_SIZE,
    URL_PATH,
    URL_SCHEME,
    HeaderGetter,
    SpanAttributes,
    message_events,
)
from .finish import finish_http
from .websocket import trace_websocket

__all__ = ["CANCELLED", "DISCONNECTED", "TracingMiddleware"]

_time_ns = time.time_ns
_GETTER: Final = HeaderGetter()
_SERVER = SpanKind.SERVER
_INTERNAL = SpanKind.INTERNAL
_Tokens = list[tuple[ContextVar[Any], Token[Any]]]


def _parent_context() -> tuple[Any, SpanKind]:
    """The current context and INTERNAL when a valid span is current, else None and SERVER."""
    current = current_otel_context()
    if current and get_current_span(current).get_span_context().is_valid:
        return current, _INTERNAL
    return None, _SERVER


class TracingMiddleware:
    """Trace every http request (and websocket connection) with OpenTelemetry.

    One SERVER span per request, started from the context the global propagator extracts
    from the request headers (INTERNAL, under the current span, when one is already
    current); the app runs with the span current. Attributes, names and metrics follow
    the stable HTTP semantic conventions; see ``docs/tracing.md``.

    Args:
        app: The ASGI app to wrap.
        tracer_provider: A ``TracerProvider``; the global one (resolved through
            OpenTelemetry's proxy, so one set later is honoured) by default.
        meter_provider: A ``MeterProvider``; the global one by default.
        exclude_paths: Path patterns never traced or measured (``asgikit.paths``:
            ``/health`` covers ``/health/live``; ``/static*`` a text prefix).
        capture_request_headers: Request headers recorded as
            ``http.request.header.<name>`` (``authorization``, ``cookie`` redacted).
        capture_response_headers: Response headers recorded as
            ``http.response.header.<name>`` (``set-cookie`` redacted).
        redact_query_params: More query parameter name patterns whose values are
            redacted in ``url.query``, on top of the access log's defaults.
        server_timing: Add ``server-timing: traceparent;desc="00-<trace>-<span>-<flags>"``
            to responses, so a browser can find the trace.
        traceresponse: Add a ``traceresponse: 00-<trace>-<span>-<flags>`` header.
        message_events: Add a span event per ASGI message received and sent.
        request_size: Record the ``http.server.request.body.size`` histogram.
        response_size: Record the ``http.server.response.body.size`` histogram.
        bind_contextvars: Bind ``trace_id`` and ``span_id`` in structlog's context
            variables while the app runs.
        websockets: Trace websocket connections (one span per connection).

    Raises:
        ValueError: An option's value is malformed.
        TypeError: An option has the wrong type.
    """

    __slots__ = (
        "_attributes",
        "_bind",
        "_duration",
        "_events",
        "_excluded",
        "_in_flight",
        "_request_size",
        "_response_size",
        "_server_timing",
        "_span_var",
        "_trace_var",
        "_tracer",
        "_traceresponse",
        "_websockets",
        "app",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        exclude_paths: Sequence[str] = (),
        capture_request_headers: Sequence[str] = (),
        capture_response_headers: Sequence[str] = (),
        redact_query_params: Sequence[str] = (),
        server_timing: bool = False,
        traceresponse: bool = False,
        message_events: bool = False,
        request_size: bool = False,
        response_size: bool = False,
        bind_contextvars: bool = True,
        websockets: bool = True,
    ) -> None:
        if tracer_provider is not None and not callable(getattr(tracer_provider, "get_tracer", 0)):
            raise TypeError(f"tracer_provider: expected a TracerProvider, not {tracer_provider!r}")
        if meter_provider is not None and not callable(getattr(meter_provider, "get_meter", 0)):
            raise TypeError(f"meter_provider: expected a MeterProvider, not {meter_provider!r}")
        flags = {
            "server_timing": server_timing,
            "traceresponse": traceresponse,
            "message_events": message_events,
            "request_size": request_size,
            "response_size": response_size,
            "bind_contextvars": bind_contextvars,
            "websockets": websockets,
        }
        for option, value in flags.items():
            if not isinstance(value, bool):
                raise TypeError(f"{option}: expected a bool, not {value!r}")
        self.app = app
        self._excluded = PathMatcher(exclude_paths)
        self._attributes = SpanAttributes(
            query_params=[
                *DEFAULT_REDACTED_QUERY_PARAMS,
                *string_list(redact_query_params, "redact_query_params"),
            ],
            request_headers=header_names(capture_request_headers, "capture_request_headers"),
            response_headers=header_names(capture_response_headers, "capture_response_headers"),
        )
        # Resolved once: a global provider behind OpenTelemetry's proxies still takes
        # effect when it is set after this.
        self._tracer = trace.get_tracer("asgikit", __version__, tracer_provider)
        meter = metrics.get_meter("asgikit", __version__, meter_provider)
        self._duration = meter.create_histogram(
            REQUEST_DURATION,
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        # Requests in flight by (method, scheme), observed when metrics are collected: a
        # dict update per request instead of two synchronous SDK measurements.
        self._in_flight: dict[tuple[str, str], int] = {}
        meter.create_observable_up_down_counter(
            ACTIVE_REQUESTS,
            callbacks=[self._observe_in_flight],
            unit="{request}",
            description="Number of active HTTP requests.",
        )
        self._request_size = (
            meter.create_histogram(
                REQUEST_BODY_SIZE, unit="By", description="Size of HTTP request bodies."
            )
            if request_size
            else None
        )
        self._response_size = (
            meter.create_histogram(
                RESPONSE_BODY_SIZE, unit="By", description="Size of HTTP response bodies."
            )
            if response_size
            else None
        )
        self._server_timing = server_timing
        self._traceresponse = traceresponse
        self._events = message_events
        self._bind = bind_contextvars
        self._trace_var = structlog_contextvar(Field.TRACE_ID)
        self._span_var = structlog_contextvar(Field.SPAN_ID)
        self._websockets = websockets

    def _observe_in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {METHOD: method, URL_SCHEME: scheme})
            for (method, scheme), count in list(self._in_flight.items())
        ]

    def _bind_ids(self, span: Span) -> _Tokens | None:
        """Bind the span's ids in structlog's context variables; the reset tokens."""
        if not self._bind:
            return None
        span_context = span.get_span_context()
        if not span_context.is_valid:
            return None
        return [
            (self._trace_var, self._trace_var.set(f"{span_context.trace_id:032x}")),
            (self._span_var, self._span_var.set(f"{span_context.span_id:016x}")),
        ]

    def _timing_headers(self, span: Span) -> list[tuple[bytes, bytes]] | None:
        """The ``server-timing`` / ``traceresponse`` headers naming the span, if wanted."""
        if not (self._server_timing or self._traceresponse):
            return None
        span_context = span.get_span_context()
        if not span_context.is_valid:
            return None
        value = (
            f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
            f"{span_context.trace_flags:02x}"
        ).encode("ascii")
        headers = []
        if self._server_timing:
            headers.append((b"server-timing", b'traceparent;desc="%s"' % value))
        if self._traceresponse:
            headers.append((b"traceresponse", value))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket" and self._websockets and not self._excluded(scope["path"]):
                await trace_websocket(self, scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if self._excluded and self._excluded(scope["path"]):
            await self.app(scope, receive, send)
            return

        start = _time_ns()
        method = METHODS.get(scope["method"], OTHER_METHOD)
        scheme = scope.get("scheme", "http")
        parent, span_kind = _parent_context()
        if parent is None:
            parent = extract(scope.get("headers", ()), getter=_GETTER)
        span = self._tracer.start_span(
            method if method != OTHER_METHOD else "HTTP",
            parent,
            span_kind,
            {METHOD: method, URL_PATH: scope["path"], URL_SCHEME: scheme},
            start_time=start,
        )
        recording = span.is_recording()
        if recording:
            span.set_attributes(self._attributes.request(scope, method, scheme))
        # The chain records the copies made inside: the route the framework writes into
        # its own scope is read from there after the app returns.
        chain: list[Scope] | None = None  # the one this call starts, cleared at the end
        if CHAIN_KEY not in scope:
            chain = []
            scope = {**scope, CHAIN_KEY: chain}
            chain.append(scope)
        in_flight = self._in_flight
        flight_key = (method, scheme)
        in_flight[flight_key] = in_flight.get(flight_key, 0) + 1

        capture_response = recording and self._attributes.response_capture is not None
        events = recording and self._events
        timing_headers = self._timing_headers(span)
        on_start = None
        if timing_headers is not None:

            def on_start(message: Message) -> Message:
                headers = message.get("headers", ())
                return {**message, "headers": [*headers, *timing_headers]}

        ex = Exchange(
            send,
            receive,
            _time_ns,
            on_start=on_start,
            files=events or self._response_size is not None,
            on_message=message_events(span, skip="http.disconnect") if events else None,
        )

        token = attach(set_span_in_context(span, parent))
        tokens = self._bind_ids(span)
        error: BaseException | None = None
        try:
            await self.app(scope, ex.receive, ex.send)
        except BaseException as exc:
            error = exc if exc is not ex.gone else None
            raise
        finally:
            if tokens is not None:
                for var, var_token in reversed(tokens):
                    var.reset(var_token)
            detach(token)
            in_flight[flight_key] -= 1
            finish_http(
                self,
                span,
                scope,
                start,
                ex.end,
                ex.status,
                error,
                ex.disconnected,
                method,
                scheme,
                ex.received,
                ex.sent,
                ex.response_headers if capture_response else None,
            )
            if chain is not None:
                # The chain and its scopes refer to each other: break the cycle now
                # rather than leave it to the garbage collector.
                chain.clear()
