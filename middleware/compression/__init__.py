"""CompressionMiddleware: zstd, br and gzip, correct for every ASGI message."""

from __future__ import annotations

import enum
import functools
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, Literal

import anyio
import anyio.lowlevel
import anyio.to_thread

from asgikit.headers import add_vary, lowercase_names
from asgikit.options import bounded_int, flag, string_list
from asgikit.paths import PathMatcher
from asgikit.scopes import derive_scope
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

from .codecs import ENCODINGS, Codec, Stream, make_codec, resolve_encodings
from .negotiation import (
    CACHEABLE_VALUE_BYTES,
    DEFAULT_COMPRESSIBLE_TYPES,
    SKIP,
    SPECIAL_FIELDS,
    STREAM_AT_ONCE,
    UNTOUCHED_STATUSES,
    VARY_TOKEN,
    ContentTypes,
    encoded_fields,
    negotiate_encoding,
    vetoed,
)

__all__ = ["DEFAULT_COMPRESSIBLE_TYPES", "DEFAULT_ENCODINGS", "CompressionMiddleware"]

DEFAULT_ENCODINGS: Final = ENCODINGS
"""zstd, br, gzip. Left as the default, it offers those whose library is installed."""

_ZEROCOPY: Final = "http.response.zerocopysend"
_PATHSEND: Final = "http.response.pathsend"


class _State(enum.Enum):
    """Where one response is.

    ``send_compressed`` keeps the state while the response needs no object of its own
    (the usual response: a start, then one body message); a ``_Response`` takes over from
    a second body message on, or from the start of an event stream, and keeps its own::

        START --a start left alone (small, its type, status or fields; identity)--> PASSING
        START --a start to compress--> HELD --its one, final body message--> PASSING
                                       HELD --anything else--> STREAMED
        START --the start of an event stream or NDJSON--> STREAMED

        in the _Response:
        BUFFERING --minimum_size buffered, an event stream, flush="always"--> COMPRESSING
        BUFFERING --the final body message--> PASSING (compressed in one call, or not)
        BUFFERING --pathsend or an unknown message--> PASSING (declined)
        COMPRESSING --the final body message--> PASSING
    """

    START = "before http.response.start"
    HELD = "the start held; its first body message decides"
    STREAMED = "more than one body message: a _Response handles the rest"
    BUFFERING = "the start held; body chunks buffered until the verdict"
    COMPRESSING = "the encoded start sent; every chunk compressed and flushed"
    PASSING = "what is left goes as it is"


# Module-level names, as h11 has: an Enum member is a class attribute lookup that costs
# more than a global one, and send_compressed compares one per message.
# bench_compression, below minimum: -0.90 µs of 4.81 (spread 0.65), 2026-12-07
_START: Final = _State.START
_HELD: Final = _State.HELD
_STREAMED: Final = _State.STREAMED
_BUFFERING: Final = _State.BUFFERING
_COMPRESSING: Final = _State.COMPRESSING
_PASSING: Final = _State.PASSING

# A start held for compressing: (the start, its Content-Length or -1, the codec, the
# content kind: COMPRESS or STREAM_AT_ONCE).
_Held = tuple[Message, int, Codec, int]

_limiter_var: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar(
    "asgikit_compression_limiter"
)


async def _nothing() -> None:
    # A coroutine, not a cheaper ready-made awaitable: callers may hand what a send
    # returns to create_task or start_soon, which take coroutines only.
    return None


async def _in_thread(function: Callable[[bytes], bytes], data: bytes) -> bytes:
    """``function(data)`` in a worker thread, at most one per CPU at a time, under a limit
    of its own (per event loop), so sync endpoints never wait behind compression."""
    try:
        limiter = _limiter_var.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(os.cpu_count() or 1)
        _limiter_var.set(limiter)
    return await anyio.to_thread.run_sync(function, data, limiter=limiter)


def _without_zerocopy(scope: Scope, extensions: dict[str, object]) -> Scope:
    """A file sent with sendfile cannot join a compressed body: not offered, the app sends
    body messages (compressed or not). pathsend is kept: see _Response."""
    others = {key: value for key, value in extensions.items() if key != _ZEROCOPY}
    return derive_scope(scope, {"extensions": others})


class CompressionMiddleware:
    """Compress responses with zstd, br or gzip, as the client's ``Accept-Encoding`` allows.

    Args:
        app: The ASGI app to wrap.
        minimum_size: Responses smaller than this many bytes are sent as they are.
        encodings: Codings to offer, most preferred first (a comma-separated str or an
            iterable); the client's q-values rank them, this order breaks ties. Left as
            the default, those whose library is installed; naming one whose library is
            missing is an error.
        gzip_level: zlib level, 1 (fastest) to 9.
        brotli_quality: brotli quality, 0 (fastest) to 11.
        zstd_level: zstd level, up to 22; negative levels trade ratio for speed.
        compressible_types: Media types (``application/json``), wildcards (``text/*``)
            and suffixes (``+json``) worth compressing.
        exclude_paths: Path prefixes never compressed (``/metrics`` covers
            ``/metrics/...``).
        flush: ``"auto"`` holds the first chunks of a streamed response until
            ``minimum_size`` bytes (or its end) to decide, except event streams and
            NDJSON, which go at once; ``"always"`` never holds a chunk back.
        thread_minimum_size: Chunks of at least this many bytes are compressed in a
            worker thread, so the event loop is not blocked; None: never.
        skip_set_cookie: Leave responses that set cookies uncompressed (BREACH).

    Raises:
        TypeError, ValueError: An option is invalid (at start-up, never per request).
    """

    __slots__ = (
        "_choose",
        "_choose_uncached",
        "_content_kind",
        "_excluded",
        "_flush_always",
        "_thread_size",
        "app",
        "codecs",
        "flush",
        "minimum_size",
        "skip_set_cookie",
        "thread_minimum_size",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        minimum_size: int = 500,
        encodings: str | Iterable[str] = DEFAULT_ENCODINGS,
        gzip_level: int = 6,
        brotli_quality: int = 4,
        zstd_level: int = 3,
        compressible_types: str | Iterable[str] = DEFAULT_COMPRESSIBLE_TYPES,
        exclude_paths: str | Iterable[str] = (),
        flush: Literal["auto", "always"] = "auto",
        thread_minimum_size: int | None = 128 * 1024,
        skip_set_cookie: bool = False,
    ) -> None:
        self.app = app
        self.minimum_size = bounded_int(minimum_size, "minimum_size", 0)
        levels = {
            "gzip_level": bounded_int(gzip_level, "gzip_level", 1, 9),
            "brotli_quality": bounded_int(brotli_quality, "brotli_quality", 0, 11),
            "zstd_level": bounded_int(zstd_level, "zstd_level", -(2**17), 22),
        }
        default = encodings is DEFAULT_ENCODINGS
        names = resolve_encodings(None if default else string_list(encodings, "encodings"))
        self.codecs: tuple[Codec, ...] = tuple(make_codec(name, **levels) for name in names)
        types = string_list(compressible_types, "compressible_types")
        if not types:
            raise ValueError("compressible_types is empty: nothing would ever be compressed")
        self._content_kind = functools.lru_cache(maxsize=256)(ContentTypes(types).kind)
        excluded = PathMatcher(exclude_paths)
        self._excluded = excluded if excluded else None
        if flush not in ("auto", "always"):
            raise ValueError(f"flush must be 'auto' or 'always', not {flush!r}")
        self.flush = flush
        self._flush_always = flush == "always"
        if thread_minimum_size is not None:
            bounded_int(thread_minimum_size, "thread_minimum_size", 0)
        self.thread_minimum_size = thread_minimum_size
        self._thread_size = sys.maxsize if thread_minimum_size is None else thread_minimum_size
        self.skip_set_cookie = flag(skip_set_cookie, "skip_set_cookie")

        by_token = {codec.token: codec for codec in self.codecs}
        tokens = tuple(by_token)

        def choose(accept: bytes | None) -> Codec | None:
            token = negotiate_encoding(accept, tokens)
            return None if token is None else by_token[token]

        self._choose_uncached = choose
        self._choose = functools.lru_cache(maxsize=128)(choose)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        excluded = self._excluded
        if scope["type"] != "http" or (excluded is not None and excluded(scope["path"])):
            await self.app(scope, receive, send)
            return
        extensions = scope.get("extensions")
        if extensions and _ZEROCOPY in extensions:
            scope = _without_zerocopy(scope, extensions)
        state = _START  # see _State
        held: _Held | None = None  # while HELD
        response: _Response | None = None  # from STREAMED on

        # A plain function returning the downstream awaitable is a valid ASGI send, with
        # no coroutine frame per message: docs/architecture.md, Speed (0.14 µs a layer).
        def send_compressed(message: Message) -> Awaitable[None]:
            nonlocal state, held, response
            if state is _PASSING:
                return send(message)
            if state is _START:
                if message["type"] != "http.response.start":
                    return send(message)  # early hints and the like, before the start
                verdict = self._judge_start(message, scope)
                if not isinstance(verdict, tuple):  # the start to send, as it is or varying
                    state = _PASSING
                    return send(verdict)
                if verdict[3] != STREAM_AT_ONCE:
                    held, state = verdict, _HELD
                    return _nothing()
                response, state = _Response(self, verdict, send, scope), _STREAMED
                return response.opening()
            if state is _HELD:
                assert held is not None
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    state = _PASSING
                    return self._whole(held, send, message, message.get("body", b""), scope)
                response, state = _Response(self, held, send, scope), _STREAMED
            assert response is not None
            return response.send(message)

        await self.app(scope, receive, send_compressed)

    def _judge_start(self, message: Message, scope: Scope) -> Message | _Held:
        """The start to send now (as it is, or varying on Accept-Encoding), or held."""
        headers = message.get("headers", ())
        length = -1
        content_type = None
        special = False
        for name, value in headers:
            if name == b"content-length":
                if value.isdigit():
                    length = int(value)
                    if length < self.minimum_size:  # nothing else needs a look
                        return message
            elif name == b"content-type":
                content_type = value
            elif name in SPECIAL_FIELDS:
                special = True
        if content_type is None:
            # An app that writes Content-Type (Django): judged again by lowercase names.
            lowered = lowercase_names(headers)
            if lowered is None:
                return message
            return self._judge_start({**message, "headers": lowered}, scope)
        status = message["status"]
        if (
            status < 200
            or status in UNTOUCHED_STATUSES
            or (special and vetoed(headers, self.skip_set_cookie))
            or (kind := self._content_kind(content_type)) == SKIP
        ):
            return message
        codec = self._negotiate(scope)
        if codec is None:  # identity; the representation depends on it all the same
            return {**message, "headers": add_vary(headers, VARY_TOKEN)}
        return (message, length, codec, kind)

    def _negotiate(self, scope: Scope) -> Codec | None:
        """The codec the request's Accept-Encoding asks for; None for identity."""
        accept = None  # repeated Accept-Encoding fields are one list
        for name, value in scope.get("headers", ()):
            if name == b"accept-encoding":
                accept = value if accept is None else accept + b"," + value
        if accept is not None and len(accept) > CACHEABLE_VALUE_BYTES:
            return self._choose_uncached(accept)
        return self._choose(accept)

    async def _whole(
        self, held: _Held, down: Send, message: Message, body: bytes, scope: Scope
    ) -> None:
        """Send a response whose whole body is known: compressed in one call, or as it is."""
        start, length, codec, _ = held
        size = len(body)
        if size < self.minimum_size:
            if length >= 0 and scope.get("method") == "HEAD":
                # The fields a GET would get, by its Content-Length, less the compressed
                # length, unknown. (A HEAD answered with the body gets it compressed.)
                fields = encoded_fields(start.get("headers", ()), codec.header)
                await down({**start, "headers": fields})
                await down({**message, "body": b""})
                return
            await down(start)
            await down(message if body is message.get("body") else {**message, "body": body})
            return
        compress = codec.compress
        out = compress(body) if size < self._thread_size else await _in_thread(compress, body)
        if len(out) >= size:  # incompressible after all: identity, which still varies
            await down({**start, "headers": add_vary(start.get("headers", ()), VARY_TOKEN)})
            await down(message if body is message.get("body") else {**message, "body": body})
            return
        fields = encoded_fields(start.get("headers", ()), codec.header)
        if not start.get("trailers", False):  # with trailers, the framing is chunked
            fields.append((b"content-length", b"%d" % len(out)))
        await down({**start, "headers": fields})
        await down({**message, "body": out})


class _Response:
    """A response that is more than one body message: buffered, streamed or declined."""

    __slots__ = (
        "buffered",
        "chunks",
        "down",
        "held",
        "kind",
        "middleware",
        "scope",
        "state",
        "stream",
    )

    stream: Stream

    def __init__(
        self, middleware: CompressionMiddleware, held: _Held, down: Send, scope: Scope
    ) -> None:
        self.middleware = middleware
        self.held = held
        self.kind = held[3]
        self.down = down
        self.scope = scope
        self.state = _BUFFERING
        self.chunks: list[bytes] = []
        self.buffered = 0

    def opening(self) -> Awaitable[None]:
        """After the start of an event stream: committed at once when its length is
        unknown, so the client sees the headers before the first event; but where the
        server offers pathsend, which must go with the start untouched, at its first body."""
        if self.held[1] < 0 and _PATHSEND not in self.scope.get("extensions", ()):
            return self._begin(None)
        return _nothing()

    def send(self, message: Message) -> Awaitable[None]:
        state = self.state
        if state is _PASSING:
            return self.down(message)
        if message["type"] != "http.response.body":
            if state is _BUFFERING:
                return self._decline(message)
            return self.down(message)  # trailers, push, debug, unknown: in order, untouched
        if state is _BUFFERING:
            return self._hold(message)
        # Compressing: a plain call returning the downstream awaitable, no coroutine.
        body = message.get("body", b"")
        if message.get("more_body", False):
            if not body:
                return _nothing()  # an empty chunk has nothing to flush: all before it was
            step = self.stream.compress
        else:
            step = self.stream.finish
            self.state = _PASSING
        if len(body) >= self.middleware._thread_size:
            return self._send_from_thread(step, message, body)
        return self.down({**message, "body": step(body)})

    async def _send_from_thread(
        self, step: Callable[[bytes], bytes], message: Message, body: bytes
    ) -> None:
        await self.down({**message, "body": await _in_thread(step, body)})

    def _take_buffer(self, body: bytes) -> bytes:
        chunks = self.chunks
        if not chunks:
            return body
        chunks.append(body)
        self.chunks = []
        self.buffered = 0
        return b"".join(chunks)

    async def _hold(self, message: Message) -> None:
        middleware = self.middleware
        body = message.get("body", b"")
        if message.get("more_body", False):
            if body:
                self.chunks.append(body)
                self.buffered += len(body)
            if (
                self.buffered >= middleware.minimum_size
                or self.kind == STREAM_AT_ONCE
                or middleware._flush_always
            ):
                await self._begin(message)
            return
        self.state = _PASSING
        whole = self._take_buffer(body)
        await middleware._whole(self.held, self.down, message, whole, self.scope)

    async def _begin(self, message: Message | None) -> None:
        """Send the encoded start and what was buffered; compress from here on."""
        start, length, codec, _ = self.held
        fields = encoded_fields(start.get("headers", ()), codec.header)
        self.stream = codec.stream(length)
        self.state = _COMPRESSING
        await self.down({**start, "headers": fields})
        if message is not None:
            data = self._take_buffer(b"")
            if data:
                await self.send({**message, "body": data})

    async def _decline(self, message: Message) -> None:
        """pathsend, or an unknown message, before the verdict: the response goes as it is."""
        self.state = _PASSING
        await self.down(self.held[0])
        if self.chunks:
            data = self._take_buffer(b"")
            await self.down({"type": "http.response.body", "body": data, "more_body": True})
        await self.down(message)
