"""Websocket tracing: one span per connection, and the stream histograms."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from opentelemetry.trace import Span

from asgikit.hooks import Hook
from asgikit.observe import WebSocketExchange, route_of
from asgikit.scopes import CHAIN_KEY, end_chain, innermost, start_chain
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

from .attributes import (
    DISCONNECTED,
    ERROR_TYPE,
    HTTP_ROUTE,
    HTTP_STATUS,
    METHOD,
    URL_SCHEME,
    error_status,
)
from .spans import RequestSpans
from .streams import StreamRecorder

__all__ = ["WEBSOCKET_SPAN_NAME", "WebSocketTracing"]

WEBSOCKET_SPAN_NAME: Final = "WEBSOCKET"
"""A websocket connection's span name, followed by its route when one is known."""

_ERROR_CLOSE_CODES: Final = frozenset({1011})
# What answers a handshake: the first of these is response_hook's message.
_ANSWERS: Final = frozenset(
    {"websocket.accept", "websocket.http.response.start", "websocket.close"}
)


class WebSocketTracing:
    """Run websocket connections inside their spans (see ``TracingMiddleware``).

    Args:
        app: The ASGI app that handles the connections.
        spans: Starts each connection's span and makes it current.
        request_hook: ``TracingMiddleware``'s, contained; None for none.
        streams: Records each connection as a ``websocket`` stream; None for none.
        response_hook: ``TracingMiddleware``'s, contained: called with the answer to
            the handshake (``websocket.accept``, ``websocket.http.response.start`` or
            a ``websocket.close`` before accepting); None for none.
        metric_attributes: ``TracingMiddleware``'s, contained: more attributes for the
            stream histograms, from the innermost scope; None for none.
    """

    __slots__ = (
        "_app",
        "_metric_attributes",
        "_request_hook",
        "_response_hook",
        "_spans",
        "_streams",
    )

    def __init__(
        self,
        app: ASGIApp,
        spans: RequestSpans,
        request_hook: Hook[object] | None = None,
        streams: StreamRecorder | None = None,
        *,
        response_hook: Hook[object] | None = None,
        metric_attributes: Hook[dict[str, Any]] | None = None,
    ) -> None:
        self._app = app
        self._spans = spans
        self._request_hook = request_hook
        self._streams = streams
        self._response_hook = response_hook
        self._metric_attributes = metric_attributes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.time_ns()
        scheme = scope.get("scheme", "ws")
        span, parent = self._spans.start(scope, WEBSOCKET_SPAN_NAME, "GET", scheme, start)
        recording = span.is_recording()
        if self._request_hook is not None and recording:
            self._request_hook(span, scope)
        if self._response_hook is not None and recording:
            send = _answer_hooked(send, self._response_hook, span)
        started = CHAIN_KEY not in scope  # the route is read from the chain afterwards
        scope = start_chain(scope)
        events = self._spans.message_events(span)
        accepted: list[int] = []
        if self._streams is not None:
            events = _accept_time(accepted, events)
        ws = WebSocketExchange(send, receive, on_message=events)
        active = self._spans.activate(span, parent)
        try:
            await self._app(scope, ws.receive, ws.send)
        except BaseException as exc:
            ws.caught(exc)
            raise
        finally:
            self._spans.deactivate(active)
            self._finish(span, ws, scope, (scheme, start, accepted))
            if started:
                end_chain(scope)
            ws.release()

    def _finish(
        self, span: Span, ws: WebSocketExchange, scope: Scope, times: tuple[str, int, list[int]]
    ) -> None:
        """Record the connection's stream figures and outcome; end its span."""
        scheme, start, accepted = times
        end = time.time_ns()
        route = route_of(scope)
        if self._streams is not None and accepted:
            measured: dict[str, Any] = {METHOD: "GET", URL_SCHEME: scheme}
            if route is not None:
                measured[HTTP_ROUTE] = route
            hook = self._metric_attributes
            extra = None if hook is None else hook(innermost(scope))
            if extra:
                measured = {**extra, **measured}  # the conventions' attributes win
            self._streams.record("websocket", start, accepted[0], end, measured)
        if span.is_recording():
            _record_outcome(span, ws, route)
        span.end(end_time=end)


def _answer_hooked(send: Send, hook: Hook[object], span: Span) -> Send:
    """*send*, calling *hook* with the first answer to the handshake."""
    answered = False

    async def hooked(message: Message) -> None:
        nonlocal answered
        if not answered and message["type"] in _ANSWERS:
            answered = True
            hook(span, message)
        await send(message)

    return hooked


def _accept_time(
    accepted: list[int], events: Callable[[str, int], None] | None
) -> Callable[[str, int], None]:
    """An ``on_message`` noting when the connection was accepted, then adding *events*."""

    def on_message(kind: str, size: int) -> None:
        if kind == "websocket.accept":
            accepted.append(time.time_ns())
        if events is not None:
            events(kind, size)

    return on_message


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
