"""The full stack on each real server: every feature a client can see, and its log line.

Each server runs as a child process on a free loopback port (tests/e2e/servers.py),
serving tests/e2e/stack.py's Starlette app through a config file with JSON logs; the
tests talk to it with httpx and the ``websockets`` client, then find each request's
access log line in the server's output by the ``x-request-id`` the response carried.
A server that cannot do something has it in ``SERVERS[...].limitations``: the test then
runs as a strict xfail, and the reason goes to docs/compatibility.md.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path

import brotli
import httpx
import pytest

from tests.e2e.conftest import expect_limitation
from tests.e2e.servers import Running
from tests.e2e.stack import (
    ALLOWED_ORIGIN,
    DOCUMENT,
    EVENTS,
    FILE_BODY,
    LIFESPAN_ENV,
    LIMIT,
    SLOW_LIMIT,
    needs,
)

websockets_client = pytest.importorskip(
    "websockets.sync.client", reason="the websockets package is not installed"
)
zstandard = pytest.importorskip("zstandard", reason="zstandard is not installed")

TIMEOUT = 10.0
MARGIN = 3.0  # a loaded two-core machine running six servers


@pytest.fixture
def client(server: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, trust_env=False) as http:
        yield http


def logged(server: Running, response: httpx.Response) -> dict[str, object]:
    """The access log line of ``response``, found by its x-request-id."""
    request_id = response.headers["x-request-id"]
    return server.access_line(request_id)


@pytest.mark.compat("servers", "contract")
def test_the_scope_follows_the_asgi_spec(
    server: Running, client: httpx.Client, request: pytest.FixtureRequest
) -> None:
    expect_limitation(request, server.spec, "contract")
    types = client.get("/scope").json()
    assert types == {"client": ["str", "int"], "server": ["str", "int"]}


@pytest.mark.compat("servers", "http")
def test_get_and_post_with_bodies(server: Running, client: httpx.Client) -> None:
    got = client.get("/items/42", params={"q": "x"})
    assert got.status_code == 200 and got.json() == {"item_id": "42"}
    line = logged(server, got)
    assert line["http.route"] == "/items/{item_id}" and line["http.response.status_code"] == 200

    body = bytes(range(256)) * 400  # 100 kB, every byte value
    posted = client.post(
        "/echo",
        content=body,
        headers={"content-type": "application/octet-stream", "accept-encoding": "identity"},
    )
    assert posted.status_code == 200 and posted.content == body
    line = logged(server, posted)
    assert line["http.request.method"] == "POST"
    assert line["http.request.body.size"] == len(body)
    assert line["http.response.body.size"] == len(body)


@pytest.mark.compat("servers", "streaming")
def test_a_streamed_body_arrives_whole(server: Running, client: httpx.Client) -> None:
    with client.stream("GET", "/stream") as response:
        chunks = list(response.iter_bytes())
    assert b"".join(chunks) == b"".join(b"chunk %d\n" % n for n in range(5))
    assert logged(server, response)["http.response.status_code"] == 200


@pytest.mark.compat("servers", "sse")
def test_server_sent_events_arrive_one_by_one_through_compression(
    server: Running, client: httpx.Client
) -> None:
    """Event n+1 is sent only once the client has decoded (and acked) event n."""
    key = f"sse-{server.name}"
    data: list[str] = []
    with (
        httpx.Client(base_url=server.url, timeout=TIMEOUT, trust_env=False) as acker,
        client.stream("GET", f"/events?id={key}", headers={"accept-encoding": "gzip"}) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["content-encoding"] == "gzip"
        for line in response.iter_lines():
            if line.startswith("data: "):
                data.append(line.removeprefix("data: "))
                # After a timeout line the stream ends; that ack is simply not used.
                acker.get("/ack", params={"id": key, "n": len(data) - 1})
    assert data == [f"event {n}" for n in range(EVENTS)]
    assert logged(server, response)["http.route"] == "/events"


@pytest.mark.compat("servers", "file")
def test_a_file_response(
    server: Running, client: httpx.Client, request: pytest.FixtureRequest
) -> None:
    expect_limitation(request, server.spec, "file")
    response = client.get("/file", headers={"accept-encoding": "identity"})
    assert response.status_code == 200 and response.content == FILE_BODY
    line = logged(server, response)
    assert line["http.response.body.size"] == len(FILE_BODY)
    assert "error.type" not in line


@pytest.mark.compat("servers", "pathsend")
def test_the_server_offers_pathsend(
    server: Running, client: httpx.Client, request: pytest.FixtureRequest
) -> None:
    expect_limitation(request, server.spec, "pathsend")
    response = client.get("/file", headers={"accept-encoding": "gzip"})
    assert response.headers["x-pathsend-offered"] == "1"
    # pathsend goes out untouched: not compressed, and logged at the file's size.
    assert "content-encoding" not in response.headers and response.content == FILE_BODY
    assert logged(server, response)["http.response.body.size"] == len(FILE_BODY)


def _decode(coding: str, raw: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(raw)
    if coding == "br":
        decoded: bytes = brotli.decompress(raw)
        return decoded
    if coding == "zstd":
        streamed: bytes = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        return streamed
    return raw


@pytest.mark.compat("servers", "compression")
@pytest.mark.parametrize("coding", ["gzip", "br", "zstd", "identity"])
def test_compression_is_negotiated_per_client(
    server: Running, client: httpx.Client, coding: str
) -> None:
    with client.stream("GET", "/document", headers={"accept-encoding": coding}) as response:
        raw = b"".join(response.iter_raw())
    expected = None if coding == "identity" else coding
    assert response.headers.get("content-encoding") == expected
    assert json.loads(_decode(coding, raw)) == json.loads(DOCUMENT)
    if expected is not None:
        assert len(raw) < len(DOCUMENT) and "accept-encoding" in response.headers["vary"].lower()
    # The bytes logged are the bytes sent.
    assert logged(server, response)["http.response.body.size"] == len(raw)


@pytest.mark.compat("servers", "cors")
def test_cors_preflight_from_an_allowed_and_a_refused_origin(
    server: Running, client: httpx.Client
) -> None:
    ask = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    allowed = client.options("/echo", headers={"origin": ALLOWED_ORIGIN, **ask})
    assert 200 <= allowed.status_code < 300
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert logged(server, allowed)["http.request.method"] == "OPTIONS"

    refused = client.options("/echo", headers={"origin": "https://evil.example", **ask})
    assert "access-control-allow-origin" not in refused.headers
    assert logged(server, refused)["http.response.status_code"] == refused.status_code


@pytest.mark.compat("servers", "timeout")
def test_the_time_limit_answers_504_with_cors_headers(
    server: Running, client: httpx.Client
) -> None:
    begin = time.monotonic()
    response = client.get("/slow", headers={"origin": ALLOWED_ORIGIN})
    elapsed = time.monotonic() - begin
    assert response.status_code == 504
    assert SLOW_LIMIT <= elapsed < SLOW_LIMIT + MARGIN
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    line = logged(server, response)
    assert line["http.response.status_code"] == 504 and line["error.type"] == "timeout"


@pytest.mark.compat("servers", "rate_limit")
def test_over_the_rate_limit_comes_a_429_with_cors_headers(
    server: Running, client: httpx.Client
) -> None:
    needs("rate_limit")
    origin = {"origin": ALLOWED_ORIGIN}
    answers = [client.get("/limited", headers=origin) for _ in range(LIMIT + 1)]
    assert [answer.status_code for answer in answers] == [200] * LIMIT + [429]
    refused = answers[-1]
    assert refused.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert int(refused.headers["retry-after"]) > 0
    assert logged(server, refused)["http.response.status_code"] == 429
    assert client.get("/items/1").status_code == 200  # other paths are not limited


@pytest.mark.compat("servers", "tracing")
def test_each_request_gets_a_span_whose_trace_id_is_in_its_log_line(
    server: Running, client: httpx.Client
) -> None:
    needs("tracing")
    response = client.get("/items/99")
    line = logged(server, response)
    mine = server.spans(str(line["trace_id"]))
    (span,) = [s for s in mine if s["kind"] == "SpanKind.SERVER"]
    assert span["name"] == "GET /items/{item_id}"
    assert span["attributes"]["http.route"] == "/items/{item_id}"
    assert span["attributes"]["http.response.status_code"] == 200
    assert span["end_time"] is not None


@pytest.mark.compat("servers", "access_log")
def test_access_log_lines_carry_the_request_id_route_and_real_client(
    server: Running, client: httpx.Client
) -> None:
    mine = client.get("/items/7", headers={"x-request-id": "client-chosen-id-0001"})
    assert mine.headers["x-request-id"] == "client-chosen-id-0001"
    forwarded = client.get("/items/8", headers={"x-forwarded-for": "203.0.113.7"})
    ids = {mine.headers["x-request-id"], forwarded.headers["x-request-id"]}
    assert len(ids) == 2
    line = logged(server, mine)
    assert line["url.path"] == "/items/7" and line["http.route"] == "/items/{item_id}"
    assert line["level"] == "info" and line["client.address"] == "127.0.0.1"
    # The loopback peer is a trusted proxy: the line shows the client it forwarded for.
    assert logged(server, forwarded)["client.address"] == "203.0.113.7"


@pytest.mark.compat("servers", "websocket")
def test_websocket_echo(server: Running) -> None:
    request_id = f"ws-{server.name}-echo"
    with websockets_client.connect(
        f"{server.ws_url}/ws",
        additional_headers={"x-request-id": request_id},
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
    ) as socket:
        for text in ("ping", "ünïcode", "x" * 10_000):
            socket.send(text)
            assert socket.recv(timeout=TIMEOUT) == text
    line = server.access_line(request_id)
    assert line["event"] == "websocket.connection" and line["url.path"] == "/ws"


@pytest.mark.compat("servers", "websocket_id")
def test_the_websocket_handshake_carries_the_request_id(
    server: Running, request: pytest.FixtureRequest
) -> None:
    expect_limitation(request, server.spec, "websocket_id")
    with websockets_client.connect(
        f"{server.ws_url}/ws", open_timeout=TIMEOUT, close_timeout=TIMEOUT
    ) as socket:
        request_id = socket.response.headers.get("x-request-id")
        socket.send("ping")
        assert socket.recv(timeout=TIMEOUT) == "ping"
    assert request_id, "websocket.accept's headers reach the handshake response"
    assert server.access_line(request_id)["url.path"] == "/ws"


@pytest.mark.compat("servers", "lifespan")
def test_lifespan_startup_and_shutdown(server: Running, request: pytest.FixtureRequest) -> None:
    """Runs last for its server: it stops the server to see the shutdown."""
    expect_limitation(request, server.spec, "lifespan")
    notes = Path(server.env[LIFESPAN_ENV])
    started = notes.read_text().split() if notes.exists() else []
    assert "startup" in started, "the app's lifespan startup ran before serving"
    server.stop()
    assert not server.alive()
    events = [line.split()[0] for line in notes.read_text().splitlines()]
    assert events == ["startup", "shutdown"]
