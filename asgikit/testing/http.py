"""The http client of the test driver: ``request`` and the ``Response`` it records."""

from __future__ import annotations

import json as _json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.lowlevel

from asgikit.testing.scopes import Disconnect, HeadersArg, http_scope
from asgikit.types import ASGIApp, Message, Scope

__all__ = ["ClientDisconnected", "Response", "request"]


class ClientDisconnected(OSError):
    """Raised by the driver's ``send`` after the client disconnected (as uvicorn does)."""


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
    client = _HttpClient(
        Response(scope=scope), script or [b""], disconnect_after, send_after_disconnect == "raise"
    )
    try:
        await app(scope, client.receive, client.send)
    except BaseException as exc:
        if raise_app_exceptions or not isinstance(exc, Exception):
            raise
        client.response.exception = exc
    finally:
        client.ended.set()
    return client.response


class _HttpClient:
    """The client's side of one request: the scripted body in, the response recorded."""

    def __init__(
        self,
        response: Response,
        script: list[bytes | Disconnect],
        disconnect_after: int | None,
        raise_after_disconnect: bool,
    ) -> None:
        self.response = response
        self.script = script
        self.position = 0
        self.disconnect_after = disconnect_after
        self.raise_after_disconnect = raise_after_disconnect
        self.trailers_announced = False
        self.gone = anyio.Event()
        self.ended = anyio.Event()

    def disconnect(self) -> None:
        self.response.disconnected = True
        self.gone.set()

    async def receive(self) -> Message:
        if self.response.disconnected:
            message: Message = {"type": "http.disconnect"}
        elif self.position < len(self.script):
            message = self._next_chunk()
        else:
            await self._until_done()
            message = {"type": "http.disconnect"}
        self.response.received.append(message)
        return message

    def _next_chunk(self) -> Message:
        item = self.script[self.position]
        self.position += 1
        if isinstance(item, Disconnect):
            self.disconnect()
            return {"type": "http.disconnect"}
        more = self.position < len(self.script)
        return {"type": "http.request", "body": item, "more_body": more}

    async def _until_done(self) -> None:
        # Like a server: after the body, wait until the response is done or the
        # client goes away, then report the disconnect.
        async with anyio.create_task_group() as tg:

            async def wait_gone() -> None:
                await self.gone.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(wait_gone)
            await self.ended.wait()
            tg.cancel_scope.cancel()

    async def send(self, message: Message) -> None:
        await anyio.lowlevel.checkpoint()
        response = self.response
        if response.disconnected:
            response.dropped.append(message)
            if self.raise_after_disconnect:
                raise ClientDisconnected("the client disconnected")
            return
        response.messages.append(message)
        if self.disconnect_after is not None and len(response.messages) >= self.disconnect_after:
            self.disconnect()
        if message.get("type") == "http.response.start":
            self.trailers_announced = bool(message.get("trailers", False))
        elif _ends_response(message, self.trailers_announced):
            self.ended.set()
