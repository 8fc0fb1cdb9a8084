"""Logging under real servers, for every example framework: one line per event, and one
traceback per unhandled exception, with the app's frame first and no asgikit frame.

Each example app (FastAPI, Litestar, Quart, Django, Starlette's ``hello``) is served by a
real uvicorn process through ``asgikit:app_from_env``, with ``examples/frameworks.toml``'s
middleware and a ``[logging]`` table (``format = "json"`` and a processor of this
module's, named by import string); the FastAPI example also by hypercorn and granian.
Each takes a request that succeeds, ``GET /fail`` and a websocket to ``/fail`` (both
raise in the example's own code), then a last request whose access line says that
everything before it was written.

What each framework does with the exception differs: Starlette and FastAPI re-raise it
(the access log writes the traceback, the server's copy is dropped); Django, Quart and
Litestar answer 500 themselves and log it through ``logging`` (``django.request``, the
app's logger, ``litestar``), which asgikit renders. Either way: one traceback.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, MutableMapping
from typing import Any, Final

import httpx
import pytest

from tests.e2e.servers import ROOT, SERVERS, Running, ServerSpec, start_all, uvicorn_command

pytest.importorskip("fastapi", reason="fastapi is not installed")
pytest.importorskip("litestar", reason="litestar is not installed")
pytest.importorskip("django", reason="django is not installed")
pytest.importorskip("quart", reason="quart is not installed")
websockets_client = pytest.importorskip(
    "websockets.sync.client", reason="the websockets package is not installed"
)
websockets_exceptions = pytest.importorskip("websockets.exceptions")

# framework -> (the example's import string, its source file, serves websockets)
EXAMPLES: Final = {
    "fastapi": ("examples.fastapi_app:app", "examples/fastapi_app.py", True),
    "litestar": ("examples.litestar_app:app", "examples/litestar_app.py", True),
    "quart": ("examples.quart_app:app", "examples/quart_app.py", True),
    "django": ("examples.django_app.asgi:app", "examples/django_app/views.py", False),
    "starlette": ("examples.hello:app", "examples/hello.py", True),
}
OTHER_SERVERS: Final = ("hypercorn", "granian")  # serving the FastAPI example
LINE_TIMEOUT: Final = 10.0
FILE_LINE: Final = re.compile(r'^\s*File "([^"]+)", line \d+, in \S+$', re.MULTILINE)
GRANIAN_MAIN: Final = re.compile(r"^\[(INFO|WARNING)\] ")  # granian's own process, not a worker
FAILURE: Final = "RuntimeError: the example fails on purpose"


def mark(logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """The processor the config file names: every line, structlog's or logging's, has it."""
    event_dict["deployment"] = "blue"
    return event_dict


def config_text() -> str:
    """examples/frameworks.toml (the app from $ASGIKIT_APP), logging JSON lines."""
    text = (ROOT / "examples" / "frameworks.toml").read_text(encoding="utf-8")
    processor = f"{__name__}:mark"
    return f'{text}\n[logging]\nformat = "json"\nprocessors = ["{processor}"]\n'


def spec_of(name: str) -> ServerSpec:
    if name in EXAMPLES:
        # lifespan "auto": Django's handler refuses the lifespan scope, uvicorn goes on.
        return ServerSpec(name, "uvicorn", uvicorn_command("h11", "asyncio", lifespan="auto"))
    server = next(spec for spec in SERVERS if spec.module == name)
    return ServerSpec(name, server.module, server.command)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Running]]:
    """Every example under uvicorn, FastAPI's under hypercorn and granian: started at
    once, stopped by PID at the end."""
    directory = tmp_path_factory.mktemp("logging")
    config = directory / "frameworks.toml"
    config.write_text(config_text(), encoding="utf-8")
    names = [*EXAMPLES, *OTHER_SERVERS]

    def env(spec: ServerSpec) -> dict[str, str]:
        app = EXAMPLES.get(spec.name, EXAMPLES["fastapi"])[0]
        return {"ASGIKIT_CONFIG": str(config), "ASGIKIT_APP": app}

    with start_all([spec_of(name) for name in names], env, directory) as running:
        yield running


def exercise(server: Running, websocket: bool) -> str:
    """A request that succeeds, the failing ones, and a last one; its request id."""
    name = server.name
    with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as client:
        assert client.get("/", headers={"x-request-id": f"{name}-ok"}).status_code in (200, 404)
        assert client.get("/fail", headers={"x-request-id": f"{name}-fail"}).status_code == 500
    if websocket:
        failing_socket(server, f"{name}-ws-fail")
    last = f"{name}-last"
    with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as client:
        client.get("/", headers={"x-request-id": last})
    return last


def failing_socket(server: Running, request_id: str) -> None:
    """A websocket to /fail: accepted, then closed with an error (or refused)."""
    ended = (websockets_exceptions.ConnectionClosed, websockets_exceptions.InvalidStatus)
    with (
        pytest.raises(ended),
        websockets_client.connect(
            f"{server.ws_url}/fail",
            additional_headers={"x-request-id": request_id},
            open_timeout=10,
            close_timeout=10,
        ) as socket,
    ):
        socket.recv(timeout=10)


def output_until(server: Running, request_id: str) -> list[str]:
    """The server's output lines, once the access line of *request_id* is among them."""
    deadline = time.monotonic() + LINE_TIMEOUT
    while True:
        lines = [line for line in server.output().splitlines() if line.strip()]
        if any(f'"request_id":"{request_id}"' in line for line in lines):
            return lines
        if time.monotonic() > deadline or not server.alive():
            tail = "\n".join(lines[-30:])
            raise AssertionError(f"no access line for {request_id} from {server.name}:\n{tail}")
        time.sleep(0.05)


def check_lines(lines: list[str], source: str, failures: int, *, granian: bool = False) -> None:
    """One line per event, all JSON with the processor's field, no private extras; one
    traceback per failure, the app's frame first and no asgikit frame."""
    if granian:
        lines = [line for line in lines if not GRANIAN_MAIN.match(line)]
    not_json = [line for line in lines if not line.startswith("{")]
    assert not_json == [], "a handler other than asgikit's wrote these"
    events = [json.loads(line) for line in lines]
    seen: set[str] = set()
    for event in events:
        key = json.dumps({k: v for k, v in event.items() if k != "timestamp"}, sort_keys=True)
        assert key not in seen, f"written twice: {event}"
        seen.add(key)
        assert not {"color_message", "message", "asctime"} & event.keys(), event
        assert event.get("deployment") == "blue", f"the file's processor did not run: {event}"
    tracebacks = [event["exception"] for event in events if "exception" in event]
    assert len(tracebacks) == failures, "\n\n".join(tracebacks)
    for text in tracebacks:
        files = FILE_LINE.findall(text)
        assert files, text
        assert files[0] == str(ROOT / source), text  # the app's frame comes first
        assert not any(re.search(r"/(asgikit|middleware)/", file) for file in files), text
        assert text.endswith(FAILURE), text


@pytest.mark.parametrize("framework", list(EXAMPLES))
def test_one_line_per_event_and_one_traceback_per_error_under_uvicorn(
    framework: str, servers: dict[str, Running]
) -> None:
    _, source, websocket = EXAMPLES[framework]
    server = servers[framework]
    lines = output_until(server, exercise(server, websocket))
    check_lines(lines, source, failures=2 if websocket else 1)
    # uvicorn's own websocket lines (its access lines for websockets) are not written either.
    assert not [line for line in lines if "WebSocket /fail" in line or "connection open" in line]


@pytest.mark.parametrize("name", OTHER_SERVERS)
def test_one_traceback_per_error_under_other_servers(
    name: str, servers: dict[str, Running]
) -> None:
    server = servers[name]
    lines = output_until(server, exercise(server, websocket=True))
    check_lines(lines, EXAMPLES["fastapi"][1], failures=2, granian=name == "granian")
