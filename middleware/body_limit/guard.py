"""One request under BodyLimitMiddleware: the body counted as the app reads it, decoded
when it is compressed, and the answer when a limit is passed.

The app reads the body through ``receive``. When the bytes received pass the limit (or
the decoded bytes pass theirs, or the compressed data turns out corrupt), the chunk that
passed it is not handed on: the app's ``receive()`` returns ``http.disconnect``, as if
the client had gone, and so does every later call. If the app's response had not
started, the middleware has just answered (413, or 400 for corrupt data), before handing
the disconnect over: the client never waits on the app for its answer, and whatever the
app sends from then on is dropped, as a server drops what is sent to a client that left.
If the app's response had started, it is left alone: the app's messages go on to the
server unchanged, and the middleware adds nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Mapping
from typing import Final

from asgikit.answers import answer, decide, plain_text
from asgikit.types import Message, Receive, Scope, Send

from .decoding import DecodeError, Decoder, TooLarge

__all__ = ["TOO_LARGE", "DecodingGuard", "Guard", "dropped", "refuse"]

TOO_LARGE: Final = "Content Too Large"
"""The 413 body: Starlette's words (Python before 3.13 calls 413 "Request Entity Too
Large", RFC 9110 "Content Too Large")."""

_DECISIONS: Final = {413: "body_too_large", 415: "unsupported_encoding"}


async def dropped() -> None:
    """What a send the middleware drops awaits: nothing."""


async def refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    text: str,
    fields: Mapping[str, object],
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """Record the decision and answer with *status* and *text*, without the app.

    Args:
        fields: What the decision records besides its name (``body_limit.reason``...).
        extra: Response headers besides the content type and length.
    """
    decide(scope, _DECISIONS.get(status, "bad_request"), **fields)
    headers, body = plain_text(status, text, extra)
    await answer(scope, receive, send, status, headers, body)


class Guard:
    """The ``receive`` and ``send`` the app gets: the body counted against ``limit``."""

    __slots__ = (
        "_receive",
        "_send",
        "answered",
        "limit",
        "received",
        "refused",
        "scope",
        "started",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.limit = limit
        self.received = 0
        self.started = False  # the app's response start went to the server
        self.refused = False  # a limit was passed: the app sees a disconnect
        self.answered = False  # ... and the middleware answered: the app's sends are dropped

    def send(self, message: Message) -> Awaitable[None]:
        # A plain function returning send's awaitable: no coroutine frame per message
        # (docs/architecture.md, "Speed").
        if self.answered:
            return dropped()
        if message["type"] == "http.response.start":
            self.started = True
        return self._send(message)

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                return await self.refuse(413, TOO_LARGE, "body")
        return message

    async def refuse(self, status: int, text: str, reason: str) -> Message:
        """Answer if the response has not started; the disconnect the app gets instead
        of the message that passed the limit."""
        self.refused = True
        if not self.started:
            self.answered = True
            fields = {"body_limit.reason": reason, "body_limit.received": self.received}
            with contextlib.suppress(OSError):  # the client left meanwhile: no one to answer
                await refuse(self.scope, self._receive, self._send, status, text, fields)
        return {"type": "http.disconnect"}


class DecodingGuard(Guard):
    """A ``Guard`` that also decodes the body, within ``budget`` decoded bytes."""

    __slots__ = ("_decoder", "budget", "coding")

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        limit: int,
        decoder: Decoder,
        budget: int,
        coding: str,
    ) -> None:
        super().__init__(scope, receive, send, limit)
        self._decoder = decoder
        self.budget = budget
        self.coding = coding

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] != "http.request":
            return message
        body = message.get("body", b"")
        self.received += len(body)
        if self.received > self.limit:
            return await self.refuse(413, TOO_LARGE, "body")
        try:
            decoded = self._decoder.decode(body, self.budget)
            if not message.get("more_body", False):
                self._decoder.end()
        except TooLarge:
            return await self.refuse(413, TOO_LARGE, "decompressed")
        except DecodeError:
            return await self.refuse(400, f"Invalid {self.coding} request body", "corrupt")
        self.budget -= len(decoded)
        return {**message, "body": decoded}
