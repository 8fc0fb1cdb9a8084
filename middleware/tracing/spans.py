"""What http and websocket tracing share: starting a span, making it current, naming it.

``RequestSpans`` starts a request's (or a websocket connection's) span under the right
parent and makes it current while the app runs; ``TraceHeaders`` adds the response
headers that name the span.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, Final

from opentelemetry.context import Context, attach, detach
from opentelemetry.propagate import extract
from opentelemetry.trace import Span, SpanKind, Tracer, set_span_in_context

from asgikit.logging import Field, structlog_contextvar
from asgikit.observe import current_otel_context, current_span_context
from asgikit.types import Message, Scope

from .attributes import METHOD, URL_PATH, URL_SCHEME, HeaderGetter, SpanAttributes, message_events
from .tracestate import repaired

__all__ = ["Active", "RequestSpans", "TraceHeaders"]

_GETTER: Final = HeaderGetter()

_Tokens = list[tuple[ContextVar[Any], Token[Any]]]
Active = tuple[Token[Context], _Tokens | None]
"""What ``RequestSpans.activate`` did, for ``RequestSpans.deactivate`` to undo."""


class RequestSpans:
    """Start a request's span and make it current while the app runs.

    The span is a SERVER span, started from the context the global propagator extracts
    from the request headers; or, when a valid span is already current, an INTERNAL
    span under it.

    Args:
        tracer: The tracer that starts the spans.
        attributes: Builds the request attributes of a recording span.
        bind_contextvars: Bind ``trace_id`` and ``span_id`` in structlog's context
            variables while the span is current.
        message_events: Add a span event per ASGI message.
    """

    __slots__ = ("_attributes", "_bind", "_events", "_span_var", "_trace_var", "_tracer")

    def __init__(
        self,
        tracer: Tracer,
        attributes: SpanAttributes,
        *,
        bind_contextvars: bool,
        message_events: bool,
    ) -> None:
        self._tracer = tracer
        self._attributes = attributes
        self._bind = bind_contextvars
        self._events = message_events
        self._trace_var = structlog_contextvar(Field.TRACE_ID)
        self._span_var = structlog_contextvar(Field.SPAN_ID)

    def start(
        self, scope: Scope, name: str, method: str, scheme: str, start_time: int
    ) -> tuple[Span, Context]:
        """Start the span of *scope*'s request; the span and its parent context."""
        if current_span_context() is not None:
            parent, kind = current_otel_context(), SpanKind.INTERNAL
        else:
            headers = scope.get("headers", ())
            parent, kind = repaired(extract(headers, getter=_GETTER), headers), SpanKind.SERVER
        span = self._tracer.start_span(
            name,
            parent,
            kind,
            {METHOD: method, URL_PATH: scope["path"], URL_SCHEME: scheme},
            start_time=start_time,
        )
        if span.is_recording():
            span.set_attributes(self._attributes.request(scope, method, scheme))
        return span, parent

    def message_events(self, span: Span, skip: str = "") -> Callable[[str, int], None] | None:
        """The ``on_message`` hook adding the span's message events, if wanted."""
        if self._events and span.is_recording():
            return message_events(span, skip)
        return None

    def activate(self, span: Span, parent: Context) -> Active:
        """Make *span* current (and bind its ids for structlog) until ``deactivate``."""
        token = attach(set_span_in_context(span, parent))
        if not self._bind:
            return token, None
        span_context = span.get_span_context()
        if not span_context.is_valid:
            return token, None
        return token, [
            (self._trace_var, self._trace_var.set(f"{span_context.trace_id:032x}")),
            (self._span_var, self._span_var.set(f"{span_context.span_id:016x}")),
        ]

    @staticmethod
    def deactivate(active: Active) -> None:
        """Undo ``activate``: the ids unbound, the previous context current again."""
        token, tokens = active
        if tokens is not None:
            for var, var_token in reversed(tokens):
                var.reset(var_token)
        detach(token)


class TraceHeaders:
    """The ``server-timing`` and ``traceresponse`` response headers naming the span.

    Args:
        server_timing: Add ``server-timing: traceparent;desc="00-<trace>-<span>-<flags>"``.
        traceresponse: Add ``traceresponse: 00-<trace>-<span>-<flags>``.
    """

    __slots__ = ("_server_timing", "_traceresponse")

    def __init__(self, *, server_timing: bool, traceresponse: bool) -> None:
        self._server_timing = server_timing
        self._traceresponse = traceresponse

    def on_start(self, span: Span) -> Callable[[Message], Message] | None:
        """An ``on_start`` hook adding the headers to ``http.response.start``, if wanted
        and the span is valid."""
        if not (self._server_timing or self._traceresponse):
            return None
        span_context = span.get_span_context()
        if not span_context.is_valid:
            return None
        value = (
            f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
            f"{span_context.trace_flags:02x}"
        ).encode("ascii")
        headers: list[tuple[bytes, bytes]] = []
        if self._server_timing:
            headers.append((b"server-timing", b'traceparent;desc="%s"' % value))
        if self._traceresponse:
            headers.append((b"traceresponse", value))

        def add_headers(message: Message) -> Message:
            return {**message, "headers": [*message.get("headers", ()), *headers]}

        return add_headers
