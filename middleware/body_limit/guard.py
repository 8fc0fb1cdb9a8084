"""One request under BodyLimitMiddleware: the body counted as the app reads it, decoded
when it is compressed, and the answer when a limit is passed.

The app reads the body through ``receive``. When the bytes received pass the limit (or
the decoded bytes pass theirs, or the compressed data turns out corrupt), the chunk that
passed it is not handed on: the app's ``receive()`` returns ``http.disconnect``, as if
the client had gone, and so does every later call. If the app's response had not
started, the middleware has just answered (413, or 400 for corrupt data), before handing
the disconnect over: the client never waits on the app for its answer, and whatever the
app sends from then on is dropped, as a server drops what is sent to a client that left.
If the app's response had started, the app's messages go on to the server unchanged;
if the app then returns without finishing its response (as it should, once told the
client left), the middleware raises ``BodyTooLarge``, so that the server aborts the
connection: a response cut short must not look complete.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Mapping
from typing import Final

from asgikit.answers import answer, decide, plain_text
from asgikit.types import Message, Receive, Scope, Send

from .decoding import DecodeError, Decoder, TooLarge

__all__ = ["TOO_LARGE", "BodyTooLarge", "DecodingGuard", "Guard", "dropped", "refuse"]

TOO_LARGE: Final = "Content Too Large"
"""The 413 body: Starlette's words (Python before 3.13 calls 413 "Request Entity Too
Large", RFC 9110 "Content Too Large")."""

_DECISIONS: Final = {413: "body_too_large", 415: "unsupported_encoding"}


class BodyTooLarge(Exception):
    """A request body passed a limit (or turned out corrupt) after the app's response
    had started, and the app left its response unfinished: the exchange was aborted.

    Raised out of the middleware so the server resets the connection.

    Attributes:
        reason: ``"body"``, ``"decompressed"`` or ``"corrupt"``.
        received: The body bytes received when it was refused.
    """

    def __init__(self, reason: str, received: int) -> None:
        super().__init__(f"request body refused ({reason}) after the response started")
        self.reason = reason
        self.received = received


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
        "completed",
        "limit",
        "reason",
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
        self.completed = False  # the app's last body message went to the server
        self.reason = ""

    def send(self, message: Message) -> Awaitable[None]:
        # A plain function returning send's awaitable: no coroutine frame per message
        # (docs/architecture.md, "Speed").
        if self.answered:
            return dropped()
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
        elif kind == "http.response.body" and not message.get("more_body", False):
            self.completed = True
        return self._send(message)

    def finish(self) -> None:
        """After the app returned: raise ``BodyTooLarge`` if the body was refused after
        the response started and the app left the response unfinished."""
        if self.refused and not self.answered and not self.completed:
            fields = {"body_limit.reason": self.reason, "body_limit.received": self.received}
            decide(
                self.scope, "bad_request" if self.reason == "corrupt" else _DECISIONS[413], **fields
            )
            raise BodyTooLarge(self.reason, self.received)

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
        self.reason = reason
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
