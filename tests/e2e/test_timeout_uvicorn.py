"""TimeoutMiddleware under a real uvicorn: the client gets its 504 while a thread still sleeps.

uvicorn runs in a subprocess on a free port of 127.0.0.1, serving ``app`` below by import
string, and is stopped by PID whatever happens. httpx is the client.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgikit.middleware.timeout import TimeoutMiddleware
from tests._processes import free_port, stop

httpx = pytest.importorskip("httpx", reason="httpx is not installed")
pytest.importorskip("uvicorn", reason="uvicorn is not installed")

HOST = "127.0.0.1"
DEADLINE = 0.3
SLEEP = 4.0  # how long the sync endpoint sleeps: far past the deadline
MARGIN = 2.0  # generous: a loaded 2-core machine
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
MARKER_ENV = "ASGIKIT_TEST_TIMEOUT_MARKER"
ROOT = Path(__file__).resolve().parents[2]


# ---- the app uvicorn serves (imported by the server process) --------------------------


def slow(request: Request) -> Response:
    # A sync endpoint: Starlette runs it in a worker thread, which nothing can cancel.
    time.sleep(SLEEP)
    Path(os.environ[MARKER_ENV]).write_text("the endpoint finished")
    return PlainTextResponse("too late")


def fast(request: Request) -> Response:
    return PlainTextResponse("fast")


app = TimeoutMiddleware(
    Starlette(routes=[Route("/slow", slow), Route("/fast", fast)]),
    total=DEADLINE,
    cancel_grace=0.1,
)


# ---- the server process ----------------------------------------------------------------


def _output(log: IO[bytes]) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")


def _wait_until_accepting(process: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        assert process.poll() is None, f"uvicorn exited early:\n{_output(log)}"
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            assert time.monotonic() < deadline, f"uvicorn did not start:\n{_output(log)}"
            time.sleep(0.05)


class Server:
    def __init__(self, port: int, marker: Path, log: IO[bytes]) -> None:
        self.url = f"http://{HOST}:{port}"
        self.marker = marker
        self.log = log

    def output(self) -> str:
        return _output(self.log)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    marker = tmp_path / "endpoint-finished"
    env = {**os.environ, MARKER_ENV: str(marker), "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        f"{__name__}:app",
        "--host",
        HOST,
        "--port",
        str(port),
        "--app-dir",
        str(ROOT),
        "--lifespan",
        "off",
        "--no-access-log",
        "--log-level",
        "warning",
        "--timeout-graceful-shutdown",
        "1",
    ]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        try:
            _wait_until_accepting(process, port, log)
            yield Server(port, marker, log)
        finally:
            stop(process, STOP_TIMEOUT)


def test_a_real_client_gets_504_at_the_deadline_while_the_sync_endpoint_sleeps(
    server: Server,
) -> None:
    with httpx.Client(base_url=server.url, timeout=SLEEP + 10, trust_env=False) as client:
        assert client.get("/fast").text == "fast"

        begin = time.monotonic()
        response = client.get("/slow")
        elapsed = time.monotonic() - begin
        still_sleeping = not server.marker.exists()

        assert response.status_code == 504
        assert response.text == "Gateway Timeout"
        assert DEADLINE <= elapsed < DEADLINE + MARGIN
        assert still_sleeping, "the 504 should arrive while the endpoint is still sleeping"

        # The same keep-alive connection serves the next request while the thread sleeps.
        assert client.get("/fast").text == "fast"
        assert not server.marker.exists()

    # The thread that could not be cancelled is counted and logged.
    deadline = time.monotonic() + MARGIN
    while "abandoned after deadline" not in server.output():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)
