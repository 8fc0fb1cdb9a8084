"""TracingMiddleware's websocket half: one span per connection, no metrics."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry.context import attach, detach
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, get_current_span, set_span_in_context

from asgikit.observe import WebSocketExchange, current_otel_context
from asgikit.scopes import CHAIN_KEY
from asgikit.types import Receive, Scope, Send

from .attributes import (
    DISCONNECTED,
    ERROR_TYPE,
    HTTP_ROUTE,
    HTTP_STATUS,
    METHOD,
    URL_PATH,
    URL_SCHEME,
    HeaderGetter,
    error_status,
    message_events,
    route_of,
)

if TYPE_CHECKING:
    from . import TracingMiddleware

__all__ = ["WEBSOCKET_SPAN_NAME", "trace_websocket"]

WEBSOCKET_SPAN_NAME = "WEBSOCKET"
"""A websocket connection's span name, followed by its route when one is known."""

_time_ns = time.time_ns
_GETTER = HeaderGetter()
_ERROR_CLOSE_CODES = frozenset({1011})


async def trace_websocket(
    middleware: TracingMiddleware, scope: Scope, receive: Receive, send: Send
) -> None:
    """Run one websocket connection inside its span (see ``TracingMiddleware``)."""
    start = _time_ns()
    scheme = scope.get("scheme", "ws")
    current = current_otel_context()
    if current and get_current_span(current).get_span_context().is_valid:
        parent, kind = current, SpanKind.INTERNAL
    else:
        parent, kind = extract(scope.get("headers", ()), getter=_GETTER), SpanKind.SERVER
    span = middleware._tracer.start_span(
        WEBSOCKET_SPAN_NAME,
        parent,
        kind,
        {METHOD: "GET", URL_PATH: scope["path"], URL_SCHEME: scheme},
        start_time=start,
    )
    recording = span.is_recording()
    if recording:
        span.set_attributes(middleware._attributes.request(scope, "GET", scheme))
    chain: list[Scope] | None = None  # see TracingMiddleware: the route is read from it
    if CHAIN_KEY not in scope:
        chain = []
        scope = {**scope, CHAIN_KEY: chain}
        chain.append(scope)
    events = recording and middleware._events
    ws = WebSocketExchange(send, receive, on_message=message_events(span) if events else None)

    token = attach(set_span_in_context(span, parent))
    tokens = middleware._bind_ids(span)
    error: BaseException | None = None
    try:
        await middleware.app(scope, ws.receive, ws.send)
    except BaseException as exc:
        error = exc if exc is not ws.gone else None
        raise
    finally:
        if tokens is not None:
            for var, var_token in reversed(tokens):
                var.reset(var_token)
        detach(token)
        end = _time_ns()
        status, close_code = ws.status, ws.close_code
        if span.is_recording():
            attributes: dict[str, Any] = {}
            route = route_of(scope)
            if route is not None:
                span.update_name(f"{WEBSOCKET_SPAN_NAME} {route}")
                attributes[HTTP_ROUTE] = route
            if status is not None:
                attributes[HTTP_STATUS] = status
            if close_code is not None:
                attributes["websocket.close_code"] = close_code
            error_type = None
            if error is not None:
                error_type = type(error).__qualname__
            elif close_code in _ERROR_CLOSE_CODES or (status is not None and status >= 500):
                error_type = str(close_code if status is None or status < 500 else status)
            if error_type is not None:
                attributes[ERROR_TYPE] = error_type
            if ws.disconnected:
                attributes[DISCONNECTED] = True
            span.set_attributes(attributes)
            error_status(span, error, error_type)
        span.end(end_time=end)
        if chain is not None:
            chain.clear()  # a scope-chain cycle, broken (see TracingMiddleware)
