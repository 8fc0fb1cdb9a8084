"""Compressor adapters for CompressionMiddleware: gzip (zlib), br (brotli), zstd.

Each codec offers a one-shot ``compress(data)`` and a ``stream(size_hint)`` whose
``compress(chunk)`` returns everything needed to decode the chunk on arrival (a flush
point) and whose ``finish(chunk)`` ends the stream. Codecs are built once, at start-up;
costly library contexts (zstd's) are kept in a small pool and reused by one caller at a
time, so a one-shot ``compress`` is safe to call from worker threads too.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterable
from types import ModuleType
from typing import Any, Final, Protocol

__all__ = [
    "ENCODINGS",
    "BrotliCodec",
    "Codec",
    "GzipCodec",
    "StdlibZstdCodec",
    "Stream",
    "ZstandardCodec",
    "available_encodings",
    "gzip_window_bits",
    "make_codec",
    "resolve_encodings",
]

ENCODINGS: Final = ("zstd", "br", "gzip")
"""Every coding the middleware knows, in its default order of preference."""

# Contexts kept per codec beyond the one in use: enough for the worker threads that can
# compress at once on a small machine, and for a few interleaved streams.
_POOL_SIZE: Final = 8
# RFC 9659: a zstd window over 8 MiB may be refused by browsers; levels up to 19 stay
# within it, the "ultra" levels above do not.
_ZSTD_MAX_WINDOW_LOG: Final = 23
_ZSTD_LAST_PLAIN_LEVEL: Final = 19


def _import(name: str) -> ModuleType | None:
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        return None


# The libraries found at import time (start-up); tests replace entries to simulate one missing.
BACKENDS: dict[str, ModuleType | None] = {
    "brotli": _import("brotli"),
    # Only 3.14's standard library has it; an unrelated "compression" package must not count.
    "compression.zstd": _import("compression.zstd") if sys.version_info >= (3, 14) else None,
    "zstandard": _import("zstandard"),
}


class Stream(Protocol):
    """One response's compressor: every call's output decodes on arrival."""

    def compress(self, data: bytes) -> bytes: ...

    def finish(self, data: bytes) -> bytes: ...


class Codec(Protocol):
    """A content coding: its token, one-shot and streaming compression."""

    @property
    def token(self) -> bytes: ...

    @property
    def header(self) -> tuple[bytes, bytes]:
        """``(b"content-encoding", token)``."""

    def compress(self, data: bytes) -> bytes: ...

    def stream(self, size_hint: int) -> Stream: ...


_WINDOW_BITS: Final = tuple(max(10, min(15, reach)) for reach in range(65))
"""By bit length: every size a server can hold (below 2**64 bytes) has one."""


def gzip_window_bits(size: int) -> int:
    """The smallest zlib window (10-15 bits) that still reaches back over ``size`` bytes.

    Deflate looks back at most window - 262 bytes. A window fitted to the body compresses
    it just as well, and is never slower to set up than the default 32 KiB one; when the
    allocator has to fetch fresh memory for it, the default one's set-up is most of the
    cost of a 1 KiB body (about 5x the fitted one's).
    """
    # A table by bit length: a third of a microsecond less than max/min per response
    # (GzipCodec.compress of 2 KiB, timeit best of 7 rounds of 20 000 calls, three
    # repeats, 2026-12-07: 6.21-6.24 µs against 6.69, which varied by under 0.01).
    return _WINDOW_BITS[(size + 261).bit_length()]


class GzipCodec:
    """gzip through zlib, at ``level`` 1-9."""

    __slots__ = ("level",)
    token: Final = b"gzip"
    header: Final = (b"content-encoding", token)

    def __init__(self, level: int) -> None:
        self.level = level

    def compress(self, data: bytes) -> bytes:
        return zlib.compress(data, self.level, 16 + gzip_window_bits(len(data)))

    def stream(self, size_hint: int) -> _GzipStream:
        bits = gzip_window_bits(size_hint) if size_hint >= 0 else 15
        return _GzipStream(zlib.compressobj(self.level, zlib.DEFLATED, 16 + bits))


class _GzipStream:
    __slots__ = ("_obj",)

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data) + self._obj.flush(zlib.Z_SYNC_FLUSH)  # type: ignore[no-any-return]

    def finish(self, data: bytes) -> bytes:
        return self._obj.compress(data) + self._obj.flush(zlib.Z_FINISH)  # type: ignore[no-any-return]


class BrotliCodec:
    """br through the brotli library, at ``quality`` 0-11 (a new encoder per response)."""

    __slots__ = ("_new", "quality")
    token: Final = b"br"
    header: Final = (b"content-encoding", token)

    def __init__(self, module: ModuleType, quality: int) -> None:
        self._new = module.Compressor
        self.quality = quality

    def compress(self, data: bytes) -> bytes:
        encoder = self._new(quality=self.quality)
        return encoder.process(data) + encoder.finish()  # type: ignore[no-any-return]

    def stream(self, size_hint: int) -> _BrotliStream:
        return _BrotliStream(self._new(quality=self.quality))


class _BrotliStream:
    __slots__ = ("_encoder",)

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder

    def compress(self, data: bytes) -> bytes:
        return self._encoder.process(data) + self._encoder.flush()  # type: ignore[no-any-return]

    def finish(self, data: bytes) -> bytes:
        return self._encoder.process(data) + self._encoder.finish()  # type: ignore[no-any-return]


class _Pool:
    """Idle library contexts. ``list.pop`` and ``append`` are atomic, so threads may share it."""

    __slots__ = ("_factory", "_idle")

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._idle: list[Any] = []

    def take(self) -> Any:
        try:
            return self._idle.pop()
        except IndexError:
            return self._factory()

    def give(self, context: Any) -> None:
        if len(self._idle) < _POOL_SIZE:
            self._idle.append(context)


class ZstandardCodec:
    """zstd through the ``zstandard`` package; contexts are pooled (each costs ~8-20 µs)."""

    __slots__ = ("_flush_block", "_pool", "level")
    token: Final = b"zstd"
    header: Final = (b"content-encoding", token)

    def __init__(self, module: ModuleType, level: int) -> None:
        self.level = level
        self._flush_block = module.COMPRESSOBJ_FLUSH_BLOCK
        if level > _ZSTD_LAST_PLAIN_LEVEL:
            params = module.ZstdCompressionParameters.from_level(
                level, window_log=_ZSTD_MAX_WINDOW_LOG
            )
            self._pool = _Pool(lambda: module.ZstdCompressor(compression_params=params))
        else:
            self._pool = _Pool(lambda: module.ZstdCompressor(level=level))

    def compress(self, data: bytes) -> bytes:
        context = self._pool.take()
        out: bytes = context.compress(data)
        self._pool.give(context)  # not on failure: a context in an unknown state is dropped
        return out

    def stream(self, size_hint: int) -> _ZstandardStream:
        context = self._pool.take()
        return _ZstandardStream(self._pool, context, self._flush_block)


class _ZstandardStream:
    __slots__ = ("_context", "_flush_block", "_obj", "_pool")

    def __init__(self, pool: _Pool, context: Any, flush_block: int) -> None:
        self._pool = pool
        self._context = context
        self._flush_block = flush_block
        self._obj = context.compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data) + self._obj.flush(self._flush_block)  # type: ignore[no-any-return]

    def finish(self, data: bytes) -> bytes:
        out: bytes = self._obj.compress(data) + self._obj.flush()
        self._pool.give(self._context)  # an abandoned stream's context is simply dropped
        return out


class StdlibZstdCodec:
    """zstd through the standard library's ``compression.zstd`` (Python 3.14+), pooled."""

    __slots__ = ("_end", "_flush", "_pool", "level")
    token: Final = b"zstd"
    header: Final = (b"content-encoding", token)

    def __init__(self, module: ModuleType, level: int) -> None:
        self.level = level
        compressor = module.ZstdCompressor
        self._flush = compressor.FLUSH_BLOCK
        self._end = compressor.FLUSH_FRAME
        if level > _ZSTD_LAST_PLAIN_LEVEL:
            parameter = module.CompressionParameter
            options = {
                parameter.compression_level: level,
                parameter.window_log: _ZSTD_MAX_WINDOW_LOG,
            }
            self._pool = _Pool(lambda: compressor(options=options))
        else:
            self._pool = _Pool(lambda: compressor(level=level))

    def compress(self, data: bytes) -> bytes:
        context = self._pool.take()
        out: bytes = context.compress(data, self._end)
        self._pool.give(context)
        return out

    def stream(self, size_hint: int) -> _StdlibZstdStream:
        return _StdlibZstdStream(self, self._pool.take())


class _StdlibZstdStream:
    __slots__ = ("_codec", "_context")

    def __init__(self, codec: StdlibZstdCodec, context: Any) -> None:
        self._codec = codec
        self._context = context

    def compress(self, data: bytes) -> bytes:
        return self._context.compress(data, self._codec._flush)  # type: ignore[no-any-return]

    def finish(self, data: bytes) -> bytes:
        out: bytes = self._context.compress(data, self._codec._end)
        self._codec._pool.give(self._context)  # a finished frame leaves it ready for the next
        return out


def available_encodings() -> tuple[str, ...]:
    """The codings whose library is installed, in the default order of preference."""
    found = {
        "zstd": BACKENDS["compression.zstd"] is not None or BACKENDS["zstandard"] is not None,
        "br": BACKENDS["brotli"] is not None,
        "gzip": True,
    }
    return tuple(name for name in ENCODINGS if found[name])


def make_codec(name: str, *, gzip_level: int, brotli_quality: int, zstd_level: int) -> Codec:
    """Build the codec for ``name``, one of ``available_encodings()``.

    zstd prefers the standard library (Python 3.14+) over the ``zstandard`` package.
    """
    if name == "gzip":
        return GzipCodec(gzip_level)
    if name == "br":
        brotli = BACKENDS["brotli"]
        assert brotli is not None
        return BrotliCodec(brotli, brotli_quality)
    stdlib = BACKENDS["compression.zstd"]
    if stdlib is not None:
        return StdlibZstdCodec(stdlib, zstd_level)
    zstandard = BACKENDS["zstandard"]
    assert zstandard is not None
    return ZstandardCodec(zstandard, zstd_level)


def resolve_encodings(encodings: Iterable[str] | None) -> list[str]:
    """Validate the ``encodings`` option; None means every installed coding.

    Raises:
        ValueError: A name is unknown, repeated, or its library is not installed; or
            there is none.
    """
    available = available_encodings()
    if encodings is None:
        return list(available)
    names = [name.lower() for name in encodings]
    if not names:
        raise ValueError("encodings is empty: nothing would ever be compressed")
    for name in names:
        if name not in ENCODINGS:
            raise ValueError(f"unknown encoding {name!r}; known: {', '.join(ENCODINGS)}")
        if name not in available:
            extra = "asgikit[zstd]" if name == "zstd" else "brotli"
            raise ValueError(
                f"encodings lists {name!r}, but its library is not installed "
                f"(pip install '{extra}')"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"encodings lists a coding twice: {names}")
    return names
