"""The full middleware stack the end-to-end tests serve, and the Starlette app inside it.

``MIDDLEWARE`` is the one list of what the stack runs: a built-in name and its options
per entry. It is kept in the canonical order of docs/architecture.md (``stack()`` checks
it), rendered into a config file for the servers (``config_toml``) and wrapped in code for the
framework hooks (``pipeline``). A middleware joins (or leaves) every e2e test and the
compatibility table by its entry here; the tests of a feature whose middleware is not
listed skip, saying so.

The app endpoints cover what a server must carry: bodies both ways, a streamed body,
server-sent events, a file (``http.response.pathsend`` when the server offers it), a
request slower than the time limit, a websocket echo, and the lifespan (written to the
file named by ``$ASGIKIT_E2E_LIFESPAN`` so the test sees start-up and shutdown).

Servers that take a factory serve ``asgikit:app_from_env``; the ones that take only a
module attribute serve ``tests.e2e.stack:served``, built from ``$ASGIKIT_CONFIG`` on
first access.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, Final

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgikit.contract import enforce
from asgikit.pipeline import CANONICAL_ORDER, Pipeline
from asgikit.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "ALLOWED_ORIGIN",
    "DOCUMENT",
    "EVENTS",
    "FILE_BODY",
    "FILE_ENV",
    "LIFESPAN_ENV",
    "LIMIT",
    "MIDDLEWARE",
    "SLOW_LIMIT",
    "SPANS_ENV",
    "config_toml",
    "create_starlette_app",
    "example_app",
    "json_lines",
    "names",
    "needs",
    "pipeline",
    "raw_app",
    "stack",
]

ALLOWED_ORIGIN: Final = "https://app.example.com"
SLOW_LIMIT: Final = 0.5  # seconds: /slow sleeps longer and gets the 504
LIMIT: Final = 3  # requests to /limited per minute (and at once) before the 429
LIFESPAN_ENV: Final = "ASGIKIT_E2E_LIFESPAN"
SPANS_ENV: Final = "ASGIKIT_E2E_SPANS"
FILE_ENV: Final = "ASGIKIT_E2E_FILE"

MIDDLEWARE: list[tuple[str, dict[str, Any]]] = [
    ("proxy_headers", {"trusted_proxies": ["127.0.0.1", "::1"]}),
    ("request_id", {}),
    ("access_log", {}),
    ("tracing", {}),  # the global tracer provider: see traced_example_app
    (
        "cors",
        {
            "allow_origins": [ALLOWED_ORIGIN],
            "allow_methods": ["GET", "POST"],
            "allow_headers": ["content-type"],
            "expose_headers": ["x-request-id"],
        },
    ),
    ("rate_limit", {"rules": [{"path": "/limited", "rate": f"{LIMIT}/minute", "burst": LIMIT}]}),
    ("timeout", {"total": 10.0, "routes": {"/slow": {"total": SLOW_LIMIT}}}),
    ("compression", {"minimum_size": 500}),
]
"""The stack, outermost first: ``(built-in name, options)``: every canonical middleware."""

DOCUMENT: Final = json.dumps(
    [{"id": n, "name": f"item {n}", "tags": ["a", "b"]} for n in range(300)]
)
EVENTS: Final = 4
FILE_BODY: Final = b"".join(b"line %04d of the served file\n" % n for n in range(400))


def stack() -> list[tuple[str, dict[str, Any]]]:
    """``MIDDLEWARE``, checked to be in the canonical order with no name twice."""
    listed = [name for name, _ in MIDDLEWARE]
    expected = sorted(listed, key=CANONICAL_ORDER.index)
    if listed != expected or len(set(listed)) != len(listed):
        raise ValueError(f"MIDDLEWARE must follow the canonical order {expected}, not {listed}")
    return MIDDLEWARE


def names() -> list[str]:
    """The names of the middleware in the stack, outermost first."""
    return [name for name, _ in stack()]


def pipeline(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Pipeline:
    """The stack as a ``Pipeline`` (for wrapping in code and framework hooks).

    ``overrides`` adds options per middleware name, such as live objects a config file
    cannot hold (``{"tracing": {"tracer_provider": provider}}``).
    """
    extra = overrides or {}
    return Pipeline([(name, {**options, **extra.get(name, {})}) for name, options in stack()])


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def config_toml(app: str, *, log_format: str = "json", factory: bool = False) -> str:
    """A config file serving ``app`` behind the stack, with ``[logging]`` in ``log_format``."""
    lines = [f"app = {_toml(app)}"]
    if factory:
        lines.append("factory = true")
    lines += ["", "[logging]", f"format = {_toml(log_format)}", 'level = "info"']
    for name, options in stack():
        lines += ["", "[[middleware]]", f"use = {_toml(name)}"]
        lines += [f"{key} = {_toml(value)}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def needs(name: str) -> None:
    """Skip the running test when ``name`` is not in the stack."""
    if name not in names():
        pytest.skip(f"{name} is not in the e2e stack (tests/e2e/stack.py MIDDLEWARE)")


def available(name: str) -> bool:
    """Whether ``asgikit.middleware.<name>`` exists (tracing and rate limits may not yet)."""
    return importlib.util.find_spec(f"asgikit.middleware.{name}") is not None


# ---- the Starlette app ----------------------------------------------------------------


def _note(event: str) -> None:
    path = os.environ.get(LIFESPAN_ENV)
    if path:
        with Path(path).open("a", encoding="utf-8") as file:
            file.write(f"{event} {os.getpid()}\n")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    _note("startup")
    yield {"greeting": "Hello"}
    _note("shutdown")


async def home(request: Request) -> Response:
    greeting = request.state.greeting if "greeting" in request.scope.get("state", {}) else "Hi"
    return PlainTextResponse(f"{greeting}, {request.query_params.get('name', 'world')}!")


async def item(request: Request) -> Response:
    return JSONResponse({"item_id": request.path_params["item_id"]})


async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(body, media_type=request.headers.get("content-type", "text/plain"))


async def document(request: Request) -> Response:
    return Response(DOCUMENT, media_type="application/json")


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for n in range(5):
            yield b"chunk %d\n" % n
            await anyio.sleep(0.01)

    return StreamingResponse(chunks(), media_type="text/plain")


# Per stream id, one event per event sent: set by the client (GET /ack) once it has
# decoded that event. Had an event been held back (by a compressor or the server), the
# stream would wait in vain and say so.
_ACKS: dict[str, list[anyio.Event]] = {}
ACK_TIMEOUT: Final = 5.0


def _acks(key: str) -> list[anyio.Event]:
    return _ACKS.setdefault(key, [anyio.Event() for _ in range(EVENTS)])


async def events(request: Request) -> Response:
    """Server-sent events; with ``?id=...``, each sent only once the previous one is acked."""
    key = request.query_params.get("id")

    async def stream_events() -> AsyncIterator[bytes]:
        for n in range(EVENTS):
            yield b"id: %d\ndata: event %d\n\n" % (n, n)
            if key is None:
                await anyio.sleep(0.01)
                continue
            with anyio.move_on_after(ACK_TIMEOUT):
                await _acks(key)[n].wait()
            if not _acks(key)[n].is_set():
                yield b"data: timeout waiting for the client to decode event %d\n\n" % n
                return

    return StreamingResponse(stream_events(), media_type="text/event-stream")


async def ack(request: Request) -> Response:
    """The client decoded event ``n`` of stream ``id``."""
    _acks(request.query_params["id"])[int(request.query_params["n"])].set()
    return PlainTextResponse("ok")


def _served_file() -> Path:
    return Path(os.environ[FILE_ENV])


async def file(request: Request) -> Response:
    offered = "http.response.pathsend" in request.scope.get("extensions", {})
    headers = {"x-pathsend-offered": "1" if offered else "0"}
    return FileResponse(_served_file(), media_type="text/plain", headers=headers)


async def slow(request: Request) -> Response:
    await anyio.sleep(SLOW_LIMIT * 10)
    return PlainTextResponse("too late")  # pragma: no cover - the time limit comes first


async def scope_types(request: Request) -> Response:
    """The types of the scope's client and server parts (ASGI: a str host, an int port)."""

    def types(value: Any) -> list[str] | None:
        return None if value is None else [type(part).__name__ for part in value]

    return JSONResponse({key: types(request.scope.get(key)) for key in ("client", "server")})


async def websocket_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)


def create_starlette_app() -> Starlette:
    """A new Starlette app with every endpoint (hooks such as add_middleware change it)."""
    return Starlette(routes=list(ROUTES), lifespan=lifespan)


ROUTES: Final = (
    Route("/", home),
    Route("/items/{item_id}", item),
    Route("/echo", echo, methods=["POST"]),
    Route("/document", document),
    Route("/stream", stream),
    Route("/events", events),
    Route("/file", file),
    Route("/slow", slow),
    Route("/scope", scope_types),
    Route("/limited", home),
    Route("/ack", ack),
    WebSocketRoute("/ws", websocket_echo),
)

starlette_app = create_starlette_app()

example_app: ASGIApp = enforce(starlette_app)
"""The Starlette app behind the contract checker: what the servers' config serves."""


def export_spans() -> IO[str] | None:
    """Install an SDK tracer provider writing each span as a JSON line to ``$ASGIKIT_E2E_SPANS``.

    Run in the server process (the config's app factories call it) before the first
    request; TracingMiddleware without a ``tracer_provider`` uses the global one.
    """
    path = os.environ.get(SPANS_ENV)
    if not path:
        return None
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    out = Path(path).open("a", encoding="utf-8")  # noqa: SIM115 - open for the process's life
    exporter = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return out


def traced_example_app() -> ASGIApp:
    """App factory: ``example_app``, with spans exported (see ``export_spans``)."""
    export_spans()
    return example_app


def traced_starlette_app() -> ASGIApp:
    """App factory: ``starlette_app`` (no contract checker), with spans exported."""
    export_spans()
    return starlette_app


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI callable: ``/items/<id>``, ``POST /echo``, ``/document``, lifespan."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    assert scope["type"] == "http", "the raw app serves http only"
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path: str = scope["path"]
    content_type = b"application/json"
    status = 200
    if path.startswith("/items/"):
        payload = json.dumps({"item_id": path.removeprefix("/items/")}).encode()
    elif path == "/echo" and scope["method"] == "POST":
        payload = body
        content_type = dict(scope["headers"]).get(b"content-type", b"text/plain")
    elif path == "/document":
        payload = DOCUMENT.encode()
    else:
        status, payload, content_type = 404, b"Not Found", b"text/plain"
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def json_lines(text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects among ``text``'s lines (a server's output mixes in other lines)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                value: dict[str, Any] = json.loads(line)  # "{" starts an object
            except ValueError:
                continue
            yield value


_served: ASGIApp | None = None


def __getattr__(name: str) -> Any:
    # ``tests.e2e.stack:served`` for servers without a factory option (daphne).
    global _served
    if name != "served":
        raise AttributeError(name)
    if _served is None:
        from asgikit.config import app_from_env

        _served = app_from_env()
    return _served
