"""CompressionMiddleware: negotiation, when not to compress, framing, every ASGI message."""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import brotli
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asgikit.middleware.compression as compression
from asgikit.contract import enforce
from asgikit.middleware.compression import CompressionMiddleware
from asgikit.middleware.compression import codecs as _compression_codecs
from asgikit.middleware.compression.negotiation import negotiate_encoding
from asgikit.middleware.timeout import TimeoutMiddleware
from asgikit.testing import (
    ALL_HTTP_EXTENSIONS,
    ClientDisconnected,
    Response,
    lifespan,
    request,
    run_lifespan,
    websocket,
)
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

Headers = list[tuple[bytes, bytes]]
BODY = b"The quick brown fox jumps over the lazy dog. " * 40  # 1800 bytes
TEXT = (b"content-type", b"text/plain; charset=utf-8")


def wrapped(app: ASGIApp, **options: Any) -> ASGIApp:
    return enforce(CompressionMiddleware(enforce(app), **options))


def responder(
    body: bytes | Sequence[bytes] = BODY,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (TEXT,),
    status: int = 200,
    length: bool = True,
    trailers: Headers | None = None,
    **start_keys: Any,
) -> ASGIApp:
    """An app sending ``body`` in one message (with Content-Length) or chunk by chunk."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        fields = list(headers)
        if isinstance(body, bytes) and length:
            fields.append((b"content-length", b"%d" % len(body)))
        start: Message = {"type": "http.response.start", "status": status, "headers": fields}
        if trailers is not None:
            start["trailers"] = True
        await send({**start, **start_keys})
        if isinstance(body, bytes):
            await send({"type": "http.response.body", "body": body})
        else:
            for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        if trailers is not None:
            await send({"type": "http.response.trailers", "headers": trailers})

    return app


def decoder(coding: str | None) -> Callable[[bytes], bytes]:
    """An incremental decoder for ``coding``: each call returns what the piece completes."""
    if coding is None:
        return lambda data: data
    if coding == "gzip":
        return zlib.decompressobj(31).decompress
    if coding == "br":
        return brotli.Decompressor().process  # type: ignore[no-any-return]
    assert coding == "zstd", coding
    return zstandard.ZstdDecompressor().decompressobj().decompress


def decoded(response: Response) -> bytes:
    """The response body, decoded and checked to be one complete stream."""
    coding = response.header("content-encoding")
    body = response.body
    if coding == "gzip":
        gz = zlib.decompressobj(31)
        data = gz.decompress(body)
        assert gz.eof and not gz.unused_data
        return data
    if coding == "br":
        br = brotli.Decompressor()
        data = br.process(body)
        assert br.is_finished()
        return data  # type: ignore[no-any-return]
    if coding == "zstd":
        zs = zstandard.ZstdDecompressor().decompressobj()
        data = zs.decompress(body)
        assert zs.eof
        return data
    assert coding is None, coding
    return body


def vary(response: Response) -> list[str]:
    return response.header_values("vary")


# --------------------------------------------------------------------------------------
# One message


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
async def test_one_message_is_compressed_with_its_length(coding: str) -> None:
    response = await request(wrapped(responder()), headers={"accept-encoding": coding})
    assert response.header("content-encoding") == coding
    assert response.header_values("content-length") == [str(len(response.body))]
    assert len(response.body) < len(BODY)
    assert vary(response) == ["Accept-Encoding"]
    assert decoded(response) == BODY
    assert response.chunks == [response.body]


async def test_what_send_returns_is_a_coroutine_for_start_soon_and_create_task() -> None:
    # An app may send from a task of its own: task groups take coroutines only, so every
    # return value of the middleware's send must be one (the held start's included).
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        fields = [TEXT, (b"content-length", b"%d" % len(BODY))]
        async with anyio.create_task_group() as tg:
            tg.start_soon(send, {"type": "http.response.start", "status": 200, "headers": fields})
        async with anyio.create_task_group() as tg:
            tg.start_soon(send, {"type": "http.response.body", "body": BODY})

    response = await request(
        enforce(CompressionMiddleware(app)), headers={"accept-encoding": "gzip"}
    )
    assert response.header("content-encoding") == "gzip"
    assert decoded(response) == BODY


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip, br;q=0.9", "gzip"),
        ("br;q=0.1, gzip;q=0.2", "gzip"),
        ("*", "zstd"),
        ("*, zstd;q=0", "br"),
        ("x-gzip", "gzip"),
        ("GZip", "gzip"),
    ],
)
async def test_the_clients_q_values_choose(accept: str, coding: str) -> None:
    response = await request(wrapped(responder()), headers={"accept-encoding": accept})
    assert response.header("content-encoding") == coding
    assert decoded(response) == BODY


async def test_server_preference_breaks_ties_and_limits_the_offer() -> None:
    app = wrapped(responder(), encodings="gzip, br")
    response = await request(app, headers={"accept-encoding": "br, gzip, zstd"})
    assert response.header("content-encoding") == "gzip"
    response = await request(app, headers={"accept-encoding": "zstd"})
    assert response.header("content-encoding") is None
    assert vary(response) == ["Accept-Encoding"]


async def test_repeated_accept_encoding_fields_are_one_list() -> None:
    response = await request(
        wrapped(responder()),
        headers=[("accept-encoding", "zstd;q=0"), ("accept-encoding", "br;q=0.5, gzip;q=0.4")],
    )
    assert response.header("content-encoding") == "br"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"accept-encoding": ""},
        {"accept-encoding": "identity"},
        {"accept-encoding": "gzip;q=0, br;q=0, zstd;q=0"},
        {"accept-encoding": "*;q=0"},
        {"accept-encoding": "identity;q=0, deflate"},
    ],
)
async def test_identity_responses_still_vary(headers: dict[str, str]) -> None:
    response = await request(wrapped(responder()), headers=headers)
    assert response.header("content-encoding") is None
    assert response.body == BODY
    assert response.header("content-length") == str(len(BODY))
    assert vary(response) == ["Accept-Encoding"]


async def test_vary_is_merged_never_duplicated_or_overwritten() -> None:
    cases: list[tuple[Headers, list[str]]] = [
        ([(b"vary", b"Origin")], ["Origin, Accept-Encoding"]),
        ([(b"vary", b"Origin"), (b"vary", b"Cookie")], ["Origin, Cookie, Accept-Encoding"]),
        ([(b"vary", b"accept-encoding")], ["accept-encoding"]),
        ([(b"vary", b"*")], ["*"]),
    ]
    for fields, expected in cases:
        app = responder(headers=[TEXT, *fields])
        for accept in ("gzip", "identity"):
            response = await request(wrapped(app), headers={"accept-encoding": accept})
            assert vary(response) == expected, (fields, accept)


async def test_etag_is_weakened_only_when_compressed() -> None:
    app = responder(headers=[TEXT, (b"etag", b'"v1"'), (b"accept-ranges", b"bytes")])
    response = await request(wrapped(app), headers={"accept-encoding": "gzip"})
    assert response.header("etag") == 'W/"v1"'
    assert response.header("accept-ranges") is None
    response = await request(wrapped(app), headers={"accept-encoding": "identity"})
    assert response.header("etag") == '"v1"'
    assert response.header("accept-ranges") == "bytes"
    weak = responder(headers=[TEXT, (b"etag", b'W/"v1"')])
    response = await request(wrapped(weak), headers={"accept-encoding": "gzip"})
    assert response.header("etag") == 'W/"v1"'


async def test_repeated_fields_and_unknown_start_keys_are_kept() -> None:
    cookies = [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
    app = responder(headers=[TEXT, *cookies], custom_key="kept")
    response = await request(wrapped(app), headers={"accept-encoding": "gzip"})
    assert response.header("content-encoding") == "gzip"
    assert response.header_values("set-cookie") == ["a=1", "b=2"]
    assert response.start["custom_key"] == "kept"


async def test_explicit_identity_content_encoding_is_replaced() -> None:
    app = responder(headers=[TEXT, (b"content-encoding", b"identity")])
    response = await request(wrapped(app), headers={"accept-encoding": "br"})
    assert response.header_values("content-encoding") == ["br"]
    assert decoded(response) == BODY


async def test_the_apps_header_list_and_messages_are_never_changed() -> None:
    constant: Headers = [TEXT, (b"content-length", b"%d" % len(BODY))]
    small: Headers = [TEXT, (b"content-length", b"2")]
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = constant if scope["path"] == "/big" else small
        start = {"type": "http.response.start", "status": 200, "headers": headers}
        body = {"type": "http.response.body", "body": BODY if scope["path"] == "/big" else b"ok"}
        sent.extend((start, body))
        await send(start)
        await send(body)

    mw = wrapped(app)
    response = await request(mw, "GET", "/big", headers={"accept-encoding": "gzip"})
    assert response.header("content-encoding") == "gzip"
    assert constant == [TEXT, (b"content-length", b"%d" % len(BODY))]
    assert sent[0]["headers"] is constant and sent[1]["body"] == BODY
    response = await request(mw, "GET", "/small", headers={"accept-encoding": "gzip"})
    assert response.headers == small


# --------------------------------------------------------------------------------------
# When not to compress


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ([(b"content-encoding", b"br")], 200),
        ([(b"content-encoding", b"identity, gzip")], 200),
        ([(b"cache-control", b"public, no-transform")], 200),
        ([(b"content-range", b"bytes 0-1799/5000")], 200),
        ([(b"repr-digest", b"sha-256=:x:")], 200),
        ([(b"content-md5", b"eA==")], 200),
        ([], 204),
        ([], 205),
        ([], 206),
        ([], 304),
    ],
)
async def test_responses_left_untouched(fields: Headers, status: int) -> None:
    body = b"" if status in (204, 205, 304) else BODY
    app = responder(body, headers=[TEXT, *fields], status=status, length=bool(body))
    response = await request(wrapped(app), headers={"accept-encoding": "gzip, br, zstd"})
    assert response.header("content-encoding") in (None, "br", "identity, gzip")
    assert vary(response) == []
    assert response.body == body
    assert response.headers == [TEXT, *fields] + (
        [(b"content-length", b"%d" % len(body))] if body else []
    )


@pytest.mark.parametrize(
    "content_type",
    [b"image/png", b"video/mp4", b"application/zip", b"font/woff2", b"application/grpc"],
)
async def test_compressed_media_types_are_left_alone(content_type: bytes) -> None:
    app = responder(headers=[(b"content-type", content_type)])
    response = await request(wrapped(app), headers={"accept-encoding": "gzip"})
    assert response.header("content-encoding") is None and vary(response) == []
    assert response.body == BODY


async def test_header_names_an_app_writes_in_capitals_are_read_and_lowercased() -> None:
    # Django sends names as written (Content-Type), against the ASGI spec's advice; the
    # checker would reject that app, so only the middleware's own output is checked.
    app = responder(
        headers=[(b"Content-Type", b"application/json"), (b"X-Frame-Options", b"DENY")],
        length=False,
    )
    response = await request(
        enforce(CompressionMiddleware(app)), headers={"accept-encoding": "gzip"}
    )
    assert response.header("content-encoding") == "gzip"
    assert zlib.decompress(response.body, 31) == BODY
    names = [name for name, _ in response.headers]
    assert b"content-type" in names and b"x-frame-options" in names
    assert all(name == name.lower() for name in names)


async def test_no_content_type_is_left_alone() -> None:
    response = await request(wrapped(responder(headers=[])), headers={"accept-encoding": "gzip"})
    assert response.header("content-encoding") is None and vary(response) == []


async def test_custom_compressible_types() -> None:
    app = responder(headers=[(b"content-type", b"application/x-thing")])
    mw = wrapped(app, compressible_types=["application/x-thing"])
    response = await request(mw, headers={"accept-encoding": "gzip"})
    assert response.header("content-encoding") == "gzip"
    html = wrapped(responder(), compressible_types="application/x-thing")
    response = await request(html, headers={"accept-encoding": "gzip"})
    assert response.header("content-encoding") is None


@pytest.mark.parametrize(
    ("excluded", "content_type"),
    [
        (["text/html"], b"text/html; charset=utf-8"),
        (["Text/HTML; charset=utf-8"], b"text/html"),  # parameters ignored, as Starlette
        (["text/*"], b"text/css"),
        (("application/json",), b"APPLICATION/JSON"),
        ("text/html, text/css", b"text/css"),
    ],
)
async def test_exclude_content_types_are_never_compressed_as_starlette_means_it(
    excluded: Any, content_type: bytes
) -> None:
    app = responder(headers=[(b"content-type", content_type)])
    response = await request(
        wrapped(app, exclude_content_types=excluded), headers={"accept-encoding": "gzip"}
    )
    assert response.header("content-encoding") is None and vary(response) == []
    assert response.body == BODY
    # Other compressible types still are.
    other = wrapped(responder(headers=[(b"content-type", b"application/xml")]))
    response = await request(other, headers={"accept-encoding": "gzip"})
    assert response.header("content-encoding") == "gzip"


async def test_compresslevel_is_starlettes_name_for_gzip_level() -> None:
    body = b"".join(b"%d: %s\n" % (i, BODY[i % 40 : i % 40 + 30]) for i in range(400))
    outputs: dict[tuple[str, int], bytes] = {}
    for name in ("compresslevel", "gzip_level"):
        for level in (1, 9):
            app = wrapped(responder(body), **{name: level})
            response = await request(app, headers={"accept-encoding": "gzip"})
            assert decoded(response) == body
            outputs[name, level] = response.body
    assert outputs["compresslevel", 1] == outputs["gzip_level", 1]
    assert outputs["compresslevel", 9] == outputs["gzip_level", 9]
    assert outputs["compresslevel", 1] != outputs["compresslevel", 9]
    with pytest.raises(TypeError, match="compresslevel is Starlette's name for gzip_level"):
        CompressionMiddleware(responder(), compresslevel=9, gzip_level=4)


@pytest.mark.parametrize("length", [True, False])
async def test_minimum_size_boundary(length: bool) -> None:
    for size, compressed in ((499, False), (500, True)):
        app = responder(BODY[:size], length=length)
        response = await request(wrapped(app), headers={"accept-encoding": "gzip"})
        assert (response.header("content-encoding") == "gzip") is compressed
        assert decoded(response) == BODY[:size]
        assert vary(response) == (["Accept-Encoding"] if compressed else [])


async def test_a_below_minimum_response_passes_as_sent() -> None:
    app = responder(b"tiny", headers=[TEXT, (b"etag", b'"e"')])
    response = await request(wrapped(app), headers={"accept-encoding": "gzip"})
    assert response.headers == [TEXT, (b"etag", b'"e"'), (b"content-length", b"4")]
    assert response.body == b"tiny"


async def test_a_content_length_that_is_not_a_number_is_ignored() -> None:
    app = responder(headers=[TEXT, (b"content-length", b"lots")], length=False)
    mw = enforce(CompressionMiddleware(app))  # the inner check would flag the app's length
    response = await request(mw, headers={"accept-encoding": "gzip"})
    assert response.header("content-encoding") == "gzip"
    assert decoded(response) == BODY


async def test_incompressible_bytes_go_as_they_are() -> None:
    noise = os.urandom(2000)
    app = responder(noise, headers=[(b"content-type", b"application/json")])
    response = await request(wrapped(app), headers={"accept-encoding": "gzip"})
    assert response.header("content-encoding") is None
    assert response.body == noise and response.header("content-length") == "2000"
    assert vary(response) == ["Accept-Encoding"]


async def test_excluded_paths() -> None:
    app = wrapped(responder(), exclude_paths=["/metrics", "/static/"])
    for path, compressed in (("/metrics", False), ("/metrics/x", False), ("/metricsx", True)):
        response = await request(app, "GET", path, headers={"accept-encoding": "gzip"})
        assert (response.header("content-encoding") == "gzip") is compressed, path
    response = await request(app, "GET", "/static/a.js", headers={"accept-encoding": "gzip"})
    assert response.header("content-encoding") is None and vary(response) == []


async def test_skip_set_cookie() -> None:
    app = responder(headers=[TEXT, (b"set-cookie", b"session=secret")])
    response = await request(wrapped(app), headers={"accept-encoding": "gzip"})
    assert response.header("content-encoding") == "gzip"
    response = await request(
        wrapped(app, skip_set_cookie=True), headers={"accept-encoding": "gzip"}
    )
    assert response.header("content-encoding") is None and response.body == BODY


async def test_head_gets_the_fields_a_get_would_get() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        fields = [TEXT, (b"content-length", b"%d" % len(BODY)), (b"etag", b'"h"')]
        await send({"type": "http.response.start", "status": 200, "headers": fields})
        await send({"type": "http.response.body", "body": b""})

    mw = wrapped(app)
    head = await request(mw, "HEAD", "/", headers={"accept-encoding": "zstd"})
    assert head.header("content-encoding") == "zstd"
    assert head.header("content-length") is None  # the compressed length is unknown
    assert head.header("etag") == 'W/"h"'
    assert vary(head) == ["Accept-Encoding"]
    assert head.body == b""
    # A HEAD answered with the whole body (as some frameworks do) is compressed like a GET.
    full = await request(wrapped(responder()), "HEAD", "/", headers={"accept-encoding": "br"})
    get = await request(wrapped(responder()), "GET", "/", headers={"accept-encoding": "br"})
    assert full.headers == get.headers
    # Below the minimum by its Content-Length: untouched, as a GET.
    small = await request(wrapped(responder(b"x" * 10)), "HEAD", "/")
    assert small.headers == [TEXT, (b"content-length", b"10")]


# --------------------------------------------------------------------------------------
# Streams


def recorder(app: ASGIApp, events: list[Any]) -> ASGIApp:
    """Outermost layer: records each message as it reaches the server, in ``events``."""

    async def record(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_recorded(message: Message) -> None:
            events.append(("server", message))
            await send(message)

        await app(scope, receive, send_recorded)

    return record


def streaming_app(
    chunks: Sequence[bytes], events: list[Any], content_type: bytes = b"text/plain"
) -> ASGIApp:
    """Sends ``chunks``, noting in ``events`` how many bytes it has sent before each."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", content_type)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        sent = 0
        for chunk in chunks:
            sent += len(chunk)
            events.append(("app", sent))
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        events.append(("app", sent))
        await send({"type": "http.response.body", "body": b""})

    return app


def check_each_piece_decodes_on_arrival(events: list[Any]) -> tuple[str | None, bytes]:
    """Every body message the server got decodes, on arrival, to all the app had sent."""
    starts = [m for who, m in events if who == "server" and m["type"] == "http.response.start"]
    coding = dict(starts[0]["headers"]).get(b"content-encoding")
    name = coding.decode() if coding else None
    decode = decoder(name)
    so_far = b""
    app_sent = 0
    for who, item in events:
        if who == "app":
            app_sent = item
        elif item["type"] == "http.response.body":
            so_far += decode(item.get("body", b""))
            if name is not None and item.get("more_body", False):
                assert len(so_far) == app_sent, "a piece did not decode on arrival"
    return name, so_far


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
async def test_a_stream_is_compressed_from_its_first_chunk_and_flushed_chunk_by_chunk(
    coding: str,
) -> None:
    events: list[Any] = []
    chunks = [b"a" * 200, b"b" * 200, b"c" * 200, b"d" * 50, b"e" * 3000]
    app = recorder(wrapped(streaming_app(chunks, events)), events)
    response = await request(app, headers={"accept-encoding": coding})
    assert response.header("content-encoding") == coding
    assert response.header("content-length") is None
    assert vary(response) == ["Accept-Encoding"]
    # The start waited for the first chunk (it decides), and not a byte longer.
    assert [who for who, _ in events[:4]] == ["app", "server", "server", "app"]
    assert events[0] == ("app", 200)  # the first chunk, 200 bytes: below minimum_size
    name, data = check_each_piece_decodes_on_arrival(events)
    assert name == coding and data == b"".join(chunks)
    assert decoded(response) == b"".join(chunks)


async def test_a_short_stream_is_compressed_chunk_by_chunk_too() -> None:
    # Below minimum_size in all, but nobody knows that at its first chunk: holding chunks
    # to find out would hold the start for as long as the app takes to send them.
    events: list[Any] = []
    chunks = [b"one ", b"two ", b"three"]
    app = recorder(wrapped(streaming_app(chunks, events)), events)
    response = await request(app, headers={"accept-encoding": "gzip"})
    assert response.header("content-encoding") == "gzip" and vary(response) == ["Accept-Encoding"]
    assert len(response.chunks) == len(chunks) + 1
    assert check_each_piece_decodes_on_arrival(events) == ("gzip", b"one two three")


async def test_flush_always_sends_the_start_before_the_first_chunk() -> None:
    events: list[Any] = []
    chunks = [b"tiny", b"small", b"x" * 10]
    app = recorder(wrapped(streaming_app(chunks, events), flush="always"), events)
    response = await request(app, headers={"accept-encoding": "br"})
    assert response.header("content-encoding") == "br"
    assert [who for who, _ in events[:4]] == ["server", "app", "server", "app"]
    assert check_each_piece_decodes_on_arrival(events) == ("br", b"".join(chunks))


async def test_flush_always_compresses_one_message_without_a_length_as_a_stream() -> None:
    app = responder(b"short", length=False)
    response = await request(wrapped(app, flush="always"), headers={"accept-encoding": "gzip"})
    assert response.header("content-encoding") == "gzip"
    assert response.header("content-length") is None
    assert decoded(response) == b"short"
    # With its length, a response is still sent whole, with the compressed length.
    response = await request(
        wrapped(responder(), flush="always"), headers={"accept-encoding": "gzip"}
    )
    assert response.header_values("content-length") == [str(len(response.body))]


TRICKLE = b"21 bytes of a stream\n"


def trickle(chunks: int, every: float) -> ASGIApp:
    """Starts at once, then sends 21 bytes every ``every`` seconds, ``chunks`` times."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [TEXT]})
        for _ in range(chunks):
            await anyio.sleep(every)
            await send({"type": "http.response.body", "body": TRICKLE, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


@pytest.mark.parametrize("accept", ["gzip", "identity"])
async def test_a_trickling_stream_starts_in_time_for_a_first_byte_timeout_outside(
    accept: str,
) -> None:
    # Issue 20, item 2: in the canonical order (timeout outside compression), holding the
    # start until minimum_size bytes had come (4.8 s at this pace) made the timeout see no
    # start, and answer 504 at 0.5 s, to clients that accept gzip only.
    stack = enforce(
        TimeoutMiddleware(
            enforce(CompressionMiddleware(enforce(trickle(5, 0.2)))), first_byte=0.5, total=None
        )
    )
    response = await request(stack, headers={"accept-encoding": accept})
    assert response.status == 200
    assert response.header("content-encoding") == (None if accept == "identity" else accept)
    assert decoded(response) == TRICKLE * 5


@pytest.mark.parametrize("content_type", [b"text/event-stream", b"application/x-ndjson"])
async def test_event_streams_start_at_once_and_every_event_decodes(content_type: bytes) -> None:
    events: list[Any] = []
    chunks = [b"data: %d\n\n" % i for i in range(5)]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", content_type), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # The client has the headers before the first event is even produced.
        assert [m["type"] for who, m in events if who == "server"] == ["http.response.start"]
        await streaming_app(chunks, events, content_type)(scope, receive, _skip_start(send))

    response = await request(recorder(wrapped(app), events), headers={"accept-encoding": "zstd"})
    assert response.header("content-encoding") == "zstd"
    assert response.header("cache-control") == "no-cache"
    assert check_each_piece_decodes_on_arrival(events) == ("zstd", b"".join(chunks))
    assert len(response.chunks) == len(chunks) + 1


def _skip_start(send: Send) -> Send:
    async def without_start(message: Message) -> None:
        if message["type"] != "http.response.start":
            await send(message)

    return without_start


async def test_an_event_stream_with_a_length_is_one_message() -> None:
    body = b"data: x\n\n" * 100
    app = responder(body, headers=[(b"content-type", b"text/event-stream")])
    response = await request(wrapped(app), headers={"accept-encoding": "gzip"})
    assert response.header("content-length") == str(len(response.body))
    assert decoded(response) == body


async def test_empty_chunks_are_forwarded_empty_once_compressing() -> None:
    # Starlette 1.10's test_gzip_streaming_response_emits_output_per_chunk, in spirit: a
    # message reaches the server for every message the app sent, none dropped.
    chunks = [b"x" * 600, b"", b"y" * 10, b""]
    response = await request(wrapped(responder(chunks)), headers={"accept-encoding": "gzip"})
    assert len(response.chunks) == len(chunks) + 1
    assert response.chunks[1] == b"" and response.chunks[3] == b""
    assert decoded(response) == b"x" * 600 + b"y" * 10


async def test_an_empty_first_chunk_of_an_event_stream() -> None:
    chunks = [b"", b"data: 1\n\n"]
    app = responder(chunks, headers=[(b"content-type", b"text/event-stream")])
    response = await request(wrapped(app), headers={"accept-encoding": "gzip"})
    assert decoded(response) == b"data: 1\n\n"


@pytest.mark.parametrize("one_message", [True, False])
async def test_trailers_follow_the_compressed_body(one_message: bool) -> None:
    body: bytes | list[bytes] = BODY if one_message else [BODY[:900], BODY[900:]]
    trailers = [(b"x-checksum", b"abc")]
    response = await request(
        wrapped(responder(body, trailers=trailers)),
        headers={"accept-encoding": "gzip"},
        extensions=ALL_HTTP_EXTENSIONS,
    )
    assert response.start["trailers"] is True
    assert response.header("content-encoding") == "gzip"
    assert response.header("content-length") is None
    assert response.message_types[-1] == "http.response.trailers"
    assert response.trailers == trailers
    assert decoded(response) == BODY


@pytest.mark.parametrize("threshold", [0, 1000])
async def test_large_chunks_go_to_a_worker_thread(
    threshold: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    real = anyio.to_thread.run_sync

    async def spy(function: Any, *args: Any, **kwargs: Any) -> Any:
        def in_thread(*a: Any) -> Any:
            threads.append(threading.current_thread().name)
            return function(*a)

        return await real(in_thread, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", spy)
    mw = wrapped(responder(), thread_minimum_size=threshold)
    response = await request(mw, headers={"accept-encoding": "zstd"})
    assert decoded(response) == BODY
    events: list[Any] = []
    chunks = [b"s" * 600, b"t" * 2000, b"u" * 5]
    streamed = wrapped(streaming_app(chunks, events), thread_minimum_size=threshold)
    response = await request(streamed, headers={"accept-encoding": "gzip"})
    assert decoded(response) == b"".join(chunks)
    # Threshold 0: the one message; then 600, 2000, 5 bytes and the (empty) end.
    # Threshold 1000: the one message (1800 bytes) and the 2000-byte chunk.
    assert len(threads) == {0: 5, 1000: 2}[threshold]
    assert all(name != threading.main_thread().name for name in threads)


async def test_no_threads_when_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    async def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no worker thread expected")

    monkeypatch.setattr(anyio.to_thread, "run_sync", forbidden)
    big = b"z" * 300_000
    response = await request(
        wrapped(responder(big), thread_minimum_size=None), headers={"accept-encoding": "gzip"}
    )
    assert decoded(response) == big


# --------------------------------------------------------------------------------------
# Every ASGI message


async def test_pathsend_goes_through_with_the_start_untouched() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        fields = [TEXT, (b"content-length", b"5000")]
        await send({"type": "http.response.start", "status": 200, "headers": fields})
        await send({"type": "http.response.pathsend", "path": "/srv/static/app.js"})

    response = await request(
        wrapped(app), headers={"accept-encoding": "gzip"}, extensions=ALL_HTTP_EXTENSIONS
    )
    assert response.message_types == ["http.response.start", "http.response.pathsend"]
    assert response.headers == [TEXT, (b"content-length", b"5000")]
    assert response.pathsend == "/srv/static/app.js"


async def test_zerocopysend_is_not_offered_to_the_app() -> None:
    seen: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(dict(scope["extensions"]))
        await responder()(scope, receive, send)

    server_extensions = {k: dict(v) for k, v in ALL_HTTP_EXTENSIONS.items()}
    response = await request(
        wrapped(app), headers={"accept-encoding": "gzip"}, extensions=server_extensions
    )
    assert decoded(response) == BODY
    assert set(seen[0]) == set(ALL_HTTP_EXTENSIONS) - {"http.response.zerocopysend"}
    assert response.scope["extensions"] == server_extensions  # a copy changed, not this one
    await request(wrapped(app), extensions={"http.response.trailers": {}})
    assert seen[1] == {"http.response.trailers": {}}


async def test_an_event_stream_waits_for_its_first_event_where_pathsend_is_offered() -> None:
    events: list[Any] = []
    chunks = [b"data: 1\n\n", b"data: 2\n\n"]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        assert [who for who, _ in events] == []  # held: a pathsend could still come
        inner = streaming_app(chunks, events, b"text/event-stream")
        await inner(scope, receive, _skip_start(send))

    response = await request(
        recorder(wrapped(app), events),
        headers={"accept-encoding": "gzip"},
        extensions=ALL_HTTP_EXTENSIONS,
    )
    assert check_each_piece_decodes_on_arrival(events) == ("gzip", b"".join(chunks))
    assert response.header("content-encoding") == "gzip"

    async def file_stream(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": "/srv/events.txt"})

    response = await request(
        wrapped(file_stream), headers={"accept-encoding": "gzip"}, extensions=ALL_HTTP_EXTENSIONS
    )
    assert response.headers == [(b"content-type", b"text/event-stream")]
    assert response.pathsend == "/srv/events.txt"


async def test_early_hints_and_unknown_messages_keep_their_order() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.early_hint", "links": [b"</a.css>; rel=preload"]})
        await send({"type": "http.response.start", "status": 200, "headers": [TEXT]})
        await send({"type": "http.response.debug", "info": {"a": 1}})
        await send({"type": "x.unknown", "n": 1})
        await send({"type": "http.response.body", "body": BODY})

    response = await request(
        wrapped(app), headers={"accept-encoding": "gzip"}, extensions=ALL_HTTP_EXTENSIONS
    )
    # An unknown message before the verdict: the response goes as it is.
    assert response.message_types == [
        "http.response.early_hint",
        "http.response.start",
        "http.response.debug",
        "x.unknown",
        "http.response.body",
    ]
    assert response.headers == [TEXT] and response.body == BODY


async def test_unknown_messages_after_compression_began_keep_their_order() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [TEXT]})
        await send({"type": "http.response.body", "body": BODY[:1000], "more_body": True})
        await send({"type": "http.response.push", "path": "/style.css", "headers": []})
        await send({"type": "x.unknown"})
        await send({"type": "http.response.body", "body": BODY[1000:]})

    response = await request(
        wrapped(app), headers={"accept-encoding": "gzip"}, extensions=ALL_HTTP_EXTENSIONS
    )
    assert response.message_types == [
        "http.response.start",
        "http.response.body",
        "http.response.push",
        "x.unknown",
        "http.response.body",
    ]
    assert decoded(response) == BODY


async def test_a_message_after_a_small_first_chunk_keeps_its_order_in_the_stream() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [TEXT]})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await send({"type": "http.response.debug"})
        await send({"type": "http.response.body", "body": b" then the rest"})

    response = await request(
        wrapped(app), headers={"accept-encoding": "gzip"}, extensions=ALL_HTTP_EXTENSIONS
    )
    assert response.message_types == [
        "http.response.start",
        "http.response.body",
        "http.response.debug",
        "http.response.body",
    ]
    assert decoded(response) == b"first then the rest"


async def test_the_request_body_is_untouched() -> None:
    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await responder(b"".join(chunks) * 50)(scope, receive, send)

    response = await request(
        wrapped(echo), "POST", "/", body=[b"ab", b"cd"], headers={"accept-encoding": "br"}
    )
    assert decoded(response) == b"abcd" * 50


async def test_websocket_and_lifespan_pass_through() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": "x" * 2000})
            await send({"type": "websocket.close"})
            return
        await responder()(scope, receive, send)

    mw = wrapped(app)
    session = await websocket(mw, headers={"accept-encoding": "gzip"})
    assert session.sent == ["x" * 2000]
    life = await run_lifespan(mw)
    assert [m["type"] for m in life.messages][-1] == "lifespan.shutdown.complete"
    async with lifespan(mw) as state:
        response = await request(mw, state=state.state, headers={"accept-encoding": "gzip"})
    assert decoded(response) == BODY


async def test_exceptions_propagate_and_nothing_is_completed() -> None:
    async def before_start(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("before")

    async def after_start(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [TEXT]})
        raise RuntimeError("after")

    async def mid_stream(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [TEXT]})
        await send({"type": "http.response.body", "body": BODY, "more_body": True})
        raise RuntimeError("mid")

    for app, text, started in ((before_start, "before", False), (after_start, "after", False)):
        response = await request(
            wrapped(app), headers={"accept-encoding": "gzip"}, raise_app_exceptions=False
        )
        assert str(response.exception) == text and response.started is started
    response = await request(
        wrapped(mid_stream), headers={"accept-encoding": "gzip"}, raise_app_exceptions=False
    )
    assert str(response.exception) == "mid"
    assert response.started and not response.complete


async def test_a_client_gone_mid_stream_propagates_the_send_error() -> None:
    events: list[Any] = []
    chunks = [b"x" * 600] * 5
    with pytest.raises(ClientDisconnected):
        await request(
            wrapped(streaming_app(chunks, events)),
            headers={"accept-encoding": "gzip"},
            disconnect_after=2,
        )


async def test_cancellation_is_not_swallowed() -> None:
    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [TEXT]})
        await send({"type": "http.response.body", "body": BODY, "more_body": True})
        await anyio.sleep(10)

    with anyio.move_on_after(0.05) as scope:
        await request(wrapped(slow), headers={"accept-encoding": "zstd"})
    assert scope.cancelled_caught


SCRIPT = b"console.log('hello');\n" * 100


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "app.js"
    path.write_bytes(SCRIPT)
    return path


async def test_starlette_app_and_add_middleware(script: Path) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import FileResponse, JSONResponse, StreamingResponse
    from starlette.routing import Route

    rows = [{"id": i, "name": f"row {i}"} for i in range(200)]

    async def listing(_: Any) -> JSONResponse:
        return JSONResponse(rows)

    async def stream(_: Any) -> StreamingResponse:
        async def lines() -> Any:
            for i in range(50):
                yield f'{{"n": {i}}}\n'

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def static(_: Any) -> FileResponse:
        return FileResponse(script)

    app = Starlette(
        routes=[Route("/rows", listing), Route("/stream", stream), Route("/app.js", static)],
        middleware=[Middleware(CompressionMiddleware, minimum_size=100)],
    )
    checked = enforce(app)
    headers = {"accept-encoding": "br, gzip"}
    response = await request(checked, "GET", "/rows", headers=headers)
    assert response.header("content-encoding") == "br"
    assert decoded(response).startswith(b'[{"id":0')
    response = await request(checked, "GET", "/stream", headers=headers)
    assert decoded(response) == b"".join(b'{"n": %d}\n' % i for i in range(50))
    response = await request(checked, "GET", "/app.js", headers=headers)
    assert decoded(response) == SCRIPT  # body chunks: compressed
    response = await request(
        checked, "GET", "/app.js", headers=headers, extensions=ALL_HTTP_EXTENSIONS
    )
    assert response.pathsend == str(script)  # pathsend: sent as the file is
    assert response.header("content-encoding") is None


# --------------------------------------------------------------------------------------
# Options and caches


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("minimum_size", -1, ValueError),
        ("minimum_size", "500", TypeError),
        ("encodings", "gzip, deflate", ValueError),
        ("encodings", ["gzip", "GZIP"], ValueError),
        ("encodings", "", ValueError),
        ("encodings", 5, TypeError),
        ("gzip_level", 0, ValueError),
        ("gzip_level", 10, ValueError),
        ("brotli_quality", 12, ValueError),
        ("zstd_level", 23, ValueError),
        ("zstd_level", 3.0, TypeError),
        ("compressible_types", [], ValueError),
        ("compressible_types", ["text"], ValueError),
        ("exclude_content_types", ["zip"], ValueError),
        ("exclude_content_types", 5, TypeError),
        ("compresslevel", 0, ValueError),
        ("compresslevel", 10, ValueError),
        ("compresslevel", "9", TypeError),
        ("exclude_paths", ["metrics"], ValueError),
        ("flush", "never", ValueError),
        ("thread_minimum_size", -1, ValueError),
        ("thread_minimum_size", True, TypeError),
        ("skip_set_cookie", "yes", TypeError),
    ],
)
def test_bad_options_fail_at_start_up(option: str, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=option if option != "encodings" else "encod|coding"):
        CompressionMiddleware(responder(), **{option: value})


def test_a_missing_library_is_not_offered_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_compression_codecs.BACKENDS, "zstandard", None)
    mw = CompressionMiddleware(responder())
    assert [codec.token for codec in mw.codecs] == [b"br", b"gzip"]
    with pytest.raises(ValueError, match="zstd"):
        CompressionMiddleware(responder(), encodings=("zstd", "br", "gzip"))


def test_options_are_kept() -> None:
    mw = CompressionMiddleware(responder(), encodings=["br"], flush="always")
    assert [codec.token for codec in mw.codecs] == [b"br"]
    assert mw.minimum_size == 500 and mw.flush == "always"
    assert mw.thread_minimum_size == 128 * 1024 and mw.skip_set_cookie is False


async def test_negotiation_is_cached_and_long_values_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes | None] = []

    def negotiate(accept: bytes | None, offered: Sequence[bytes]) -> bytes | None:
        calls.append(accept)
        return negotiate_encoding(accept, offered)

    monkeypatch.setattr(compression, "negotiate_encoding", negotiate)
    mw = CompressionMiddleware(responder())
    for _ in range(3):
        response = await request(mw, headers={"accept-encoding": "gzip, br"})
        assert response.header("content-encoding") == "br"
    assert calls == [b"gzip, br"]  # negotiated once, answered from the cache after
    long = "gzip;q=0.5, " + ", ".join(f"x-coding-{i}" for i in range(40))
    for _ in range(2):
        response = await request(mw, headers={"accept-encoding": long})
        assert response.header("content-encoding") == "gzip"
    assert calls == [b"gzip, br", long.encode(), long.encode()]  # never cached


# --------------------------------------------------------------------------------------
# Any body, any chunking, any Accept-Encoding: the same bytes out


_ACCEPTS = st.one_of(
    st.lists(
        st.tuples(
            st.sampled_from(["gzip", "br", "zstd", "identity", "*", "deflate", "x-gzip"]),
            st.sampled_from(["", ";q=0", ";q=0.3", ";q=1"]),
        ),
        max_size=4,
    ).map(lambda items: ", ".join(token + q for token, q in items)),
    st.text(max_size=30).map(lambda text: text.encode("utf-8").decode("latin-1")),
)
_BODIES = st.one_of(
    st.binary(max_size=3000),
    st.text(alphabet="abc \n{}:,", max_size=4000).map(str.encode),
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=_BODIES,
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=6),
    one_message=st.booleans(),
    accept=_ACCEPTS,
    content_type=st.sampled_from([b"text/plain", b"text/event-stream", b"application/json"]),
    flush=st.sampled_from(["auto", "always"]),
    minimum_size=st.sampled_from([0, 20, 500]),
)
def test_any_body_any_chunking_any_accept_encoding(
    anyio_backend: str,
    body: bytes,
    cuts: list[int],
    one_message: bool,
    accept: str,
    content_type: bytes,
    flush: str,
    minimum_size: int,
) -> None:
    points = sorted({min(cut, len(body)) for cut in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]

    async def main() -> None:
        events: list[Any] = []
        inner = (
            responder(body, headers=[(b"content-type", content_type)])
            if one_message
            else streaming_app(chunks, events, content_type)
        )
        mw = wrapped(inner, flush=flush, minimum_size=minimum_size)
        response = await request(recorder(mw, events), headers={"accept-encoding": accept})
        assert decoded(response) == body
        if not one_message:
            assert check_each_piece_decodes_on_arrival(events)[1] == body
        coding = response.header("content-encoding")
        if coding is not None:
            assert vary(response) == ["Accept-Encoding"]
            length = response.header("content-length")
            assert length is None or int(length) == len(response.body)

    anyio.run(main, backend=anyio_backend)
