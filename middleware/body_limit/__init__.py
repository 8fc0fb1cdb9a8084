"""BodyLimitMiddleware: request body limits (per path and method), optional request-body
decompression with a cap on the decoded size, and a websocket message limit.

Theory of operation
===================

Before the app runs, the request's headers decide what can be decided: a
``Content-Length`` over the limit is answered 413 and one that does not parse 400, and
the app is never called; with ``decompress``, a content coding the middleware cannot
decode is answered 415. Otherwise the app runs with a ``receive`` that counts the body as
the app reads it (``guard.py``): a client that sends no length, or more than it said, is
stopped at the chunk that passes the limit. The app then sees ``http.disconnect``, and
the client a 413 unless the app's response had already started (then, if the app
leaves its response unfinished, ``BodyTooLarge`` is raised so the server aborts the
connection). A compressed body is
decoded chunk by chunk within a budget (``decoding.py``), so a bomb is refused after at
most the cap's bytes were produced; the app sees the decoded body, and a scope without
``Content-Encoding`` and ``Content-Length``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final

from asgikit.answers import decide
from asgikit.options import flag
from asgikit.paths import PathMatcher
from asgikit.scopes import derive_scope
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

from .decoding import Decoder, decoder_factories
from .guard import TOO_LARGE, BodyTooLarge, DecodingGuard, Guard, dropped, refuse
from .rules import (
    INVALID,
    Limits,
    RuleSpec,
    content_codings,
    content_length,
    limit_table,
    resolve,
    size_option,
)

__all__ = ["DEFAULT_MAX_BODY_SIZE", "BodyLimitMiddleware", "BodyTooLarge", "RuleSpec"]

DEFAULT_MAX_BODY_SIZE: Final = 10 * 1024 * 1024
"""10 MiB: Starlette's documented example, and room for any JSON or form post; an upload
endpoint that needs more gets a rule."""

_MESSAGE_TOO_BIG: Final = 1009  # RFC 6455 7.4.1
_WS_REASON: Final = "message too big"
_WS_CLOSE: Final = {"type": "websocket.close", "code": _MESSAGE_TOO_BIG, "reason": _WS_REASON}
_WS_GONE: Final = {"type": "websocket.disconnect", "code": _MESSAGE_TOO_BIG, "reason": _WS_REASON}
_DROPPED_HEADERS: Final = frozenset({b"content-encoding", b"content-length"})


def _too_big(message: Message, limit: int) -> bool:
    """Is a ``websocket.receive`` message over *limit* bytes (text counted as UTF-8)?"""
    data = message.get("bytes")
    if data is not None:
        return len(data) > limit
    text = message.get("text") or ""
    if len(text) > limit:  # a character is at least one byte
        return True
    # At most four bytes a character: only a text near the limit needs encoding.
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit


class BodyLimitMiddleware:
    """Limit the size of request bodies, and of websocket messages.

    A body over the limit gets ``413 Content Too Large``: before the app runs when
    ``Content-Length`` says so, otherwise when the app reads past the limit (the app
    then sees ``http.disconnect``). A body exactly at the limit passes.

    Args:
        app: The ASGI app to wrap.
        max_body_size: The most bytes a request body may have, as received
            (compressed, when it is); ``None`` for no limit. Starlette's option name.
        max_decompressed_size: With ``decompress``: the most bytes a body may decode
            to; ``None`` for the body limit in force for the request.
        decompress: Decode request bodies sent with ``Content-Encoding`` gzip,
            deflate, br or zstd (the ``zstd`` extra), so the app reads plain bytes;
            other codings, and more than one, are answered 415, corrupt data 400.
        rules: Per path and method limits (``RuleSpec`` mappings: ``path`` or
            ``route``, ``methods``, ``max_body_size``, ``max_decompressed_size``); the
            most specific matching rule wins, the options above apply elsewhere.
        exclude_paths: Path patterns left alone (``asgikit.paths``: ``/health`` covers
            ``/health/live``; ``/static*`` a text prefix): no limit, no decoding.
        max_websocket_message_size: The most bytes a websocket message may have (text
            counted as UTF-8); a larger one closes the connection with 1009. ``None``
            for no limit (the server's own still applies).

    Raises:
        ValueError: An option has a bad value.
        TypeError: An option has the wrong type.
    """

    __slots__ = ("_decoders", "_default", "_excluded", "_table", "_ws_limit", "app")

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_size: int | None = DEFAULT_MAX_BODY_SIZE,
        max_decompressed_size: int | None = None,
        decompress: bool = False,
        rules: Sequence[RuleSpec] = (),
        exclude_paths: str | Sequence[str] = (),
        max_websocket_message_size: int | None = None,
    ) -> None:
        self.app = app
        body = size_option(max_body_size, "max_body_size")
        decoded = size_option(max_decompressed_size, "max_decompressed_size")
        self._default = resolve(body, decoded)
        self._table = limit_table(rules, self._default, decoded) if rules else None
        self._decoders = decoder_factories() if flag(decompress, "decompress") else None
        excluded = PathMatcher(exclude_paths)
        self._excluded = excluded if excluded else None  # None: no test per request
        self._ws_limit = size_option(max_websocket_message_size, "max_websocket_message_size")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        excluded = self._excluded
        if (kind != "http" and kind != "websocket") or (
            excluded is not None and excluded(scope["path"])
        ):
            await self.app(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            table = self._table
            limits = self._default if table is None else table.match(scope["path"], scope["method"])
            await self._http(scope, receive, send, limits)

    async def _http(self, scope: Scope, receive: Receive, send: Send, limits: Limits) -> None:
        headers = scope["headers"]
        limit = limits.body
        length = content_length(headers)
        if length == INVALID:
            fields: dict[str, object] = {"body_limit.reason": "content_length"}
            await refuse(scope, receive, send, 400, "Invalid Content-Length", fields)
        elif limit is not None and length is not None and length > limit:
            fields = {"body_limit.reason": "content_length", "body_limit.length": length}
            await refuse(scope, receive, send, 413, TOO_LARGE, fields)
        elif self._decoders is not None and (codings := content_codings(headers)):
            await self._decode(scope, receive, send, limits, self._decoders, codings)
        elif limit is None:
            await self.app(scope, receive, send)
        else:
            guard = Guard(scope, receive, send, limit)
            await self.app(scope, guard.receive, guard.send)
            guard.finish()

    async def _decode(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        limits: Limits,
        decoders: Mapping[str, Callable[[], Decoder]],
        codings: list[str],
    ) -> None:
        new = decoders.get(codings[0]) if len(codings) == 1 else None
        if new is None:  # RFC 9110 12.5.3: say which codings would be decoded
            accepted = (b"accept-encoding", ", ".join(decoders).encode("ascii"))
            fields = {"body_limit.reason": "content_encoding"}
            text = "Unsupported Content-Encoding"
            await refuse(scope, receive, send, 415, text, fields, (accepted,))
            return
        decoder = new()
        headers = [field for field in scope["headers"] if field[0] not in _DROPPED_HEADERS]
        budget = sys.maxsize if limits.decoded is None else limits.decoded
        limit = sys.maxsize if limits.body is None else limits.body
        guard = DecodingGuard(scope, receive, send, limit, decoder, budget, codings[0])
        await self.app(derive_scope(scope, {"headers": headers}), guard.receive, guard.send)
        guard.finish()

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self._ws_limit
        if limit is None:
            await self.app(scope, receive, send)
            return
        closed = False

        async def guarded_receive() -> Message:
            nonlocal closed
            if closed:
                return {**_WS_GONE}
            message = await receive()
            if message["type"] == "websocket.receive" and _too_big(message, limit):
                closed = True
                decide(scope, "message_too_large", **{"body_limit.limit": limit})
                with contextlib.suppress(OSError):  # the client left meanwhile
                    await send({**_WS_CLOSE})
                return {**_WS_GONE}
            return message

        def guarded_send(message: Message) -> Awaitable[None]:
            # Once the middleware closed, the app's sends go nowhere (it was told).
            return dropped() if closed else send(message)

        await self.app(scope, guarded_receive, guarded_send)
