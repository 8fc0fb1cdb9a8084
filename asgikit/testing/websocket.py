"""The websocket client of the test driver: ``websocket`` and the ``WebSocketSession``
it records."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from asgikit.testing.http import Response
from asgikit.testing.scopes import DISCONNECT, Disconnect, HeadersArg, websocket_scope
from asgikit.types import ASGIApp, Message, Scope

__all__ = ["WebSocketSession", "websocket"]


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
    client = _WebSocketClient(WebSocketSession(scope=scope), list(frames))
    try:
        await app(scope, client.receive, client.send)
    except BaseException as exc:
        if raise_app_exceptions or not isinstance(exc, Exception):
            raise
        client.session.exception = exc
    return client.session


class _WebSocketClient:
    """The client's side of one connection: the scripted frames in, the session recorded."""

    def __init__(self, session: WebSocketSession, script: list[str | bytes | Disconnect]) -> None:
        self.session = session
        self.script = script
        self.answered = anyio.Event()
        self.position = -1  # -1: the connect is still to be sent

    async def receive(self) -> Message:
        if self.position < 0:
            self.position = 0
            message: Message = {"type": "websocket.connect"}
        else:
            await self.answered.wait()
            message = self._next_message()
        self.session.received.append(message)
        return message

    def _next_message(self) -> Message:
        closed = self.session.close_code
        if not self.session.accepted or closed is not None:
            return {"type": "websocket.disconnect", "code": closed or 1000}
        script = self.script
        position = self.position
        item = script[position] if position < len(script) else DISCONNECT
        if not isinstance(item, Disconnect):
            self.position += 1
            key = "text" if isinstance(item, str) else "bytes"
            return {"type": "websocket.receive", key: item}
        script[position:] = [item]  # later receives repeat the same close
        self.position = len(script) - 1
        return {"type": "websocket.disconnect", "code": item.code}

    async def send(self, message: Message) -> None:
        await anyio.lowlevel.checkpoint()
        self.session.messages.append(message)
        if message.get("type") in ("websocket.accept", "websocket.close") or (
            message.get("type") == "websocket.http.response.start"
        ):
            self.answered.set()
