"""In-process ASGI driver for tests.

Build scopes, script what ``receive()`` returns, record everything the app sends, and read
the result back. Unlike an HTTP client over ``httpx.ASGITransport``, the driver keeps the
ASGI messages themselves: body chunks one by one, client disconnects at a chosen point,
extension messages (pathsend, trailers, early hints, zerocopysend), and a ``send`` that
raises ``OSError`` once the client has gone, as real servers do. It runs under asyncio
and trio alike (anyio).

    response = await request(enforce(Middleware(enforce(app))), "GET", "/", body=[b"a", b"b"])
    assert response.status == 200
"""

from __future__ import annotations

import json as _json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import anyio
import anyio.lowlevel

from asgikit.types import ASGIApp, Message, Scope

__all__ = [
    "ALL_HTTP_EXTENSIONS",
    "DISCONNECT",
    "ClientDisconnected",
    "Disconnect",
    "LifespanFailed",
    "LifespanSession",
    "Response",
    "WebSocketSession",
    "http_scope",
    "lifespan",
    "lifespan_scope",
    "request",
    "run_lifespan",
    "websocket",
    "websocket_scope",
]

HeadersArg = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]

ALL_HTTP_EXTENSIONS: Mapping[str, Mapping[str, Any]] = {
    "http.response.pathsend": {},
    "http.response.zerocopysend": {},
    "http.response.trailers": {},
    "http.response.early_hint": {},
    "http.response.push": {},
    "http.response.debug": {},
}
"""Every http extension the driver understands; pass as ``extensions=`` to advertise all."""


@dataclass(frozen=True)
class Disconnect:
    """The client goes away here (in a body or frame script).

    Attributes:
        code: The websocket close code (ignored for http).
    """

    code: int = 1000


DISCONNECT = Disconnect()
"""Put in a ``body=`` or ``frames=`` script where the client should disconnect."""


class ClientDisconnected(OSError):
    """Raised by the driver's ``send`` after the client disconnected (as uvicorn does)."""


class LifespanFailed(Exception):
    """The app answered ``lifespan.*.failed``."""


def _encode_headers(headers: HeadersArg) -> list[tuple[bytes, bytes]]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    encoded = []
    for name, value in pairs:
        raw_name = name if isinstance(name, bytes) else name.encode("latin-1")
        raw_value = value if isinstance(value, bytes) else value.encode("latin-1")
        encoded.append((raw_name.lower(), raw_value))
    return encoded


# What clients send unescaped in a path and a query (RFC 3986 pchar / query).
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?%"
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _host_header(server: tuple[str, int | None] | None, scheme: str) -> bytes:
    if not server:
        return b"testserver"
    host, port = server
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return host.encode("idna")
    return f"{host}:{port}".encode("idna")


def _ends_response(message: Message, trailers_announced: bool) -> bool:
    """Does *message* complete an http response whose start announced trailers or not?"""
    kind = message.get("type")
    if kind == "http.response.trailers":
        return not message.get("more_trailers", False)
    if trailers_announced:
        return False
    if kind == "http.response.pathsend":
        return True
    return kind in ("http.response.body", "http.response.zerocopysend") and not message.get(
        "more_body", False
    )


def _connection_scope(
    scope_type: str,
    path: str,
    headers: HeadersArg,
    scheme: str,
    client: tuple[str, int] | None,
    server: tuple[str, int | None] | None,
    root_path: str,
    extensions: Mapping[str, Mapping[str, Any]] | None,
    state: dict[str, Any] | None,
) -> Scope:
    path, _, query = path.partition("?")
    raw_headers = _encode_headers(headers)
    if not any(name == b"host" for name, _ in raw_headers):
        raw_headers.insert(0, (b"host", _host_header(server, scheme)))
    scope: Scope = {
        "type": scope_type,
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": scheme,
        "path": path,
        "raw_path": quote(path, safe=_PATH_SAFE).encode("ascii"),
        "query_string": quote(query, safe=_QUERY_SAFE).encode("ascii"),
        "root_path": root_path,
        "headers": raw_headers,
        "client": client,
        "server": server,
        "extensions": {k: dict(v) for k, v in (extensions or {}).items()},
    }
    if state is not None:
        scope["state"] = state
    return scope


def http_scope(
    method: str = "GET",
    path: str = "/",
    *,
    headers: HeadersArg = (),
    scheme: str = "http",
    http_version: str = "1.1",
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    server: tuple[str, int | None] | None = ("testserver", 80),
    root_path: str = "",
    extensions: Mapping[str, Mapping[str, Any]] | None = None,
    state: dict[str, Any] | None = None,
    **extra: Any,
) -> Scope:
    """Build an ASGI 3 http scope.

    Args:
        method: The request method.
        path: The path, with an optional ``?query``.
        headers: Header names and values (str or bytes); names are lowercased and a
            ``host`` header is added when missing.
        scheme: ``http`` or ``https``.
        http_version: ``1.0``, ``1.1`` or ``2``.
        client: The peer address, or None (Unix socket).
        server: The listening address.
        root_path: The ASGI root path.
        extensions: Advertised extensions (see ``ALL_HTTP_EXTENSIONS``).
        state: The lifespan state dict, shared by identity.
        **extra: More scope keys, set as given.
    """
    scope = _connection_scope(
        "http", path, headers, scheme, client, server, root_path, extensions, state
    )
    scope["method"] = method
    scope["http_version"] = http_version
    scope.update(extra)
    return scope


def websocket_scope(
    path: str = "/ws",
    *,
    headers: HeadersArg = (),
    subprotocols: Sequence[str] = (),
    scheme: str = "ws",
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    server: tuple[str, int | None] | None = ("testserver", 80),
    root_path: str = "",
    extensions: Mapping[str, Mapping[str, Any]] | None = None,
    state: dict[str, Any] | None = None,
    **extra: Any,
) -> Scope:
    """Build an ASGI 3 websocket scope (arguments as for ``http_scope``)."""
    scope = _connection_scope(
        "websocket", path, headers, scheme, client, server, root_path, extensions, state
    )
    scope["subprotocols"] = list(subprotocols)
    scope.update(extra)
    return scope


def lifespan_scope(state: dict[str, Any] | None = None) -> Scope:
    """Build a lifespan scope; *state* is shared with the http scopes by identity."""
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
    if state is not None:
        scope["state"] = state
    return scope


# --------------------------------------------------------------------------------------
# http


@dataclass
class Response:
    """What the app sent for one request, in order."""

    scope: Scope
    messages: list[Message] = field(default_factory=list)
    """Every message the app sent, as sent."""
    received: list[Message] = field(default_factory=list)
    """Every message ``receive()`` returned to the app."""
    dropped: list[Message] = field(default_factory=list)
    """Messages sent after the client disconnected (send ignored or raised)."""
    disconnected: bool = False
    """The client disconnected (scripted) before the exchange ended."""
    exception: BaseException | None = None
    """What the app raised, with ``raise_app_exceptions=False``."""

    def _of_type(self, kind: str) -> list[Message]:
        return [m for m in self.messages if m.get("type") == kind]

    @property
    def start(self) -> Message:
        """The ``http.response.start`` message (AssertionError if none was sent)."""
        starts = self._of_type("http.response.start")
        assert starts, f"no http.response.start was sent; sent: {self.message_types}"
        return starts[0]

    @property
    def started(self) -> bool:
        return bool(self._of_type("http.response.start"))

    @property
    def complete(self) -> bool:
        """Whether the response ended: its body (a final body, pathsend or zerocopysend)
        and, when the start announced trailers, the last trailers message."""
        trailers = False
        for message in self.messages:
            if _ends_response(message, trailers):
                return True
            if message.get("type") == "http.response.start":
                trailers = bool(message.get("trailers", False))
        return False

    @property
    def status(self) -> int:
        status: int = self.start["status"]
        return status

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The raw response header list."""
        return [(bytes(n), bytes(v)) for n, v in self.start.get("headers", [])]

    def header(self, name: str) -> str | None:
        """The first value of a response header (case-insensitive name), or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """Every value of a response header, in order."""
        key = name.lower().encode("latin-1")
        return [v.decode("latin-1") for n, v in self.headers if n == key]

    @property
    def chunks(self) -> list[bytes]:
        """The body of each ``http.response.body`` message, one entry per message."""
        return [bytes(m.get("body", b"")) for m in self._of_type("http.response.body")]

    @property
    def body(self) -> bytes:
        """The joined body of every ``http.response.body`` message."""
        return b"".join(self.chunks)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return _json.loads(self.body)

    @property
    def pathsend(self) -> str | None:
        """The path of an ``http.response.pathsend``, if the response ended with one."""
        sent = self._of_type("http.response.pathsend")
        return str(sent[0]["path"]) if sent else None

    @property
    def trailers(self) -> list[tuple[bytes, bytes]]:
        """Every trailer field, across ``http.response.trailers`` messages."""
        return [
            (bytes(n), bytes(v))
            for m in self._of_type("http.response.trailers")
            for n, v in m.get("headers", [])
        ]

    @property
    def early_hints(self) -> list[list[bytes]]:
        """The ``links`` of each ``http.response.early_hint``."""
        return [list(m.get("links", [])) for m in self._of_type("http.response.early_hint")]

    @property
    def message_types(self) -> list[str]:
        return [str(m.get("type")) for m in self.messages]


async def request(
    app: ASGIApp,
    method: str = "GET",
    path: str = "/",
    *,
    headers: HeadersArg = (),
    body: bytes | Iterable[bytes | Disconnect] = b"",
    scope: Scope | None = None,
    disconnect_after: int | None = None,
    send_after_disconnect: Literal["raise", "ignore"] = "raise",
    extensions: Mapping[str, Mapping[str, Any]] | None = None,
    raise_app_exceptions: bool = True,
    **scope_extra: Any,
) -> Response:
    """Call *app* with one http request and record what it sends.

    Args:
        app: The ASGI app.
        method: The request method.
        path: The path with an optional query.
        headers: Request headers.
        body: The request body: bytes for one chunk, or an iterable of chunks sent one
            ``http.request`` each; ``DISCONNECT`` among them makes the client go away
            there (mid-upload).
        scope: A ready scope (``http_scope(...)``); the other scope arguments are then
            ignored.
        disconnect_after: The client disconnects after the app has sent this many
            messages: a waiting ``receive()`` returns ``http.disconnect``, and further
            sends raise ``ClientDisconnected`` or are ignored.
        send_after_disconnect: ``"raise"`` (uvicorn's behaviour) or ``"ignore"``.
        extensions: Extensions to advertise (see ``ALL_HTTP_EXTENSIONS``).
        raise_app_exceptions: Re-raise what the app raises (default), or return the
            partial response with ``exception`` set.
        **scope_extra: Passed to ``http_scope``.

    Returns:
        The recorded ``Response``.
    """
    if disconnect_after is not None and disconnect_after < 1:
        raise ValueError("disconnect_after counts sent messages: it must be 1 or more")
    if scope is None:
        scope = http_scope(method, path, headers=headers, extensions=extensions, **scope_extra)
    script: list[bytes | Disconnect] = [body] if isinstance(body, bytes) else list(body)
    if not script:
        script = [b""]
    response = Response(scope=scope)
    trailers_announced = False
    gone = anyio.Event()
    ended = anyio.Event()
    position = 0

    def finish_disconnect() -> None:
        response.disconnected = True
        gone.set()

    async def receive() -> Message:
        nonlocal position
        if response.disconnected:
            message: Message = {"type": "http.disconnect"}
        elif position < len(script):
            item = script[position]
            position += 1
            if isinstance(item, Disconnect):
                finish_disconnect()
                message = {"type": "http.disconnect"}
            else:
                more = position < len(script)
                message = {"type": "http.request", "body": item, "more_body": more}
        else:
            # Like a server: after the body, wait until the response is done or the
            # client goes away, then report the disconnect.
            async with anyio.create_task_group() as tg:

                async def wait_gone() -> None:
                    await gone.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(wait_gone)
                await ended.wait()
                tg.cancel_scope.cancel()
            message = {"type": "http.disconnect"}
        response.received.append(message)
        return message

    async def send(message: Message) -> None:
        await anyio.lowlevel.checkpoint()
        if response.disconnected:
            response.dropped.append(message)
            if send_after_disconnect == "raise":
                raise ClientDisconnected("the client disconnected")
            return
        nonlocal trailers_announced
        response.messages.append(message)
        if disconnect_after is not None and len(response.messages) >= disconnect_after:
            finish_disconnect()
        if message.get("type") == "http.response.start":
            trailers_announced = bool(message.get("trailers", False))
        elif _ends_response(message, trailers_announced):
            ended.set()

    try:
        await app(scope, receive, send)
    except BaseException as exc:
        if raise_app_exceptions or not isinstance(exc, Exception):
            raise
        response.exception = exc
    finally:
        ended.set()
    return response


# --------------------------------------------------------------------------------------
# websocket


@dataclass
class WebSocketSession:
    """What the app sent over one websocket connection."""

    scope: Scope
    messages: list[Message] = field(default_factory=list)
    received: list[Message] = field(default_factory=list)
    exception: BaseException | None = None

    def _of_type(self, kind: str) -> list[Message]:
        return [m for m in self.messages if m.get("type") == kind]

    @property
    def accepted(self) -> bool:
        return bool(self._of_type("websocket.accept"))

    @property
    def subprotocol(self) -> str | None:
        accepts = self._of_type("websocket.accept")
        return accepts[0].get("subprotocol") if accepts else None

    @property
    def close_code(self) -> int | None:
        """The code of the app's ``websocket.close``, or None if it sent none."""
        closes = self._of_type("websocket.close")
        return int(closes[0].get("code", 1000)) if closes else None

    @property
    def sent(self) -> list[str | bytes]:
        """The data frames the app sent (text or bytes), in order."""
        return [
            m["text"] if m.get("text") is not None else m["bytes"]
            for m in self._of_type("websocket.send")
        ]

    @property
    def denial(self) -> Response | None:
        """The denial response (``websocket.http.response.*``), if the app sent one."""
        denial = [m for m in self.messages if m.get("type", "").startswith("websocket.http.")]
        if not denial:
            return None
        renamed: list[Message] = [
            {**m, "type": m["type"].replace("websocket.", "", 1)} for m in denial
        ]
        return Response(scope=self.scope, messages=renamed)


async def websocket(
    app: ASGIApp,
    path: str = "/ws",
    *,
    frames: Iterable[str | bytes | Disconnect] = (),
    headers: HeadersArg = (),
    subprotocols: Sequence[str] = (),
    scope: Scope | None = None,
    extensions: Mapping[str, Mapping[str, Any]] | None = None,
    raise_app_exceptions: bool = True,
    **scope_extra: Any,
) -> WebSocketSession:
    """Open a websocket to *app*, send the scripted *frames*, then close.

    ``receive()`` returns ``websocket.connect`` first; frames are delivered only after the
    app accepted (as a server does); after the last frame (or at a ``Disconnect(code)``)
    the client closes with that code (1000 by default). If the app closes or denies the
    connection, ``receive()`` returns ``websocket.disconnect``.
    """
    if scope is None:
        scope = websocket_scope(
            path,
            headers=headers,
            subprotocols=subprotocols,
            extensions=extensions,
            **scope_extra,
        )
    session = WebSocketSession(scope=scope)
    script = list(frames)
    answered = anyio.Event()
    position = -1  # -1: the connect is still to be sent

    async def receive() -> Message:
        nonlocal position
        if position < 0:
            position = 0
            message: Message = {"type": "websocket.connect"}
        else:
            await answered.wait()
            closed = session.close_code
            if not session.accepted or closed is not None:
                message = {"type": "websocket.disconnect", "code": closed or 1000}
            elif position < len(script) and not isinstance(script[position], Disconnect):
                item = script[position]
                position += 1
                key = "text" if isinstance(item, str) else "bytes"
                message = {"type": "websocket.receive", key: item}
            else:
                item = script[position] if position < len(script) else DISCONNECT
                if isinstance(item, Disconnect):
                    script[position:] = [item]  # later receives repeat the same close
                position = len(script) - 1 if script else 0
                code = item.code if isinstance(item, Disconnect) else 1000
                message = {"type": "websocket.disconnect", "code": code}
        session.received.append(message)
        return message

    async def send(message: Message) -> None:
        await anyio.lowlevel.checkpoint()
        session.messages.append(message)
        if message.get("type") in ("websocket.accept", "websocket.close") or (
            message.get("type") == "websocket.http.response.start"
        ):
            answered.set()

    try:
        await app(scope, receive, send)
    except BaseException as exc:
        if raise_app_exceptions or not isinstance(exc, Exception):
            raise
        session.exception = exc
    return session


# --------------------------------------------------------------------------------------
# lifespan


@dataclass
class LifespanSession:
    """A running lifespan: its state dict and the messages the app sent."""

    scope: Scope
    state: dict[str, Any]
    messages: list[Message] = field(default_factory=list)


@asynccontextmanager
async def lifespan(
    app: ASGIApp, *, state: dict[str, Any] | None = None
) -> AsyncIterator[LifespanSession]:
    """Run *app*'s lifespan around the block: start-up on entry, shutdown on exit.

    Raises ``LifespanFailed`` when the app answers ``*.failed``; an exception the app
    raises propagates. ``session.state`` is the dict to pass as ``state=`` to the
    request scopes.
    """
    state = {} if state is None else state
    scope = lifespan_scope(state)
    session = LifespanSession(scope=scope, state=state)
    to_app, from_driver = anyio.create_memory_object_stream[Message](2)
    answers, answer_stream = anyio.create_memory_object_stream[Message](2)

    async def receive() -> Message:
        return await from_driver.receive()

    async def send(message: Message) -> None:
        session.messages.append(message)
        await answers.send(message)

    app_errors: list[Exception] = []

    async def run_app() -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:  # handed to the test by step(), not via the task group
            app_errors.append(exc)
        finally:
            answers.close()

    async def step(event: str) -> None:
        await to_app.send({"type": f"lifespan.{event}"})
        answer: Message | None
        try:
            answer = await answer_stream.receive()
        except anyio.EndOfStream:
            answer = None
        if answer is None:  # raised outside the except block: the app's chain stays intact
            if app_errors:
                raise app_errors[0]
            raise LifespanFailed(f"the app returned without answering lifespan.{event}")
        if answer.get("type") == f"lifespan.{event}.failed":
            raise LifespanFailed(answer.get("message", ""))

    with to_app, from_driver, answers, answer_stream:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_app)
                await step("startup")
                yield session
                await step("shutdown")
        except BaseExceptionGroup as group:
            # The task group wraps what the app raised; hand the test the error itself.
            if len(group.exceptions) != 1:
                raise
            error: BaseException | None = group.exceptions[0]
        else:
            error = None
        if error is not None:
            raise error

        if app_errors:  # the app raised after it answered the shutdown
            raise app_errors[0]


async def run_lifespan(app: ASGIApp, *, state: dict[str, Any] | None = None) -> LifespanSession:
    """Start *app* up and shut it down again; return what it sent."""
    async with lifespan(app, state=state) as session:
        pass
    return session
