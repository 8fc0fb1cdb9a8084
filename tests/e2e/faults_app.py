"""The app and config files of the multi-worker and fault-injection tests.

The app is tests/e2e/stack.py's Starlette app with endpoints that misbehave on demand:

* ``/pid`` and ``/shared`` answer with the worker's process id (``/shared`` is the path
  the multi-worker test limits);
* ``/endless`` streams until the client goes away (or ``ENDLESS_CAP`` chunks);
* ``/big?size=N`` streams ``N`` bytes with a ``content-length``, for slow readers;
* ``/raise/before``, ``/raise/midbody?at=K`` and ``/raise/background`` raise ``AppFault``
  before the response starts, after ``K`` body chunks, and in a background task after
  the body went out.

Below the app, the client's side of the fault tests: a ``traceparent`` naming the
request's trace, its one server span, access log lines counted by request id, and raw
HTTP/1.1 over a socket for clients that misbehave on purpose.

``config_text`` renders the e2e stack into a config file with some middleware options
replaced (a Redis store, an idle-upload limit), so the servers run the same stack as
every other e2e test with only what a test needs changed.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import anyio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from asgikit.contract import enforce
from asgikit.types import ASGIApp
from tests.e2e.servers import HOST, Running
from tests.e2e.stack import ROUTES, _toml, export_spans, json_lines, lifespan, stack

__all__ = [
    "CHUNK",
    "ENDLESS_CAP",
    "MIDBODY_CHUNK",
    "AppFault",
    "config_text",
    "connect",
    "faults_app",
    "logged_counts",
    "read_body",
    "read_response_head",
    "request_head",
    "server_span",
    "trace_headers",
    "traced_faults_app",
]

CHUNK: Final = 1024  # bytes per /endless chunk: large enough that nothing holds it back
ENDLESS_CAP: Final = 500  # /endless gives up after this many chunks (about 10 s)
ENDLESS_PAUSE: Final = 0.02
BIG_CHUNK: Final = 64 * 1024
MIDBODY_CHUNK: Final = b"partial body chunk\n"


class AppFault(RuntimeError):
    """What the /raise endpoints raise (its name is the access log's ``error.type``)."""


async def pid(request: Request) -> Response:
    return JSONResponse({"pid": os.getpid()})


async def endless(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for n in range(ENDLESS_CAP):
            yield (b"chunk %05d " % n).ljust(CHUNK - 1, b".") + b"\n"
            await anyio.sleep(ENDLESS_PAUSE)

    return StreamingResponse(chunks(), media_type="text/plain")


async def big(request: Request) -> Response:
    size = int(request.query_params["size"])

    async def chunks() -> AsyncIterator[bytes]:
        left = size
        while left > 0:
            piece = min(left, BIG_CHUNK)
            left -= piece
            yield b"x" * piece

    headers = {"content-length": str(size)}
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)


async def raise_before(request: Request) -> Response:
    raise AppFault("raised before the response started")


async def raise_midbody(request: Request) -> Response:
    at = int(request.query_params.get("at", "1"))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(at):
            yield MIDBODY_CHUNK
            await anyio.sleep(0.005)
        raise AppFault(f"raised after {at} body chunks")

    return StreamingResponse(chunks(), media_type="text/plain")


def _fail_in_background() -> None:
    raise AppFault("raised in a background task after the body")


async def raise_background(request: Request) -> Response:
    return Response(
        "sent in full\n", media_type="text/plain", background=BackgroundTask(_fail_in_background)
    )


FAULT_ROUTES: Final = (
    Route("/pid", pid),
    Route("/shared", pid),
    Route("/endless", endless),
    Route("/big", big),
    Route("/raise/before", raise_before),
    Route("/raise/midbody", raise_midbody),
    Route("/raise/background", raise_background),
)

faults_app: ASGIApp = enforce(Starlette(routes=[*ROUTES, *FAULT_ROUTES], lifespan=lifespan))
"""The e2e Starlette app with the fault endpoints, behind the contract checker."""


def traced_faults_app() -> ASGIApp:
    """App factory: ``faults_app``, with spans exported to ``$ASGIKIT_E2E_SPANS``."""
    export_spans()
    return faults_app


APP: Final = "tests.e2e.faults_app:traced_faults_app"


def config_text(options: Mapping[str, Mapping[str, Any]] | None = None, *, app: str = APP) -> str:
    """A config file (TOML, JSON logs) serving ``app`` behind the e2e stack.

    ``options`` replaces options per middleware name (``{"rate_limit": {"storage": url}}``);
    a middleware not in the stack is an error, so a test cannot silently run without it.
    """
    replaced = dict(options or {})
    lines = [f"app = {_toml(app)}", "factory = true", ""]
    lines += ["[logging]", 'format = "json"', 'level = "info"']
    for name, defaults in stack():
        merged = {**defaults, **replaced.pop(name, {})}
        lines += ["", "[[middleware]]", f"use = {_toml(name)}"]
        lines += [f"{key} = {_toml(value)}" for key, value in merged.items()]
    if replaced:
        raise ValueError(f"not in the e2e stack: {sorted(replaced)}")
    return "\n".join(lines) + "\n"


# ---- the client's side: traces, spans, log lines, raw HTTP/1.1 ------------------------

CLIENT_TIMEOUT: Final = 10.0
LOG_TIMEOUT: Final = 5.0


def trace_headers() -> tuple[str, dict[str, str]]:
    """A new trace id and the ``traceparent`` header that makes it the request's trace."""
    trace_id = secrets.token_hex(16)
    return trace_id, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}


def server_span(server: Running, trace_id: str) -> dict[str, Any]:
    """The request's server span: exported once, so ended once."""
    spans = [s for s in server.spans(trace_id) if s["kind"] == "SpanKind.SERVER"]
    assert len(spans) == 1, f"{len(spans)} server spans in trace {trace_id}: {spans}"
    assert spans[0]["end_time"] is not None
    return spans[0]


def logged_counts(server: Running, ids: Counter[str]) -> Counter[str]:
    """Access log lines per request id among ``ids``, once every one is there (or 5 s)."""
    deadline = time.monotonic() + LOG_TIMEOUT
    while True:
        found = Counter(
            line["request_id"]
            for line in json_lines(server.output())
            if line.get("event") == "http.request" and line.get("request_id") in ids
        )
        if found.keys() == ids.keys() or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def connect(server: Running, receive_buffer: int | None = None) -> socket.socket:
    """A TCP connection to ``server``; ``receive_buffer`` bytes makes a slow reader's window."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # before connecting: it bounds the window offered
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(CLIENT_TIMEOUT)
    sock.connect((HOST, server.port))
    return sock


def request_head(method: str, path: str, headers: Mapping[str, str]) -> bytes:
    """An HTTP/1.1 request head (uncompressed responses asked for) with ``headers``."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {HOST}", "accept-encoding: identity"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_response_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The status, the headers (lowercase names) and the body bytes read with them."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"the connection closed before the response head: {data!r}"
        data += more
    head, rest = data.split(b"\r\n\r\n", 1)
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for field in fields:
        name, value = field.split(":", 1)
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, rest


def read_body(sock: socket.socket, headers: Mapping[str, str], body: bytes) -> bytes:
    """The rest of a ``content-length`` body."""
    size = int(headers["content-length"])
    while len(body) < size:
        more = sock.recv(65536)
        assert more, f"the connection closed after {len(body)} of {size} bytes"
        body += more
    return body
