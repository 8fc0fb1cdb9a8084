"""CompressionMiddleware under uvicorn on loopback: curl and httpx decode what it sends.

uvicorn serves in a thread of the test process, on a free port of 127.0.0.1; curl runs as a
child process with a time limit and is killed by its PID if it outlives the test. The
event-stream test proves each event is delivered before the next is produced: the app
sends event n, then waits until the client has decoded it (a threading.Event the client
sets); had the event been held back or not been decodable on arrival, the app would time
out and say so in the stream.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio.to_thread
import httpx
import pytest

from asgikit.middleware.compression import CompressionMiddleware
from asgikit.types import Receive, Scope, Send

uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install uvicorn)")

CODINGS = ("gzip", "br", "zstd")
DOCUMENT = json.dumps([{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(600)])
BODY = DOCUMENT.encode()
EVENTS = 5
ACK_TIMEOUT = 5.0
# Per request id: one threading.Event per event, set by the client once it has decoded it.
ACKS: dict[str, list[threading.Event]] = {}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    if scope["path"] == "/events":
        await events(scope, send)
        return
    body = BODY if scope["path"] == "/document" else b"tiny"
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def events(scope: Scope, send: Send) -> None:
    acks = ACKS[scope["query_string"].decode()]
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for n in range(EVENTS):
        event = b"id: %d\ndata: event number %d\n\n" % (n, n)
        await send({"type": "http.response.body", "body": event, "more_body": True})
        if not await anyio.to_thread.run_sync(acks[n].wait, ACK_TIMEOUT):
            failure = b"data: timeout waiting for the client to decode event %d\n\n" % n
            await send({"type": "http.response.body", "body": failure, "more_body": True})
            break
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """uvicorn serving the app behind CompressionMiddleware, in a thread, on 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        CompressionMiddleware(app),
        http="h11",
        loop="asyncio",
        lifespan="off",
        log_level="warning",
        access_log=False,
        log_config=None,  # the test process's logging stays as the other tests left it
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 10 s")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        if thread.is_alive():  # pragma: no cover - only when shutdown hangs
            server.force_exit = True
            thread.join(10)
        sock.close()


# --------------------------------------------------------------------------------------
# httpx


@pytest.mark.parametrize("coding", CODINGS)
def test_httpx_decodes_each_coding(base_url: str, coding: str) -> None:
    with httpx.Client(timeout=10) as client:
        response = client.get(f"{base_url}/document", headers={"accept-encoding": coding})
        assert response.headers["content-encoding"] == coding
        assert response.headers["vary"] == "Accept-Encoding"
        assert int(response.headers["content-length"]) < len(BODY)
        assert response.json() == json.loads(DOCUMENT)
        small = client.get(f"{base_url}/small", headers={"accept-encoding": coding})
        assert "content-encoding" not in small.headers and small.content == b"tiny"
        head = client.head(f"{base_url}/document", headers={"accept-encoding": coding})
        assert head.headers["content-encoding"] == coding and head.content == b""


@pytest.mark.parametrize("coding", CODINGS)
def test_an_event_stream_arrives_event_by_event(base_url: str, coding: str) -> None:
    request_id = f"httpx-{coding}"
    ACKS[request_id] = [threading.Event() for _ in range(EVENTS)]
    received: list[str] = []
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "GET", f"{base_url}/events?{request_id}", headers={"accept-encoding": coding}
        ) as response,
    ):
        assert response.headers["content-encoding"] == coding
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(line)
                if "timeout" in line:
                    break
                ACKS[request_id][len(received) - 1].set()
    assert received == [f"data: event number {n}" for n in range(EVENTS)]


# --------------------------------------------------------------------------------------
# curl


CURL = shutil.which("curl")


def curl_features() -> set[str]:
    if CURL is None:
        return set()
    version = subprocess.run(
        [CURL, "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    for line in version.splitlines():
        if line.startswith("Features:"):
            return {feature.lower() for feature in line.split()[1:]}
    return set()  # pragma: no cover - every curl prints its features


FEATURES = curl_features()
# curl's feature names for the libraries that decode each coding.
NEEDS = {"gzip": "libz", "br": "brotli", "zstd": "zstd"}


def needs_curl_with(coding: str) -> pytest.MarkDecorator:
    if CURL is None:
        return pytest.mark.skip(reason="curl is not installed (Debian: apt-get install curl)")
    return pytest.mark.skipif(
        NEEDS[coding] not in FEATURES,
        reason=f"this curl cannot decode {coding} (no {NEEDS[coding]} in `curl --version`)",
    )


@pytest.mark.parametrize(
    "coding", [pytest.param(coding, marks=needs_curl_with(coding)) for coding in CODINGS]
)
def test_curl_compressed_decodes_each_coding(base_url: str, coding: str, tmp_path: Path) -> None:
    assert CURL is not None
    headers_file = tmp_path / "headers.txt"
    result = subprocess.run(
        [
            CURL,
            "--silent",
            "--show-error",
            "--compressed",
            "--max-time",
            "10",
            "--header",
            f"Accept-Encoding: {coding}",
            "--dump-header",
            str(headers_file),
            f"{base_url}/document",
        ],
        capture_output=True,
        timeout=20,
        check=True,
    )
    assert result.stdout == BODY
    received = headers_file.read_text().lower()
    assert f"content-encoding: {coding}" in received
    assert "vary: accept-encoding" in received


@pytest.mark.parametrize(
    "coding", [pytest.param(coding, marks=needs_curl_with(coding)) for coding in CODINGS]
)
def test_curl_gets_an_event_stream_event_by_event(base_url: str, coding: str) -> None:
    assert CURL is not None
    request_id = f"curl-{coding}"
    ACKS[request_id] = [threading.Event() for _ in range(EVENTS)]
    process = subprocess.Popen(
        [
            CURL,
            "--silent",
            "--no-buffer",
            "--compressed",
            "--max-time",
            "20",
            "--header",
            f"Accept-Encoding: {coding}",
            f"{base_url}/events?{request_id}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    received: list[bytes] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(b"data: "):
                received.append(line.rstrip(b"\n"))
                if b"timeout" in line:
                    break
                ACKS[request_id][len(received) - 1].set()
        process.wait(10)
    finally:
        if process.poll() is None:  # pragma: no cover - only when curl hangs
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
    assert received == [b"data: event number %d" % n for n in range(EVENTS)]
