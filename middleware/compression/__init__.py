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
_DEFAULT_GZIP_LEVEL: Final = 6


class _State(enum.Enum):
    """Where one response is.

    The start of a response to compress is held until its first body message, which
    decides; never longer. ``send_compressed`` keeps the state while the response needs
    no object of its own (the usual response: a start, then one body message); a
    ``_Response`` takes over from any other first message on, and keeps its own::

        START --a start left alone (small, its type, status or fields; identity)--> PASSING
        START --a start to compress--> HELD --its one, final body message--> PASSING
                                       HELD --anything else--> STREAMED
        START --no Content-Length, and an event stream or NDJSON, or flush="always"
                (unless pathsend is offered)--> STREAMED (the encoded start sent at once)

        in the _Response:
        HELD --a body message with more to come--> COMPRESSING (from that first chunk)
        HELD --pathsend or an unknown message--> PASSING (declined: the start as it was)
        COMPRESSING --the final body message--> PASSING
    """

    START = "before http.response.start"
    HELD = "the start held; its first body message decides"
    STREAMED = "not one final body after the start: a _Response handles the rest"
    COMPRESSING = "the encoded start sent; every chunk compressed and flushed"
    PASSING = "what is left goes as it is"


# Module-level names, as h11 has: an Enum member is a class attribute lookup that costs
# more than a global one, and send_compressed compares one per message.
# bench_compression, below minimum: -0.90 µs of 4.81 (spread 0.65), 2026-12-07
_START: Final = _State.START
_HELD: Final = _State.HELD
_STREAMED: Final = _State.STREAMED
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


def _gzip_level(gzip_level: int, compresslevel: int | None) -> int:
    """gzip_level, or Starlette's compresslevel for it: a compatibility alias, no warning
    (a switch from Starlette's GZipMiddleware is one line); both given is an error."""
    if compresslevel is None:
        return bounded_int(gzip_level, "gzip_level", 1, 9)
    if gzip_level != _DEFAULT_GZIP_LEVEL:
        raise TypeError("compresslevel is Starlette's name for gzip_level: give one of them")
    return bounded_int(compresslevel, "compresslevel", 1, 9)


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
        exclude_content_types: Media types never compressed, though compressible_types
            lists them; as Starlette's GZipMiddleware option (parameters ignored).
        exclude_paths: Path prefixes never compressed (``/metrics`` covers
            ``/metrics/...``).
        flush: When a response without ``Content-Length`` starts out. ``"auto"`` holds
            its start until the first body message, which decides (a stream is
            compressed from its first chunk, whatever its size), except event streams
            and NDJSON, whose start goes at once; ``"always"`` sends every such start at
            once, committed to compressing.
        thread_minimum_size: Chunks of at least this many bytes are compressed in a
            worker thread, so the event loop is not blocked; None: never.
        skip_set_cookie: Leave responses that set cookies uncompressed (BREACH).
        compresslevel: Starlette's GZipMiddleware name for gzip_level, accepted as it.

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
        gzip_level: int = _DEFAULT_GZIP_LEVEL,
        brotli_quality: int = 4,
        zstd_level: int = 3,
        compressible_types: str | Iterable[str] = DEFAULT_COMPRESSIBLE_TYPES,
        exclude_content_types: str | Iterable[str] = (),
        exclude_paths: str | Iterable[str] = (),
        flush: Literal["auto", "always"] = "auto",
        thread_minimum_size: int | None = 128 * 1024,
        skip_set_cookie: bool = False,
        compresslevel: int | None = None,
    ) -> None:
        self.app = app
        self.minimum_size = bounded_int(minimum_size, "minimum_size", 0)
        levels = {
            "gzip_level": _gzip_level(gzip_level, compresslevel),
            "brotli_quality": bounded_int(brotli_quality, "brotli_quality", 0, 11),
            "zstd_level": bounded_int(zstd_level, "zstd_level", -(2**17), 22),
        }
        default = encodings is DEFAULT_ENCODINGS
        names = resolve_encodings(None if default else string_list(encodings, "encodings"))
        self.codecs: tuple[Codec, ...] = tuple(make_codec(name, **levels) for name in names)
        types = string_list(compressible_types, "compressible_types")
        if not types:
            raise ValueError("compressible_types is empty: nothing would ever be compressed")
        excluded_types = string_list(exclude_content_types, "exclude_content_types")
        kinds = ContentTypes(types, excluded_types)
        self._content_kind = functools.lru_cache(maxsize=256)(kinds.kind)
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
        response: _Response | None = None  # while STREAMED

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
                if verdict[1] >= 0 or not self._starts_at_once(verdict, scope):
                    held, state = verdict, _HELD
                    return _nothing()
                response, state = _Response(verdict, send, self._thread_size), _STREAMED
                return response.begin(None)
            if state is _HELD:
                assert held is not None
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    state = _PASSING
                    return self._whole(held, send, message, message.get("body", b""), scope)
                response, state = _Response(held, send, self._thread_size), _STREAMED
            assert response is not None
            return response.send(message)

        await self.app(scope, receive, send_compressed)

    def _starts_at_once(self, held: _Held, scope: Scope) -> bool:
        """Is the start of a response to compress sent at once, committed to compressing?

        Only without Content-Length (a known length is sent whole, with its compressed
        length), for an event stream or under flush="always"; not where the server offers
        pathsend, which has to go with the start untouched.
        """
        return (
            held[1] < 0
            and (held[3] == STREAM_AT_ONCE or self._flush_always)
            and _PATHSEND not in (scope.get("extensions") or ())
        )

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
    """A response past its held start: a stream compressed chunk by chunk, each flushed so
    whatever the client has received decodes on arrival; or one declined as it is."""

    __slots__ = ("down", "held", "state", "stream", "thread_size")

    stream: Stream

    def __init__(self, held: _Held, down: Send, thread_size: int) -> None:
        self.held = held
        self.down = down
        self.thread_size = thread_size
        self.state = _HELD

    async def begin(self, message: Message | None) -> None:
        """Send the encoded start, then ``message`` (the first body message), if any."""
        start, length, codec, _ = self.held
        self.stream = codec.stream(length)
        self.state = _COMPRESSING
        await self.down(
            {**start, "headers": encoded_fields(start.get("headers", ()), codec.header)}
        )
        if message is not None:
            await self.send(message)

    def send(self, message: Message) -> Awaitable[None]:
        state = self.state
        if state is _HELD:  # the first message after the start, not a final body
            if message["type"] == "http.response.body":
                # A stream: compressed from its first chunk, whatever its size, so the
                # start waits no longer than the app takes to send a first body message.
                return self.begin(message)
            self.state = _PASSING
            return self._decline(message)
        if state is _PASSING or message["type"] != "http.response.body":
            return self.down(message)  # trailers, push, debug, unknown: in order, untouched
        # Compressing: a plain call returning the downstream awaitable, no coroutine.
        body = message.get("body", b"")
        if message.get("more_body", False):
            if not body:
                # Nothing to compress (all before it was flushed); forwarded all the same,
                # so the server gets a message for every message the app sent.
                return self.down(message)
            step = self.stream.compress
        else:
            step = self.stream.finish
            self.state = _PASSING
        if len(body) >= self.thread_size:
            return self._send_from_thread(step, message, body)
        return self.down({**message, "body": step(body)})

    async def _send_from_thread(
        self, step: Callable[[bytes], bytes], message: Message, body: bytes
    ) -> None:
        await self.down({**message, "body": await _in_thread(step, body)})

    async def _decline(self, message: Message) -> None:
        """pathsend, or an unknown message, before the first body: the response as it is."""
        await self.down(self.held[0])
        await self.down(message)
