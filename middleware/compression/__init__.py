"""CompressionMiddleware: zstd, br and gzip, correct for every ASGI message."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Literal

import anyio
import anyio.lowlevel
import anyio.to_thread

from asgikit.headers import add_vary, lowercase_names
from asgikit.options import string_list
from asgikit.paths import PathMatcher
from asgikit.scopes import derive_scope
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

from .codecs import ENCODINGS, Codec, Stream, check_int, make_codec, resolve_encodings
from .negotiation import (
    ADDED_VARY,
    CACHEABLE_VALUE_BYTES,
    COMPRESS,
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

# The state of one request, in one closure variable (cheap to build): None before the
# start; _PASS once the response goes through as it is; a _Held start, waiting for its
# first body message; then a _Response, for anything but one body message.
_PASS: Final = object()
# (start, its Content-Length or -1, the codec, whether a SPECIAL_FIELDS field is present)
_Held = tuple[Message, int, Codec, bool]

# The states of a _Response.
_HOLDING: Final = 0  # start held; body chunks buffered until the verdict
_COMPRESSING: Final = 1  # encoded start sent; every chunk compressed and flushed
_PASSING: Final = 2  # the verdict is identity, or the body ended: the rest goes as it is

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
        self.minimum_size = check_int("minimum_size", minimum_size, 0)
        levels = {
            "gzip_level": check_int("gzip_level", gzip_level, 1, 9),
            "brotli_quality": check_int("brotli_quality", brotli_quality, 0, 11),
            "zstd_level": check_int("zstd_level", zstd_level, -(2**17), 22),
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
            check_int("thread_minimum_size", thread_minimum_size, 0)
        self.thread_minimum_size = thread_minimum_size
        self._thread_size = sys.maxsize if thread_minimum_size is None else thread_minimum_size
        if not isinstance(skip_set_cookie, bool):
            raise TypeError(f"skip_set_cookie must be a bool, not {skip_set_cookie!r}")
        self.skip_set_cookie = skip_set_cookie

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
            # A file sent with sendfile cannot join a compressed body: not offered, the app
            # sends body messages (compressed or not). pathsend is kept: see _Response.
            others = {key: value for key, value in extensions.items() if key != _ZEROCOPY}
            scope = derive_scope(scope, {"extensions": others})
        state: Any = None  # see _PASS

        # A plain function returning the downstream awaitable is a valid ASGI send and
        # saves a coroutine frame on every message that passes untouched. The usual
        # response, one start and one body message, needs no object: see _whole.
        def send_compressed(message: Message) -> Awaitable[None]:
            nonlocal state
            if state is _PASS:
                return send(message)
            if state is None:
                if message["type"] != "http.response.start":
                    return send(message)  # early hints and the like, before the start
                headers = message.get("headers", ())
                minimum = self.minimum_size
                while True:  # twice at most: again with lowercase names, if need be
                    length = -1
                    content_type = None
                    special = False
                    for name, value in headers:
                        if name == b"content-length":
                            if value.isdigit():
                                length = int(value)
                                if length < minimum:  # nothing else needs a look
                                    state = _PASS
                                    return send(message)
                        elif name == b"content-type":
                            content_type = value
                        elif name in SPECIAL_FIELDS:
                            special = True
                    if content_type is not None:
                        break
                    lowered = lowercase_names(headers)
                    if lowered is None:
                        break
                    # An app that writes Content-Type (Django): look again, lowercase.
                    headers = lowered
                    message = {**message, "headers": lowered}
                status = message["status"]
                if (
                    content_type is None
                    or status < 200
                    or status in UNTOUCHED_STATUSES
                    or (special and vetoed(headers, self.skip_set_cookie))
                    or (kind := self._content_kind(content_type)) == SKIP
                ):
                    state = _PASS
                    return send(message)
                accept = None  # repeated Accept-Encoding fields are one list
                for name, value in scope.get("headers", ()):
                    if name == b"accept-encoding":
                        accept = value if accept is None else accept + b"," + value
                if accept is not None and len(accept) > CACHEABLE_VALUE_BYTES:
                    codec = self._choose_uncached(accept)
                else:
                    codec = self._choose(accept)
                if codec is None:  # identity; the representation depends on it all the same
                    state = _PASS
                    return send({**message, "headers": add_vary(headers, VARY_TOKEN)})
                state = (message, length, codec, special)
                if kind == STREAM_AT_ONCE:
                    response = state = _Response(self, state, kind, send, scope)
                    return response.opening()
                return _nothing()
            if type(state) is tuple:
                held: _Held = state
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    state = _PASS
                    return self._whole(held, send, message, message.get("body", b""), scope)
                state = _Response(self, held, COMPRESS, send, scope)
            ongoing: _Response = state
            return ongoing.send(message)

        await self.app(scope, receive, send_compressed)

    async def _whole(
        self, held: _Held, down: Send, message: Message, body: bytes, scope: Scope
    ) -> None:
        """Send a response whose whole body is known: compressed in one call, or as it is."""
        start, length, codec, special = held
        size = len(body)
        if size < self.minimum_size:
            if length >= 0 and scope.get("method") == "HEAD":
                # The fields a GET would get, by its Content-Length, less the compressed
                # length, unknown. (A HEAD answered with the body gets it compressed.)
                fields = encoded_fields(start.get("headers", ()), special, codec.header)
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
        if special:
            fields = encoded_fields(start.get("headers", ()), special, codec.header)
        else:  # encoded_fields' usual case, inlined
            fields = []
            for field in start.get("headers", ()):
                if field[0] != b"content-length":
                    fields.append(field)
            fields.append(ADDED_VARY)
            fields.append(codec.header)
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
        self, middleware: CompressionMiddleware, held: _Held, kind: int, down: Send, scope: Scope
    ) -> None:
        self.middleware = middleware
        self.held = held
        self.kind = kind
        self.down = down
        self.scope = scope
        self.state = _HOLDING
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
        if state == _PASSING:
            return self.down(message)
        if message["type"] != "http.response.body":
            if state == _HOLDING:
                return self._decline(message)
            return self.down(message)  # trailers, push, debug, unknown: in order, untouched
        if state == _HOLDING:
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
        start, length, codec, special = self.held
        fields = encoded_fields(start.get("headers", ()), special, codec.header)
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
