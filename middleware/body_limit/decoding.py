"""Request-body decoders for BodyLimitMiddleware: gzip and deflate (zlib), br (brotli),
zstd (the ``zstandard`` package, when it is installed).

A decoder turns each chunk of a compressed body into the bytes it encodes, and is given a
*budget*: the decoded bytes still allowed. It never decodes much past it: zlib and brotli
are asked for bounded steps of output, zstd is fed slices small enough that their output
cannot pass the budget by more than 1 MiB. So a bomb (1 MiB of gzip that inflates to
1 GiB) costs the budget and at most one step more, and is refused there, however far
it would inflate.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, Final, Protocol

__all__ = [
    "STEP",
    "DecodeError",
    "Decoder",
    "TooLarge",
    "decoder_factories",
]

STEP: Final = 64 * 1024
"""The most output zlib and brotli are asked for at once (brotli may give up to 32 KiB
more: its buffer grows in steps)."""

# RFC 9659: a zstd window over 8 MiB may be refused; it is also the most memory a frame
# can make the decoder hold.
_ZSTD_MAX_WINDOW: Final = 8 * 1024 * 1024
# zstd's largest block decodes to 128 KiB, and even the smallest (an RLE block) takes 4
# bytes: a slice of 4 * n bytes completes at most n + 1 blocks. A slice may pass the
# budget by _ZSTD_SLACK + 1 blocks (1 MiB): with none, a small budget would mean a call per
# byte of input.
_ZSTD_BLOCK: Final = 128 * 1024
_ZSTD_SLACK: Final = 7
# Each frame costs a decoder object: 10 MiB of empty frames (a million) took 0.73 s of
# CPU in one run (2026-12-08). A body is seldom more than a few frames.
ZSTD_MAX_FRAMES: Final = 1000


class DecodeError(ValueError):
    """The body is not valid data of its coding: corrupt, truncated or with data after
    its end."""


class TooLarge(Exception):
    """The decoded body passed its budget."""


class Decoder(Protocol):
    """One request body's decoder."""

    def decode(self, data: bytes, budget: int) -> bytes:
        """What *data* decodes to, given what came before; ``TooLarge`` when that is more
        than *budget* bytes, ``DecodeError`` when *data* is not valid."""

    def end(self) -> None:
        """The body ended: ``DecodeError`` when its stream did not."""


class _ZlibDecoder:
    """gzip (members back to back, RFC 1952) or deflate (one zlib stream, RFC 1950)."""

    __slots__ = ("_fed", "_members", "_obj", "_padded", "_wbits")

    def __init__(self, wbits: int, members: bool) -> None:
        self._wbits = wbits
        self._members = members
        self._obj = zlib.decompressobj(wbits)
        self._fed = False
        self._padded = False

    def decode(self, data: bytes, budget: int) -> bytes:
        if data:
            self._fed = True
        obj = self._obj
        pieces = []
        left = budget
        while True:
            wanted = min(STEP, left + 1)  # one byte past the budget tells it was passed
            try:
                piece = obj.decompress(data, wanted)
            except zlib.error as exc:
                raise DecodeError(str(exc)) from None
            left -= len(piece)
            if left < 0:
                raise TooLarge
            pieces.append(piece)
            if obj.eof:
                data = obj.unused_data
                if not data:
                    break
                if not self._members:
                    raise DecodeError("data after the end of the stream")
                if self._padding(data):
                    break
                obj = self._obj = zlib.decompressobj(self._wbits)  # the next gzip member
                continue
            data = obj.unconsumed_tail
            if not data and len(piece) < wanted:  # a full step may leave output pending
                break
        return b"".join(pieces)

    def _padding(self, data: bytes) -> bool:
        """Whether *data*, after a gzip member, is zero bytes: padding (tapes, blocked
        writers), which GNU gzip and ``gzip.GzipFile`` ignore. From then on, the body
        may hold nothing but zeros."""
        if data.count(0) != len(data):
            if self._padded:
                raise DecodeError("data after the end of the stream")
            return False
        self._padded = True
        return True

    def end(self) -> None:
        if self._fed and not self._obj.eof:
            raise DecodeError("the stream is truncated")


class _BrotliDecoder:
    __slots__ = ("_decoder", "_error", "_fed")

    def __init__(self, module: ModuleType) -> None:
        self._decoder = module.Decompressor()
        self._error: type[Exception] = module.error
        self._fed = False

    def decode(self, data: bytes, budget: int) -> bytes:
        decoder = self._decoder
        if data:
            if decoder.is_finished():
                raise DecodeError("data after the end of the stream")
            self._fed = True
        pieces = []
        left = budget
        while True:
            wanted = min(STEP, left + 1)
            try:
                piece = decoder.process(data, output_buffer_limit=wanted)
            except self._error as exc:
                raise DecodeError(str(exc)) from None
            data = b""  # brotli keeps what it did not decode yet
            left -= len(piece)
            if left < 0:
                raise TooLarge
            pieces.append(piece)
            # A short step means brotli ran out of input; a full one may leave output
            # pending (can_accept_more_data() does not tell: it is about input).
            if len(piece) < wanted or decoder.is_finished():
                break
        return b"".join(pieces)

    def end(self) -> None:
        if self._fed and not self._decoder.is_finished():
            raise DecodeError("the stream is truncated")


class _ZstdDecoder:
    """zstd frames back to back, through ``zstandard``'s ``decompressobj``, which has no
    output bound of its own: the input is fed in slices whose output cannot pass the
    budget by more than 1 MiB."""

    __slots__ = ("_error", "_fed", "_frames", "_new", "_obj")

    def __init__(self, module: ModuleType) -> None:
        context = module.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
        self._new: Callable[[], Any] = context.decompressobj
        self._obj = self._new()
        self._error: type[Exception] = module.ZstdError
        self._fed = False
        self._frames = 1

    def decode(self, data: bytes, budget: int) -> bytes:
        if data:
            self._fed = True
        pieces = []
        left = budget
        view = memoryview(data)
        while view:
            size = (left // _ZSTD_BLOCK + _ZSTD_SLACK) * 4
            piece = self._slice(view[:size].tobytes())
            view = view[size:]
            left -= len(piece)
            if left < 0:
                raise TooLarge
            pieces.append(piece)
        return b"".join(pieces)

    def _slice(self, data: bytes) -> bytes:
        """What *data* decodes to, across the frames it holds (a loop, not a recursion:
        a chunk may hold thousands of tiny frames)."""
        pieces = []
        obj = self._obj
        while data:
            if obj.eof:  # a frame ended: what follows is the next frame
                self._frames += 1
                if self._frames > ZSTD_MAX_FRAMES:
                    raise DecodeError(f"more than {ZSTD_MAX_FRAMES} zstd frames")
                obj = self._obj = self._new()
            try:
                pieces.append(obj.decompress(data))
            except self._error as exc:
                raise DecodeError(str(exc)) from None
            data = obj.unused_data if obj.eof else b""
        return b"".join(pieces)

    def end(self) -> None:
        if self._fed and not self._obj.eof:
            raise DecodeError("the stream is truncated")


def decoder_factories() -> dict[str, Callable[[], Decoder]]:
    """A new decoder by coding token, for every coding this interpreter can decode.

    Brotli is a dependency; zstd needs ``zstandard`` (the ``zstd`` extra). Both are
    imported here, at start-up, and only by a middleware that decompresses.
    """
    brotli = importlib.import_module("brotli")

    factories: dict[str, Callable[[], Decoder]] = {
        "gzip": lambda: _ZlibDecoder(31, members=True),
        "x-gzip": lambda: _ZlibDecoder(31, members=True),
        "deflate": lambda: _ZlibDecoder(15, members=False),
        "br": lambda: _BrotliDecoder(brotli),
    }
    try:
        zstandard = importlib.import_module("zstandard")
    except ImportError:
        return factories
    factories["zstd"] = lambda: _ZstdDecoder(zstandard)
    return factories
