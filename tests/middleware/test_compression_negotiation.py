"""CompressionMiddleware's pure helpers: negotiation, content types, fields, codecs."""

from __future__ import annotations

import importlib.util
import sys
import threading
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import brotli
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from asgikit.headers import parse_qlist
from asgikit.middleware.compression import codecs
from asgikit.middleware.compression.codecs import (
    BrotliCodec,
    Codec,
    GzipCodec,
    StdlibZstdCodec,
    ZstandardCodec,
    available_encodings,
    make_codec,
    resolve_encodings,
)
from asgikit.middleware.compression.negotiation import (
    COMPRESS,
    DEFAULT_COMPRESSIBLE_TYPES,
    SKIP,
    STREAM_AT_ONCE,
    ContentTypes,
    encoded_fields,
    negotiate_encoding,
    vetoed,
)

OFFERED = (b"zstd", b"br", b"gzip")
CODING = (b"content-encoding", b"gzip")


# --------------------------------------------------------------------------------------
# Accept-Encoding


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, None),
        (b"", None),
        (b"gzip", b"gzip"),
        (b"GZIP", b"gzip"),
        (b"x-gzip", b"gzip"),
        (b"gzip, br, zstd", b"zstd"),  # equal q: the server's order
        (b"gzip, deflate, br, zstd", b"zstd"),
        (b"gzip;q=1.0, br;q=0.9", b"gzip"),  # the client's q ranks first
        (b"br;q=0.5, gzip;q=0.8, zstd;q=0.1", b"gzip"),
        (b"gzip;q=0", None),
        (b"gzip;q=0, br", b"br"),
        (b"*", b"zstd"),
        (b"*;q=0.5, br", b"br"),
        (b"*, zstd;q=0", b"br"),
        (b"*;q=0", None),
        (b"*;q=0, identity", None),
        (b"identity", None),
        (b"identity;q=0", None),  # nothing acceptable: identity all the same, not a 406
        (b"identity;q=0, gzip", b"gzip"),
        (b"gzip;q=0.5, identity", None),  # identity preferred outright
        (b"gzip, identity", b"gzip"),  # a tie goes to compression
        (b"gzip, gzip;q=0", None),  # a refusal anywhere is honoured
        (b"gzip;q=0, gzip", None),
        (b"gzip;q=abc, br;q=0.1", b"br"),  # an invalid q drops the element
        (b"deflate, compress", None),
        (b"  gzip  ;  Q = 0.7 , br;q=0.6", b"gzip"),
    ],
)
def test_negotiation(accept: bytes | None, expected: bytes | None) -> None:
    assert negotiate_encoding(accept, OFFERED) == expected


def test_negotiation_with_fewer_codings_offered() -> None:
    assert negotiate_encoding(b"zstd, gzip", (b"gzip",)) == b"gzip"
    assert negotiate_encoding(b"zstd", (b"gzip", b"br")) is None
    assert negotiate_encoding(b"gzip, br", (b"gzip", b"br")) == b"gzip"


@given(st.binary(max_size=200))
def test_negotiation_never_raises_and_never_picks_a_refused_coding(accept: bytes) -> None:
    chosen = negotiate_encoding(accept, OFFERED)
    assert chosen is None or chosen in OFFERED
    if chosen is not None:
        weights: dict[bytes, float] = {}
        for token, q in parse_qlist(accept):
            token = b"gzip" if token == b"x-gzip" else token
            weights[token] = min(q, weights.get(token, 1.0))
        assert weights.get(chosen, weights.get(b"*", 0.0)) > 0


_TOKENS = st.sampled_from(["gzip", "br", "zstd", "x-gzip", "identity", "*", "deflate", "GZip"])
_QS = st.sampled_from(["", ";q=0", ";q=0.5", ";q=1", ";q=0.001", ";q=1.000", ";q=2"])


@given(st.lists(st.tuples(_TOKENS, _QS), max_size=6))
def test_negotiation_ranks_by_q_then_server_order(elements: list[tuple[str, str]]) -> None:
    accept = ", ".join(token + q for token, q in elements).encode()
    chosen = negotiate_encoding(accept, OFFERED)
    parsed = parse_qlist(accept)
    weights: dict[bytes, float] = {}
    for token, q in parsed:
        token = b"gzip" if token == b"x-gzip" else token
        weights[token] = min(q, weights.get(token, 1.0))
    star = weights.get(b"*", 0.0)
    ranked = [(weights.get(c, star), -i, c) for i, c in enumerate(OFFERED)]
    best_q, _, best = max(ranked)
    if best_q <= 0 or weights.get(b"identity", 0.0) > best_q:
        assert chosen is None
    else:
        assert chosen == best


# --------------------------------------------------------------------------------------
# Content types


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        (b"text/html; charset=utf-8", COMPRESS),
        (b"TEXT/HTML", COMPRESS),
        (b"text/css", COMPRESS),
        (b"text/csv", COMPRESS),
        (b"application/json", COMPRESS),
        (b"application/problem+json", COMPRESS),
        (b"application/vnd.api+json; charset=utf-8", COMPRESS),
        (b"application/javascript", COMPRESS),
        (b"image/svg+xml", COMPRESS),
        (b"application/xhtml+xml", COMPRESS),
        (b"application/wasm", COMPRESS),
        (b"font/ttf", COMPRESS),
        (b"image/x-icon", COMPRESS),
        (b"text/event-stream", STREAM_AT_ONCE),
        (b"application/x-ndjson", STREAM_AT_ONCE),
        (b"application/jsonl", STREAM_AT_ONCE),
        (b"image/png", SKIP),
        (b"image/jpeg", SKIP),
        (b"video/mp4", SKIP),
        (b"audio/ogg", SKIP),
        (b"font/woff2", SKIP),
        (b"application/zip", SKIP),
        (b"application/gzip", SKIP),
        (b"application/octet-stream", SKIP),
        (b"application/grpc", SKIP),
        (b"application/grpc+json", SKIP),
        (b"textplain", SKIP),
        (b"text/", SKIP),
        (b"/plain", SKIP),
        (b"", SKIP),
    ],
)
def test_default_content_types(content_type: bytes, kind: int) -> None:
    assert ContentTypes(DEFAULT_COMPRESSIBLE_TYPES).kind(content_type) == kind


def test_custom_content_types() -> None:
    types = ContentTypes(["application/x-custom", " Image/* ", "+cbor"])
    assert types.kind(b"application/x-custom") == COMPRESS
    assert types.kind(b"image/png") == COMPRESS
    assert types.kind(b"application/thing+cbor") == COMPRESS
    assert types.kind(b"text/html") == SKIP
    everything = ContentTypes(["*/*"])
    assert everything.kind(b"video/mp4") == COMPRESS
    assert everything.kind(b"application/grpc") == SKIP  # never, whatever the list says


def test_excluded_content_types_win_over_the_allowlist() -> None:
    types = ContentTypes(
        DEFAULT_COMPRESSIBLE_TYPES,
        ["Text/CSV; charset=utf-8", "application/*", "+xml", "text/event-stream"],
    )
    assert types.kind(b"text/csv") == SKIP
    assert types.kind(b"application/json") == SKIP
    assert types.kind(b"image/svg+xml") == SKIP
    assert types.kind(b"text/event-stream; charset=utf-8") == SKIP
    assert types.kind(b"text/html") == COMPRESS
    assert types.kind(b"application/x-ndjson") == SKIP
    assert ContentTypes(["*/*"], ["*/*"]).kind(b"text/html") == SKIP


@pytest.mark.parametrize("entry", ["zip", "*/zip", "text/ html", "a b/c"])
def test_bad_excluded_content_type_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="exclude_content_types entry"):
        ContentTypes(DEFAULT_COMPRESSIBLE_TYPES, [entry])


@pytest.mark.parametrize("entry", ["text", "*/json", "+", "text/ html", "text/html; q=1", "a b/c"])
def test_bad_content_type_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="compressible_types entry"):
        ContentTypes([entry])


# --------------------------------------------------------------------------------------
# Response fields


@pytest.mark.parametrize(
    ("field", "skip_set_cookie", "expected"),
    [
        ((b"content-encoding", b"gzip"), False, True),
        ((b"content-encoding", b"BR"), False, True),
        ((b"content-encoding", b"identity"), False, False),
        ((b"content-encoding", b""), False, False),
        ((b"content-encoding", b"identity, gzip"), False, True),
        ((b"cache-control", b"no-transform"), False, True),
        ((b"cache-control", b"public, No-Transform"), False, True),
        ((b"cache-control", b"no-transformer"), False, False),
        ((b"cache-control", b'private="no-transform, x"'), False, False),
        ((b"cache-control", b"max-age=60"), False, False),
        ((b"set-cookie", b"a=1"), False, False),
        ((b"set-cookie", b"a=1"), True, True),
        ((b"content-range", b"bytes 0-9/100"), False, True),
        ((b"content-md5", b"Q2hlY2sgSW50ZWdyaXR5IQ=="), False, True),
        ((b"digest", b"sha-256=abc"), False, True),
        ((b"content-digest", b"sha-256=:abc:"), False, True),
        ((b"repr-digest", b"sha-256=:abc:"), False, True),
        ((b"etag", b'"x"'), True, False),
    ],
)
def test_vetoed(field: tuple[bytes, bytes], skip_set_cookie: bool, expected: bool) -> None:
    assert vetoed([(b"content-type", b"text/plain"), field], skip_set_cookie) is expected


def test_encoded_fields_usual_case_drops_only_the_length() -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"900"), (b"x-a", b"1")]
    before = list(headers)
    fields = encoded_fields(headers, CODING)
    assert fields == [
        (b"content-type", b"text/plain"),
        (b"x-a", b"1"),
        (b"vary", b"Accept-Encoding"),
        CODING,
    ]
    assert headers == before


def test_encoded_fields_special_case() -> None:
    headers = [
        (b"etag", b'"abc"'),
        (b"vary", b"Origin"),
        (b"set-cookie", b"a=1"),
        (b"accept-ranges", b"bytes"),
        (b"content-encoding", b"identity"),
        (b"content-length", b"900"),
        (b"vary", b"accept-encoding"),
        (b"set-cookie", b"b=2"),
    ]
    before = list(headers)
    fields = encoded_fields(headers, CODING)
    assert fields == [
        (b"etag", b'W/"abc"'),
        (b"vary", b"Origin, accept-encoding"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        CODING,
    ]
    assert headers == before


@pytest.mark.parametrize(
    ("headers", "vary"),
    [
        ([(b"etag", b'W/"weak"')], [b"Accept-Encoding"]),
        ([(b"vary", b"*")], [b"*"]),
        ([(b"vary", b"Origin, Accept-Encoding")], [b"Origin, Accept-Encoding"]),
        ([(b"vary", b"Cookie"), (b"vary", b"Origin")], [b"Cookie, Origin, Accept-Encoding"]),
    ],
)
def test_encoded_fields_vary_and_etag(
    headers: list[tuple[bytes, bytes]], vary: list[bytes]
) -> None:
    fields = encoded_fields(headers, CODING)
    assert [value for name, value in fields if name == b"vary"] == vary
    assert [value for name, value in fields if name == b"etag"] in ([], [b'W/"weak"'])


# --------------------------------------------------------------------------------------
# Codecs


class FakeStdlibZstd(ModuleType):
    """The shape of Python 3.14's ``compression.zstd``, built on zstandard."""

    class CompressionParameter:
        compression_level = "compression_level"
        window_log = "window_log"

    class ZstdCompressor:
        CONTINUE = 0
        FLUSH_BLOCK = 1
        FLUSH_FRAME = 2

        def __init__(self, level: int | None = None, options: dict[str, int] | None = None):
            if options is not None:
                assert level is None, "level and options are mutually exclusive"
                params = zstandard.ZstdCompressionParameters.from_level(
                    options["compression_level"], window_log=options["window_log"]
                )
                self._context = zstandard.ZstdCompressor(compression_params=params)
            else:
                self._context = zstandard.ZstdCompressor(level=level or 3)
            self._obj: Any = None

        def compress(self, data: bytes, mode: int = 0) -> bytes:
            if self._obj is None:
                self._obj = self._context.compressobj()
            out: bytes = self._obj.compress(data)
            if mode == self.FLUSH_BLOCK:
                out += self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
            elif mode == self.FLUSH_FRAME:
                out += self._obj.flush()
                self._obj = None  # ready for the next frame, as the real one is
            return out

    def __init__(self) -> None:
        super().__init__("compression.zstd")


def _gunzip(data: bytes) -> bytes:
    return zlib.decompress(data, 31)


def _zstd_decode(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


DECODE: dict[bytes, Callable[[bytes], bytes]] = {
    b"gzip": _gunzip,
    b"br": brotli.decompress,
    b"zstd": _zstd_decode,
}


def incremental(token: bytes) -> Callable[[bytes], bytes]:
    """A decoder that returns what each piece makes decodable."""
    if token == b"gzip":
        gz = zlib.decompressobj(31)
        return gz.decompress
    if token == b"br":
        return brotli.Decompressor().process  # type: ignore[no-any-return]
    return zstandard.ZstdDecompressor().decompressobj().decompress


def all_codecs(level: int = 3) -> list[Codec]:
    return [
        GzipCodec(6),
        BrotliCodec(brotli, 4),
        ZstandardCodec(zstandard, level),
        StdlibZstdCodec(FakeStdlibZstd(), level),
    ]


@pytest.mark.parametrize("codec", all_codecs(), ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("size", [0, 1, 700, 5000, 70_000])
def test_one_shot_round_trip(codec: Codec, size: int) -> None:
    data = (b"asgikit compresses " * (size // 19 + 1))[:size]
    for _ in range(2):  # the second time on a reused context
        assert DECODE[codec.token](codec.compress(data)) == data
    assert codec.header == (b"content-encoding", codec.token)


@pytest.mark.parametrize("codec", all_codecs(), ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("size_hint", [-1, 0, 2000, 10**7])
def test_stream_every_piece_decodes_on_arrival(codec: Codec, size_hint: int) -> None:
    for _ in range(2):
        stream = codec.stream(size_hint)
        decode = incremental(codec.token)
        for i in range(5):
            chunk = b"event %d: " % i + b"x" * (i * 300)
            assert decode(stream.compress(chunk)) == chunk
        assert decode(stream.finish(b"end")) == b"end"


@given(st.integers(min_value=0, max_value=70_000))
def test_gzip_window_fits_any_size(size: int) -> None:
    bits = codecs.gzip_window_bits(size)
    assert 10 <= bits <= 15
    assert bits == 15 or 2**bits - 262 >= size
    assert bits == 10 or 2 ** (bits - 1) - 262 < size


class CountingZstandard(ModuleType):
    """zstandard, counting the compression contexts made."""

    COMPRESSOBJ_FLUSH_BLOCK = zstandard.COMPRESSOBJ_FLUSH_BLOCK

    def __init__(self) -> None:
        super().__init__("zstandard")
        self.made = 0

    def ZstdCompressor(self, **options: Any) -> zstandard.ZstdCompressor:
        self.made += 1
        return zstandard.ZstdCompressor(**options)


def test_zstd_contexts_are_pooled_and_bounded() -> None:
    module = CountingZstandard()
    codec = ZstandardCodec(module, 3)
    codec.compress(b"a" * 100)
    codec.compress(b"b" * 100)
    assert module.made == 1  # reused, not made again
    streams = [codec.stream(-1) for _ in range(11)]
    assert module.made == 11  # every stream holds its own context
    for stream in streams:
        stream.finish(b"x")
    more = [codec.stream(-1) for _ in range(9)]
    assert module.made == 12  # eight were kept for reuse, no more
    for stream in more:
        assert _zstd_decode(stream.finish(b"y" * 100)) == b"y" * 100


def test_zstd_one_shot_from_many_threads() -> None:
    codec = ZstandardCodec(zstandard, 3)
    data = [bytes([i]) * 50_000 + b"tail %d" % i for i in range(8)]
    results: dict[int, bytes] = {}

    def work(i: int) -> None:
        for _ in range(20):
            results[i] = codec.compress(data[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(_zstd_decode(results[i]) == data[i] for i in range(8))


@pytest.mark.parametrize("make", [ZstandardCodec, StdlibZstdCodec])
def test_zstd_ultra_levels_keep_the_window_within_8_mib(make: Any) -> None:
    module = zstandard if make is ZstandardCodec else FakeStdlibZstd()
    codec = make(module, 22)
    stream = codec.stream(-1)
    frame = stream.compress(b"y" * 1000) + stream.finish(b"")
    assert zstandard.get_frame_parameters(frame).window_size <= 8 * 1024 * 1024
    assert _zstd_decode(frame) == b"y" * 1000
    assert _zstd_decode(codec.compress(b"z" * 1000)) == b"z" * 1000


def test_make_codec_and_available_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    levels = {"gzip_level": 6, "brotli_quality": 4, "zstd_level": 3}
    assert available_encodings() == ("zstd", "br", "gzip")
    assert isinstance(make_codec("gzip", **levels), GzipCodec)
    assert isinstance(make_codec("br", **levels), BrotliCodec)
    assert isinstance(make_codec("zstd", **levels), ZstandardCodec)
    monkeypatch.setitem(codecs.BACKENDS, "compression.zstd", FakeStdlibZstd())
    assert isinstance(make_codec("zstd", **levels), StdlibZstdCodec)
    monkeypatch.setitem(codecs.BACKENDS, "compression.zstd", None)
    monkeypatch.setitem(codecs.BACKENDS, "zstandard", None)
    monkeypatch.setitem(codecs.BACKENDS, "brotli", None)
    assert available_encodings() == ("gzip",)


def test_resolve_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_encodings(None) == ["zstd", "br", "gzip"]
    assert resolve_encodings(["GZIP", "br"]) == ["gzip", "br"]
    with pytest.raises(ValueError, match="unknown encoding 'deflate'"):
        resolve_encodings(["deflate"])
    with pytest.raises(ValueError, match="twice"):
        resolve_encodings(["gzip", "gzip"])
    with pytest.raises(ValueError, match="empty"):
        resolve_encodings([])
    monkeypatch.setitem(codecs.BACKENDS, "zstandard", None)
    assert resolve_encodings(None) == ["br", "gzip"]
    with pytest.raises(ValueError, match=r"'zstd'.*asgikit\[zstd\]"):
        resolve_encodings(["zstd", "gzip"])
    monkeypatch.setitem(codecs.BACKENDS, "brotli", None)
    with pytest.raises(ValueError, match=r"'br'.*brotli"):
        resolve_encodings(["br"])


def test_missing_libraries_are_found_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module imported where brotli and zstandard are not installed."""
    for name in ("brotli", "zstandard"):
        monkeypatch.setitem(sys.modules, name, None)  # makes ``import name`` fail
    spec = importlib.util.spec_from_file_location("codecs_without_libraries", codecs.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.BACKENDS == {"brotli": None, "compression.zstd": None, "zstandard": None}
    assert module.available_encodings() == ("gzip",)
