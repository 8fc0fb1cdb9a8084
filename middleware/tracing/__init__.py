"""TracingMiddleware: OpenTelemetry spans and metrics to the stable HTTP conventions."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Span

from asgikit import __version__
from asgikit.hooks import contained, contained_fields
from asgikit.observe import Exchange, route_of
from asgikit.options import flag, string_list
from asgikit.paths import PathMatcher
from asgikit.redact import DEFAULT_REDACTED_QUERY_PARAMS
from asgikit.scopes import end_chain, hand_down_decisions, innermost
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

from .attributes import (
    CANCELLED,
    DISCONNECTED,
    METHODS,
    OTHER_METHOD,
    REQUEST_HEADER_PREFIX,
    RESPONSE_HEADER_PREFIX,
    SpanAttributes,
)
from .environment import (
    REQUEST_HEADERS,
    RESPONSE_HEADERS,
    excluded_urls,
    header_capture,
    sanitized_fields,
    url_of,
)
from .recorder import HttpRecorder
from .spans import RequestSpans, TraceHeaders
from .streams import STREAM_DURATION, STREAM_TIME_TO_FIRST_BYTE, STREAM_TYPE, STREAM_TYPES
from .websocket import WebSocketTracing

_OWNER = "TracingMiddleware"

__all__ = [
    "CANCELLED",
    "DISCONNECTED",
    "STREAM_DURATION",
    "STREAM_TIME_TO_FIRST_BYTE",
    "STREAM_TYPE",
    "STREAM_TYPES",
    "TracingMiddleware",
]


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
            ``/health`` covers ``/health/live``; ``/static*`` a text prefix). Requests
            whose URL matches ``OTEL_PYTHON_ASGI_EXCLUDED_URLS`` (else
            ``OTEL_PYTHON_EXCLUDED_URLS``) are left out too.
        capture_request_headers: Request headers recorded as
            ``http.request.header.<name>`` (``authorization``, ``cookie`` redacted).
            None: those ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST``
            names, if any.
        capture_response_headers: Response headers recorded as
            ``http.response.header.<name>`` (``set-cookie`` redacted). None: those
            ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE`` names, if any.
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
        request_hook: ``request_hook(span, scope)``, called once per traced request
            (and websocket connection) whose span records, before the app runs: add
            attributes of your own. A plain function; what it raises is logged (on
            ``asgikit.hooks``, at most once a minute) and changes nothing else.
        response_hook: ``response_hook(span, message)``, called once with the
            ``http.response.start`` message (the app's, or the answer an asgikit layer
            inside made: 429, 504...) when the span records; for a websocket, with the
            handshake's answer: ``websocket.accept``, ``websocket.http.response.start``
            (a denial, such as CORS's 403 or a shed 503) or a ``websocket.close``
            before accepting. Contained the same way.
        metric_attributes: ``metric_attributes(scope)`` returns more attributes for the
            duration (and size, stream) histograms of the request (and the stream
            histograms of a websocket connection): called once, at its
            end, with the innermost scope (what the framework and the middleware inside
            added). Keep the values bounded; they never replace the conventions' own.
            Contained the same way.
        streams: Record streaming responses (``text/event-stream``, NDJSON) and
            websocket connections in ``asgikit.stream.time_to_first_byte`` and
            ``asgikit.stream.duration``, and leave them out of
            ``http.server.request.duration``. False: no stream histograms, every
            response in the request duration.
        streams_in_duration: Record streaming responses in
            ``http.server.request.duration`` as well.

    The OpenTelemetry variables (excluded URLs, header capture, and
    ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS`` for the headers to
    redact as well) are read once, here.

    Raises:
        ValueError: An option's value is malformed, or a variable's pattern is not a
            regular expression (the message starts with the variable's name).
        TypeError: An option has the wrong type.
    """

    __slots__ = (
        "_excluded",
        "_excluded_urls",
        "_metric_attributes",
        "_recorder",
        "_request_hook",
        "_response_hook",
        "_spans",
        "_trace_headers",
        "_websocket",
        "app",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        exclude_paths: str | Sequence[str] = (),
        capture_request_headers: Sequence[str] | None = None,
        capture_response_headers: Sequence[str] | None = None,
        redact_query_params: Sequence[str] = (),
        server_timing: bool = False,
        traceresponse: bool = False,
        message_events: bool = False,
        request_size: bool = False,
        response_size: bool = False,
        bind_contextvars: bool = True,
        websockets: bool = True,
        request_hook: Callable[[Span, Scope], object] | None = None,
        response_hook: Callable[[Span, Message], object] | None = None,
        metric_attributes: Callable[[Scope], Mapping[str, Any]] | None = None,
        streams: bool = True,
        streams_in_duration: bool = False,
    ) -> None:
        if tracer_provider is not None and not callable(getattr(tracer_provider, "get_tracer", 0)):
            raise TypeError(f"tracer_provider: expected a TracerProvider, not {tracer_provider!r}")
        if meter_provider is not None and not callable(getattr(meter_provider, "get_meter", 0)):
            raise TypeError(f"meter_provider: expected a MeterProvider, not {meter_provider!r}")
        self.app = app
        excluded = PathMatcher(exclude_paths)
        self._excluded = excluded if excluded else None  # None: no test at all
        self._excluded_urls = excluded_urls()
        sanitize = sanitized_fields()
        attributes = SpanAttributes(
            query_params=[
                *DEFAULT_REDACTED_QUERY_PARAMS,
                *string_list(redact_query_params, "redact_query_params"),
            ],
            request_capture=header_capture(
                "capture_request_headers",
                capture_request_headers,
                REQUEST_HEADERS,
                REQUEST_HEADER_PREFIX,
                sanitize,
            ),
            response_capture=header_capture(
                "capture_response_headers",
                capture_response_headers,
                RESPONSE_HEADERS,
                RESPONSE_HEADER_PREFIX,
                sanitize,
            ),
        )
        self._trace_headers = TraceHeaders(
            server_timing=flag(server_timing, "server_timing"),
            traceresponse=flag(traceresponse, "traceresponse"),
        )
        # Resolved once: a global provider behind OpenTelemetry's proxies still takes
        # effect when it is set after this.
        self._spans = RequestSpans(
            trace.get_tracer("asgikit", __version__, tracer_provider),
            attributes,
            bind_contextvars=flag(bind_contextvars, "bind_contextvars"),
            message_events=flag(message_events, "message_events"),
        )
        self._recorder = HttpRecorder(
            metrics.get_meter("asgikit", __version__, meter_provider),
            request_size=flag(request_size, "request_size"),
            response_size=flag(response_size, "response_size"),
            response_capture=attributes.response_capture,
            streams=flag(streams, "streams"),
            streams_in_duration=flag(streams_in_duration, "streams_in_duration"),
        )
        self._request_hook = contained(request_hook, "request_hook", _OWNER)
        self._response_hook = contained(response_hook, "response_hook", _OWNER)
        self._metric_attributes = contained_fields(metric_attributes, "metric_attributes", _OWNER)
        self._websocket = (
            WebSocketTracing(
                app,
                self._spans,
                self._request_hook,
                self._recorder.streams,
                response_hook=self._response_hook,
                metric_attributes=self._metric_attributes,
            )
            if flag(websockets, "websockets")
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self._not_http(scope, receive, send)
        if (self._excluded is not None and self._excluded(scope["path"])) or (
            self._excluded_urls is not None and self._excluded_urls(url_of(scope))
        ):
            return await self.app(scope, receive, send)
        start = time.time_ns()
        method = METHODS.get(scope["method"], OTHER_METHOD)
        scheme = scope.get("scheme", "http")
        name = "HTTP" if method == OTHER_METHOD else method
        span, parent = self._spans.start(scope, name, method, scheme, start)
        if self._request_hook is not None and span.is_recording():
            self._request_hook(span, scope)
        scope, decisions, started = hand_down_decisions(scope)
        on_message = self._spans.message_events(span, skip="http.disconnect")
        ex = Exchange(
            send,
            receive,
            time.time_ns,
            on_start=self._on_start(span),
            files=on_message is not None or self._recorder.counts_files,
            on_message=on_message,
        )
        self._recorder.begin(method, scheme)
        active = self._spans.activate(span, parent)
        try:
            await self.app(scope, ex.receive, ex.send)
        except BaseException as exc:
            ex.caught(exc)
            raise
        finally:
            self._spans.deactivate(active)
            hook = self._metric_attributes
            extra = None if hook is None else hook(innermost(scope))
            self._recorder.end(span, ex, route_of(scope), method, scheme, start, decisions, extra)
            if started:
                end_chain(scope)
            ex.release()

    def _on_start(self, span: Span) -> Callable[[Message], Message] | None:
        """The response start's hook: the trace headers, and ``response_hook``."""
        headers = self._trace_headers.on_start(span)
        hook = self._response_hook
        if hook is None or not span.is_recording():
            return headers

        def on_start(message: Message) -> Message:
            hook(span, message)
            return message if headers is None else headers(message)

        return on_start

    async def _not_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "websocket"
            and self._websocket is not None
            and not (self._excluded is not None and self._excluded(scope["path"]))
            and not (self._excluded_urls is not None and self._excluded_urls(url_of(scope)))
        ):
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)
