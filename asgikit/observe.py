"""The observation core: what an observing middleware learns of one request or websocket.

The access log, tracing and the inspector each watch the same things go by: the status,
when the response started and when it completed (the final body, a ``pathsend``, the
last trailers), the bytes each way, and whether the client left. ``Exchange`` is that
watcher, once: its ``send`` and ``receive`` stand in for the server's, and its
attributes hold what they saw. Bytes are counted once they are out; a send that fails
with ``OSError`` (the client is gone, contract H7) marks the exchange disconnected and
keeps the error in ``gone`` so the caller can tell it from the app's own.
``WebSocketExchange`` is the same for a websocket; ``route_of`` reads the route template
the framework matched, through the scope chain (``asgikit.scopes``).

Public for anyone writing a middleware on the kit; docs/architecture.md shows one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

import anyio
import opentelemetry.context
from opentelemetry.trace import SpanContext, get_current_span

from asgikit.scopes import innermost_with
from asgikit.types import Message, Receive, Scope, Send

__all__ = [
    "Exchange",
    "WebSocketExchange",
    "current_otel_context",
    "current_span_context",
    "file_bytes",
    "route_of",
    "route_template",
]


current_otel_context: Final = opentelemetry.context.get_current
"""The current OpenTelemetry context. An empty one (falsy) means nothing is traced."""


def current_span_context() -> SpanContext | None:
    """The current span's context, if a valid one is current.

    Nothing attached to OpenTelemetry's context (no tracing at all) is told by one cheap
    look at the context, a quarter of the cost of asking for the current span.
    """
    context = current_otel_context()
    if not context:
        return None
    span_context = get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


class _Outcome:
    """What ends an exchange badly, kept for the observer: the app's exception, or the
    ``OSError`` of a send to a client that had left (contract H7)."""

    __slots__ = ("error", "gone")

    error: BaseException | None
    gone: OSError | None
    status: int | None
    disconnected: bool

    def client_status(self) -> int | None:
        """The status the client got: the response's, else 500 when the app raised an
        exception before answering while the client was still there (what every ASGI
        server then answers), else None. The access log and the span both report it."""
        status = self.status
        if status is None and isinstance(self.error, Exception) and not self.disconnected:
            return 500
        return status

    def caught(self, exc: BaseException) -> None:
        """Keep *exc*, raised by the app called with this exchange, in ``error``; unless
        it is the ``OSError`` of a send to a client that had left (that is ``gone``).

        The caller calls the app itself and re-raises: a wrapper coroutine here cost
        0.18 µs a request (1.74 against 1.56 µs for a call through the exchange, in a
        loop, 2026-12-07), and the access log, tracing and the inspector each pay it.
        """
        if exc is not self.gone:
            self.error = exc

    def release(self) -> None:
        """Drop the exceptions kept (``error``, ``gone``) once they were read.

        The call that ran the app is a frame in their tracebacks, and that frame holds
        this exchange: without this, every failed request would be a reference cycle
        that keeps all its objects until the garbage collector runs.
        """
        self.error = self.gone = None


class Exchange(_Outcome):
    """One HTTP exchange as seen from a middleware: pass ``send`` and ``receive`` on.

    Args:
        send: The server's ``send``.
        receive: The server's ``receive``.
        clock: Read at the response start (``first_byte``) and its completion (``end``).
        spans: Keep the span current at the response start in ``span_context`` (the
            app's context: a span opened inside the caller is current there).
        on_start: Called with ``http.response.start``; returns the message to send (to
            add headers). None: sent as it is.
        files: Count the bytes of ``pathsend`` and ``zerocopysend`` files (a ``stat``).
        on_message: Called with each message's type and body bytes once it went through,
            both ways (span events).

    Attributes:
        status: The response status, once ``http.response.start`` went out.
        first_byte: ``clock()`` when the response started.
        end: ``clock()`` when the response completed; None while it has not.
        complete: The response completed (final body, ``pathsend``, last trailers).
        received: Request body bytes the app received.
        sent: Response body bytes that went out (files counted from the file).
        response_headers: The response start's headers.
        disconnected: The client left (``http.disconnect`` before the end, or a send
            that failed with ``OSError``).
        gone: The ``OSError`` a send raised when the client had left, else None.
        error: What the app raised, as :meth:`caught` kept it (never ``gone``), else None.
        span_context: The span current at the response start (with ``spans``).
        trailers: The response announced trailers.
        final_sent: The last body went out (trailers may follow).
    """

    __slots__ = (
        "_files",
        "_on_message",
        "_receive",
        "_send",
        "_spans",
        "clock",
        "complete",
        "disconnected",
        "end",
        "final_sent",
        "first_byte",
        "on_start",
        "received",
        "response_headers",
        "sent",
        "span_context",
        "status",
        "trailers",
    )

    def __init__(
        self,
        send: Send,
        receive: Receive,
        clock: Callable[[], Any],
        spans: bool = False,
        *,
        on_start: Callable[[Message], Message] | None = None,
        files: bool = True,
        on_message: Callable[[str, int], object] | None = None,
    ) -> None:
        self._send = send
        self._on_message = on_message
        self._receive = receive
        self.clock = clock
        self.on_start = on_start
        self._spans = spans
        self._files = files
        self.status: int | None = None
        self.first_byte: Any = None
        self.end: Any = None
        self.sent = self.received = 0
        self.trailers = self.final_sent = self.complete = self.disconnected = False
        self.gone = self.error = None  # _Outcome's, set here: no extra call per request
        self.response_headers: Any = None
        self.span_context: SpanContext | None = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        size = 0
        if kind == "http.response.body":
            size = len(message.get("body", b""))
            final = not message.get("more_body", False) and not self.trailers
        elif kind == "http.response.start":
            self.status = message["status"]
            self.first_byte = self.clock()
            if message.get("trailers", False):
                self.trailers = True
            self.response_headers = message.get("headers", ())
            final = False
            if self._spans and current_otel_context():  # empty: no span, and no call
                self.span_context = current_span_context() or self.span_context
            if self.on_start is not None:
                message = self.on_start(message)
        elif kind == "http.response.trailers":
            final = not message.get("more_trailers", False)
        elif kind == "http.response.pathsend" or kind == "http.response.zerocopysend":
            if self._files:
                size = file_bytes(message)
            final = not self.trailers and (
                kind == "http.response.pathsend" or not message.get("more_body", False)
            )
        else:
            final = False
        if final:
            self.final_sent = True
        try:
            await self._send(message)
        except OSError as exc:
            self.disconnected = True
            self.gone = exc
            raise
        except anyio.get_cancelled_exc_class():
            # Cancelled inside the server's send (a disconnect watcher's task group, under
            # hypercorn's trio worker): the server took the message and wrote it before
            # its next checkpoint, where the cancellation landed. What was handed over
            # counts as sent; a response cut short shows as a send that failed (OSError).
            self._sent(kind, size, final)
            raise
        self._sent(kind, size, final)

    def _sent(self, kind: str, size: int, final: bool) -> None:
        if size:
            self.sent += size  # counted once it is out: bytes actually sent
        if final:
            self.end = self.clock()
            self.complete = True
        if self._on_message is not None:
            self._on_message(kind, size)

    async def receive(self) -> Message:
        message = await self._receive()
        kind = message["type"]
        size = 0
        if kind == "http.request":
            size = len(message.get("body", b""))
            self.received += size
        elif kind == "http.disconnect" and not self.final_sent:
            self.disconnected = True
        if self._on_message is not None:
            self._on_message(kind, size)
        return message


class WebSocketExchange(_Outcome):
    """One websocket connection as seen from a middleware: pass ``send`` and ``receive``.

    ``status`` is 101 once accepted, 403 when closed before (what the server answers), or
    the status of a ``websocket.http.response`` denial; ``close_code`` is the first
    close, the app's or the client's (1005 when the client gave none).

    Args:
        send: The server's ``send``.
        receive: The server's ``receive``.
        spans: Keep the span current when the connection is accepted in ``span_context``.
        on_message: Called with each message's type (and 0 bytes) once it went through,
            both ways (span events).
    """

    __slots__ = (
        "_on_message",
        "_receive",
        "_send",
        "_spans",
        "close_code",
        "disconnected",
        "received",
        "sent",
        "span_context",
        "status",
    )

    def __init__(
        self,
        send: Send,
        receive: Receive,
        *,
        spans: bool = False,
        on_message: Callable[[str, int], object] | None = None,
    ) -> None:
        self._send = send
        self._receive = receive
        self._spans = spans
        self._on_message = on_message
        self.status: int | None = None
        self.close_code: int | None = None
        self.sent = self.received = 0
        self.disconnected = False
        self.gone = self.error = None  # _Outcome's
        self.span_context: SpanContext | None = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            self.sent += 1
        elif kind == "websocket.accept":
            self.status = 101
            if self._spans:
                self.span_context = current_span_context() or self.span_context
        elif kind == "websocket.close":
            if self.status is None:
                self.status = 403  # closed before accepting: the server answers 403
            if self.close_code is None:
                self.close_code = message.get("code", 1000)
        elif kind == "websocket.http.response.start":
            self.status = message["status"]
        try:
            await self._send(message)
        except OSError as exc:
            self.disconnected = True
            self.gone = exc
            raise
        if self._on_message is not None:
            self._on_message(kind, 0)

    async def receive(self) -> Message:
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            self.received += 1
        elif kind == "websocket.disconnect" and self.close_code is None:
            self.close_code = message.get("code", 1005)
        if self._on_message is not None:
            self._on_message(kind, 0)
        return message


def _included_template(scope: Scope, route: object) -> str | None:
    """The template of a route reached through FastAPI's ``include_router``, prefix and all.

    FastAPI (from 0.165) includes routers lazily and leaves the router's own route under
    ``route``, whose path lacks the prefixes it was included with. The template it
    matched is on the route context it keeps beside it, in ``scope["fastapi"]``; read
    only when that context belongs to this very route.
    """
    state = scope.get("fastapi")
    if not isinstance(state, dict):
        return None
    context = state.get("effective_route_context")
    if context is None or getattr(context, "original_route", None) is not route:
        return None
    for source in (getattr(context, "starlette_route", None), context):
        template = getattr(source, "path_format", None)
        if isinstance(template, str) and template:
            return template
    return None


def route_template(scope: Scope) -> str | None:
    """The route template the framework matched, from what it left in the scope.

    Starlette and FastAPI put the matched route object under ``route`` (its
    ``path_format``, converters left out, or its ``path``); mounts add the path they
    matched to ``root_path``, which is prefixed back. Litestar sets ``path_template``.
    Django and plain apps leave nothing: None.
    """
    route = scope.get("route")
    if route is not None:
        template = _included_template(scope, route)
        if template is None:
            template = getattr(route, "path_format", None)
        if not isinstance(template, str):
            template = getattr(route, "path", None)
        if isinstance(template, str):
            app_root = scope.get("app_root_path")
            root = scope.get("root_path", "")
            if isinstance(app_root, str) and isinstance(root, str) and root.startswith(app_root):
                mounted = root[len(app_root) :]
                if mounted:
                    if hasattr(route, "routes"):  # a mount: root_path already ends with it
                        return mounted + "/{path}"
                    return mounted + template
            return template
    template = scope.get("path_template")
    return template if isinstance(template, str) else None


_ROUTE_KEYS: Final = ("route", "path_template")
"""Where frameworks leave the matched route: Starlette and FastAPI, Litestar."""


def route_of(scope: Scope) -> str | None:
    """The route template the framework left in this request's scope chain, if any:
    ``route_template`` of the innermost scope that has one (``asgikit.scopes``)."""
    return route_template(innermost_with(scope, _ROUTE_KEYS))


def file_bytes(message: Message) -> int:
    """What a pathsend or zerocopysend message has the server send, from the file."""
    try:
        if message["type"] == "http.response.pathsend":
            return os.stat(message["path"]).st_size
        count = message.get("count")
        if count is not None:
            return int(count)
        file = message["file"]  # a file object (or a bare descriptor)
        size = os.fstat(file if isinstance(file, int) else file.fileno()).st_size
        return max(size - int(message.get("offset", 0)), 0)
    except (OSError, KeyError, TypeError, ValueError, AttributeError):
        return 0
