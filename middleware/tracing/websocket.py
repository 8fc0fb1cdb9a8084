"""Websocket tracing: one span per connection, no metrics."""

from __future__ import annotations

import time
from typing import Any, Final

from opentelemetry.trace import Span

from asgikit.observe import WebSocketExchange, route_of
from asgikit.scopes import CHAIN_KEY, end_chain, start_chain
from asgikit.types import ASGIApp, Receive, Scope, Send

from .attributes import DISCONNECTED, ERROR_TYPE, HTTP_ROUTE, HTTP_STATUS, error_status
from .spans import RequestSpans

__all__ = ["WEBSOCKET_SPAN_NAME", "WebSocketTracing"]

WEBSOCKET_SPAN_NAME: Final = "WEBSOCKET"
"""A websocket connection's span name, followed by its route when one is known."""

_ERROR_CLOSE_CODES: Final = frozenset({1011})


class WebSocketTracing:
    """Run websocket connections inside their spans (see ``TracingMiddleware``).

    Args:
        app: The ASGI app that handles the connections.
        spans: Starts each connection's span and makes it current.
    """

    __slots__ = ("_app", "_spans")

    def __init__(self, app: ASGIApp, spans: RequestSpans) -> None:
        self._app = app
        self._spans = spans

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.time_ns()
        span, parent = self._spans.start(
            scope, WEBSOCKET_SPAN_NAME, "GET", scope.get("scheme", "ws"), start
        )
        started = CHAIN_KEY not in scope  # the route is read from the chain afterwards
        scope = start_chain(scope)
        ws = WebSocketExchange(send, receive, on_message=self._spans.message_events(span))
        active = self._spans.activate(span, parent)
        try:
            await self._app(scope, ws.receive, ws.send)
        except BaseException as exc:
            ws.caught(exc)
            raise
        finally:
            self._spans.deactivate(active)
            end = time.time_ns()
            if span.is_recording():
                _record_outcome(span, ws, route_of(scope))
            span.end(end_time=end)
            if started:
                end_chain(scope)
            ws.release()


def _record_outcome(span: Span, ws: WebSocketExchange, route: str | None) -> None:
    """Name a recording span after its route; set the connection's outcome on it."""
    error = ws.error
    attributes: dict[str, Any] = {}
    if route is not None:
        span.update_name(f"{WEBSOCKET_SPAN_NAME} {route}")
        attributes[HTTP_ROUTE] = route
    status, close_code = ws.client_status(), ws.close_code
    if status is not None:
        attributes[HTTP_STATUS] = status
    if close_code is not None:
        attributes["websocket.close_code"] = close_code
    error_type = None
    if error is not None:
        error_type = type(error).__qualname__
    elif status is not None and status >= 500:
        error_type = str(status)
    elif close_code in _ERROR_CLOSE_CODES:
        error_type = str(close_code)
    if error_type is not None:
        attributes[ERROR_TYPE] = error_type
    if ws.disconnected:
        attributes[DISCONNECTED] = True
    span.set_attributes(attributes)
    error_status(span, error, error_type)
