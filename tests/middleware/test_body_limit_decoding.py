"""BodyLimitMiddleware's request-body decompression: what the app reads, 415 and 400, and
bombs refused after at most the cap's bytes."""

from __future__ import annotations

import functools
import struct
import sys
import time
import tracemalloc
import zlib
from typing import Any

import brotli
import pytest
import zstandard

from asgikit.answers import DECISION_FIELD, DETAILS
from asgikit.contract import enforce
from asgikit.middleware.body_limit import BodyLimitMiddleware
from asgikit.middleware.body_limit.decoding import TooLarge, decoder_factories
from asgikit.scopes import DECISION_KEY
from asgikit.testing import DISCONNECT, http_scope, request
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TEXT = b"".join(b"line %d of a JSON-ish upload, repeated\n" % i for i in range(3000))


def gzip(data: bytes) -> bytes:
    return zlib.compress(data, wbits=31)


ENCODERS = {
    "gzip": gzip,
    "x-gzip": gzip,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstandard.ZstdCompressor().compress,
}


@functools.cache
def gzip_bomb() -> bytes:
    """1 GiB of zeros as gzip, about 1 MiB: deflate's best ratio is about 1:1032 (a 1 KiB
    gzip cannot hold 1 GiB; gzip inside gzip could, but a stacked coding is a 415).

    One MiB of zeros compressed after a full flush is the same bytes every time, so the
    stream is one such segment 1024 times, then the gzip trailer."""
    zeros = bytes(MiB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()
    crc = 0
    for _ in range(1024):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + segment * 1024 + end + struct.pack("<II", crc, GiB & 0xFFFFFFFF)


class Reader:
    """An app that reads the body, counting what it gets; answers 200 with its length."""

    def __init__(self) -> None:
        self.scope: Scope = {}
        self.messages: list[Message] = []

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        while True:
            message = await receive()
            self.messages.append(message)
            if message["type"] == "http.disconnect":
                return
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(self.body)})


def wrapped(app: ASGIApp, **options: Any) -> ASGIApp:
    return enforce(BodyLimitMiddleware(enforce(app), **options))


def without_host(scope: Scope) -> list[tuple[bytes, bytes]]:
    return [field for field in scope["headers"] if field[0] != b"host"]


@functools.cache
def encoded_text(coding: str) -> bytes:
    return ENCODERS[coding](TEXT)


@functools.cache
def zeros_as(coding: str) -> bytes:
    """64 MiB of zeros in *coding*: a few KiB."""
    if coding == "br":
        return brotli.compress(bytes(64 * MiB), quality=1)
    return ENCODERS[coding](bytes(64 * MiB))


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


@pytest.mark.parametrize("coding", sorted(ENCODERS))
async def test_each_coding_is_decoded_for_the_app(coding: str) -> None:
    reader = Reader()
    encoded = encoded_text(coding)
    headers = [
        ("content-encoding", coding.upper()),
        ("content-length", str(len(encoded))),
        ("x-kept", "1"),
    ]
    body = [*chunks(encoded, 1000), b""]  # an empty last chunk, as servers send
    response = await request(
        wrapped(reader, decompress=True), "POST", "/", headers=headers, body=body
    )
    assert (response.status, response.body) == (200, b"%d" % len(TEXT))
    assert reader.body == TEXT
    # The app sees a plain body: no coding, no (compressed) length; the rest is kept.
    assert without_host(reader.scope) == [(b"x-kept", b"1")]
    assert (b"content-encoding", coding.upper().encode()) in response.scope["headers"]


async def test_unknown_keys_of_a_decoded_message_are_kept() -> None:
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    body = iter([{"type": "http.request", "body": gzip(b"abc"), "x-extra": 1}])

    async def receive() -> Message:
        return next(body)

    async def send(message: Message) -> None:
        pass

    scope = http_scope("POST", "/", headers={"content-encoding": "gzip"})
    await BodyLimitMiddleware(app, decompress=True)(scope, receive, send)
    assert seen == [{"type": "http.request", "body": b"abc", "x-extra": 1}]


async def test_a_disconnect_during_a_decoded_upload_reaches_the_app() -> None:
    reader = Reader()
    encoded = encoded_text("gzip")
    headers = {"content-encoding": "gzip"}
    body = [encoded[:100], DISCONNECT]
    await request(wrapped(reader, decompress=True), "POST", "/", headers=headers, body=body)
    assert reader.messages[-1] == {"type": "http.disconnect"}
    assert TEXT.startswith(reader.body)


async def test_every_receive_after_a_refusal_is_a_disconnect() -> None:
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())
        seen.append(await receive())

    headers = {"content-encoding": "br"}
    middleware = BodyLimitMiddleware(app, decompress=True)
    response = await request(middleware, "POST", "/", headers=headers, body=[b"\xffcorrupt", b"x"])
    assert response.status == 400
    assert seen == [{"type": "http.disconnect"}] * 2


async def test_identity_is_no_coding_and_decompress_off_leaves_the_body_alone() -> None:
    reader = Reader()
    headers = {"content-encoding": "identity"}
    await request(wrapped(reader, decompress=True), "POST", "/", headers=headers, body=b"plain")
    assert reader.body == b"plain"
    assert without_host(reader.scope) == [(b"content-encoding", b"identity")]
    off = Reader()
    encoded = gzip(TEXT)
    headers = {"content-encoding": "gzip"}
    await request(wrapped(off), "POST", "/", headers=headers, body=encoded)
    assert off.body == encoded
    assert without_host(off.scope) == [(b"content-encoding", b"gzip")]


async def test_several_gzip_members_and_zstd_frames_are_one_body() -> None:
    for coding, encode in (("gzip", gzip), ("zstd", ENCODERS["zstd"])):
        reader = Reader()
        body = encode(b"first ") + encode(b"second")
        headers = {"content-encoding": coding}
        await request(wrapped(reader, decompress=True), "POST", "/", headers=headers, body=body)
        assert reader.body == b"first second"


async def test_an_empty_body_with_a_coding_is_an_empty_body() -> None:
    reader = Reader()
    headers = {"content-encoding": "br"}
    response = await request(wrapped(reader, decompress=True), "POST", "/", headers=headers)
    assert (response.status, reader.body) == (200, b"")


@pytest.mark.parametrize("value", ["compress", "gzip, br", "gzip, gzip", "gzip, identity, br"])
async def test_an_unknown_or_stacked_coding_is_415_naming_what_would_be_decoded(
    value: str,
) -> None:
    calls: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope)  # pragma: no cover

    holder: dict[str, Any] = {}
    scope = http_scope("POST", "/", headers={"content-encoding": value})
    scope[DECISION_KEY] = holder
    response = await request(wrapped(app, decompress=True), scope=scope, body=b"data")
    assert (response.status, response.body) == (415, b"Unsupported Content-Encoding")
    assert response.header("accept-encoding") == "gzip, x-gzip, deflate, br, zstd"
    assert calls == []
    assert holder == {
        DECISION_FIELD: "unsupported_encoding",
        DETAILS: {"body_limit.reason": "content_encoding"},
    }


async def test_without_zstandard_zstd_is_415(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard fails
    app = wrapped(Reader(), decompress=True)
    headers = {"content-encoding": "zstd"}
    response = await request(app, "POST", "/", headers=headers, body=ENCODERS["zstd"](b"x"))
    assert response.status == 415
    assert response.header("accept-encoding") == "gzip, x-gzip, deflate, br"


@pytest.mark.parametrize("coding", sorted(ENCODERS))
@pytest.mark.parametrize("damage", ["corrupt", "truncated", "trailing"])
async def test_invalid_compressed_data_is_400(coding: str, damage: str) -> None:
    encoded = encoded_text(coding)
    body = {
        "corrupt": [b"\x00not compressed data at all" * 4],
        "truncated": [encoded[: len(encoded) // 2]],
        "trailing": [encoded, b"\x00garbage after the end"],
    }[damage]
    reader = Reader()
    holder: dict[str, Any] = {}
    scope = http_scope("POST", "/", headers={"content-encoding": coding})
    scope[DECISION_KEY] = holder
    response = await request(wrapped(reader, decompress=True), scope=scope, body=body)
    assert response.status == 400
    assert response.body == b"Invalid %s request body" % coding.encode()
    assert reader.messages[-1] == {"type": "http.disconnect"}
    assert holder[DECISION_FIELD] == "bad_request"
    assert holder[DETAILS]["body_limit.reason"] == "corrupt"


async def test_a_zstd_window_over_8_mib_is_refused_as_invalid() -> None:
    # RFC 9659: a decoder may refuse windows over 8 MiB; the window is the memory a frame
    # makes the decoder hold, whatever the body's size.
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=24)
    stream = zstandard.ZstdCompressor(compression_params=params).compressobj()
    frame = stream.compress(b"small") + stream.flush()
    assert zstandard.get_frame_parameters(frame).window_size == 16 * MiB
    headers = {"content-encoding": "zstd"}
    response = await request(
        wrapped(Reader(), decompress=True), "POST", "/", headers=headers, body=frame
    )
    assert (response.status, response.body) == (400, b"Invalid zstd request body")


async def test_a_gzip_bomb_is_refused_after_at_most_the_caps_bytes() -> None:
    bomb = gzip_bomb()
    reader = Reader()
    cap = 10 * MiB
    holder: dict[str, Any] = {}
    scope = http_scope("POST", "/", headers={"content-encoding": "gzip"})
    scope[DECISION_KEY] = holder
    started = time.perf_counter()
    response = await request(
        wrapped(reader, decompress=True, max_decompressed_size=cap),
        scope=scope,
        body=chunks(bomb, 4 * KiB),
    )
    elapsed = time.perf_counter() - started
    assert (response.status, response.body) == (413, b"Content Too Large")
    assert len(reader.body) <= cap  # the app never got past the cap
    assert reader.messages[-1] == {"type": "http.disconnect"}
    # Compressed bytes read from the client: what inflates to the cap, and one chunk.
    read = sum(len(m.get("body", b"")) for m in response.received)
    assert read <= cap // 1000 + 4 * KiB
    assert holder[DETAILS]["body_limit.reason"] == "decompressed"
    assert elapsed < 30  # a generous bound: inflating the whole GiB would be the failure


def test_a_decoder_never_produces_much_more_than_its_budget() -> None:
    # Peak memory while decoding a 64 MiB-inflating chunk with a 1 MiB budget: one step
    # (64 KiB; brotli's buffer a little more) past the budget, never the whole chunk.
    payload = gzip_bomb()[: 64 * KiB]
    samples = {
        "gzip": payload,
        "br": zeros_as("br"),
        "zstd": zeros_as("zstd"),
    }
    factories = decoder_factories()
    for coding, data in samples.items():
        decoder = factories[coding]()
        tracemalloc.start()
        try:
            with pytest.raises(TooLarge):
                decoder.decode(data, MiB)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 * MiB + len(data), coding


@pytest.mark.parametrize("coding", ["br", "zstd"])
async def test_br_and_zstd_bombs_are_refused_at_the_cap(coding: str) -> None:
    bomb = zeros_as(coding)
    reader = Reader()
    headers = {"content-encoding": coding}
    response = await request(
        wrapped(reader, decompress=True, max_body_size=MiB),
        "POST",
        "/",
        headers=headers,
        body=chunks(bomb, 100),
    )
    assert response.status == 413
    assert len(reader.body) <= MiB  # the cap follows max_body_size when not given


async def test_the_compressed_size_counts_against_max_body_size() -> None:
    noise = bytes(range(256)) * 64  # does not compress
    encoded = gzip(noise)
    reader = Reader()
    headers = {"content-encoding": "gzip"}
    response = await request(
        wrapped(reader, decompress=True, max_body_size=len(encoded) - 1, max_decompressed_size=MiB),
        "POST",
        "/",
        headers=headers,
        body=chunks(encoded, 1000),
    )
    assert response.status == 413
    assert reader.messages[-1] == {"type": "http.disconnect"}


async def test_a_decoded_body_of_exactly_the_cap_passes() -> None:
    reader = Reader()
    headers = {"content-encoding": "deflate"}
    app = wrapped(reader, decompress=True, max_decompressed_size=len(TEXT))
    body = chunks(zlib.compress(TEXT), 100)
    assert (await request(app, "POST", "/", headers=headers, body=body)).status == 200
    over = wrapped(Reader(), decompress=True, max_decompressed_size=len(TEXT) - 1)
    assert (await request(over, "POST", "/", headers=headers, body=body)).status == 413


async def test_no_limits_at_all_still_decodes() -> None:
    reader = Reader()
    headers = {"content-encoding": "gzip"}
    app = wrapped(reader, decompress=True, max_body_size=None)
    await request(app, "POST", "/", headers=headers, body=gzip(TEXT))
    assert reader.body == TEXT
