"""Real ASGI servers as child processes on free loopback ports, each stopped by its PID.

``SERVERS`` says how each server is started with a config file: the ones that take an
app factory serve ``asgikit:app_from_env`` (which also configures ``asgikit.logging``
from the file's ``[logging]`` table), daphne (module attributes only) serves
``tests.e2e.stack:served``. ``start_all`` starts several at once (start-up dominates
the e2e run's time) and stops every one of them by PID when the block ends, also when
a start-up fails.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from tests._processes import free_port, stop
from tests.e2e.stack import SPANS_ENV, json_lines

__all__ = ["HOST", "ROOT", "SERVERS", "Running", "ServerSpec", "start_all", "uvicorn_command"]

HOST: Final = "127.0.0.1"
ROOT: Final = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT: Final = 30.0  # six servers starting at once on two busy cores
STOP_TIMEOUT: Final = 10.0
LOG_TIMEOUT: Final = 5.0
ACCESS_EVENTS: Final = ("http.request", "websocket.connection")
FACTORY: Final = "asgikit:app_from_env"
ATTRIBUTE: Final = "tests.e2e.stack:served"


@dataclass(frozen=True)
class ServerSpec:
    """How to run one server.

    Attributes:
        name: The server and its mode, as the compatibility table names it.
        module: The module ``python -m`` runs (also what must be importable).
        command: The arguments after ``python -m module``, given the port.
        limitations: Feature -> why this server cannot run it (a strict xfail: the test
            fails the day the server gains the feature, so the table is updated). A
            ``"contract"`` limitation also means the app is served without
            ``asgikit.enforce`` (which would reject every request).
    """

    name: str
    module: str
    command: Callable[[int], list[str]]
    limitations: Mapping[str, str] = field(default_factory=dict)

    @property
    def checked(self) -> bool:
        """Whether the app is served behind the contract checker."""
        return "contract" not in self.limitations


def uvicorn_command(http: str, loop: str, lifespan: str = "on") -> Callable[[int], list[str]]:
    """uvicorn's arguments serving the config file's app with ``--http``, ``--loop``."""

    def command(port: int) -> list[str]:
        return [
            *("--factory", FACTORY, "--host", HOST, "--port", str(port)),
            *("--http", http, "--loop", loop, "--lifespan", lifespan, "--no-access-log"),
            *("--timeout-graceful-shutdown", "2"),
        ]

    return command


def _hypercorn(worker_class: str) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        # hypercorn evaluates the attribute part in the module (asgikit exports it lazily).
        return [
            "asgikit.config:app_from_env()",
            "--bind",
            f"{HOST}:{port}",
            "--worker-class",
            worker_class,
        ]

    return command


def _granian(port: int) -> list[str]:
    return [
        *("--interface", "asgi", "--factory", "--host", HOST, "--port", str(port)),
        *("--workers", "1", "--no-access-log", FACTORY),
    ]


def _daphne(port: int) -> list[str]:
    return ["--bind", HOST, "--port", str(port), ATTRIBUTE]


NO_PATHSEND = "does not offer the http.response.pathsend extension (the file goes as body)"

SERVERS: Final = (
    ServerSpec(
        "uvicorn-h11", "uvicorn", uvicorn_command("h11", "asyncio"), {"pathsend": NO_PATHSEND}
    ),
    ServerSpec(
        "uvicorn-httptools",
        "uvicorn",
        uvicorn_command("httptools", "uvloop"),
        {"pathsend": NO_PATHSEND},
    ),
    ServerSpec("hypercorn-asyncio", "hypercorn", _hypercorn("asyncio"), {"pathsend": NO_PATHSEND}),
    ServerSpec(
        "hypercorn-trio",
        "hypercorn",
        _hypercorn("trio"),
        {"pathsend": NO_PATHSEND},
    ),
    ServerSpec(
        "granian",
        "granian",
        _granian,
        {
            "contract": "passes the client and server ports in the scope as str, not int",
            "websocket_id": (
                "declares ASGI spec 2.3 but drops the headers of websocket.accept from the "
                "handshake response"
            ),
        },
    ),
    ServerSpec(
        "daphne",
        "daphne",
        _daphne,
        {
            "pathsend": NO_PATHSEND,
            "lifespan": "does not run the ASGI lifespan protocol (no startup, no shutdown)",
            "websocket_id": (
                "declares no asgi.spec_version (so 2.0): websocket.accept cannot carry "
                "headers, and the handshake response has no x-request-id"
            ),
        },
    ),
)
"""The servers, each with what it is known not to support."""


class Running:
    """A server process: its URL, its output file, its PID."""

    def __init__(
        self,
        spec: ServerSpec,
        port: int,
        process: subprocess.Popen[bytes],
        log: IO[bytes],
        env: Mapping[str, str],
    ) -> None:
        self.spec = spec
        self.env = env
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.ws_url = f"ws://{HOST}:{port}"
        self.process = process
        self._log = log

    @property
    def name(self) -> str:
        return self.spec.name

    def output(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def spans(self, trace_id: str, timeout: float = LOG_TIMEOUT) -> list[dict[str, Any]]:
        """The spans (JSON) of trace ``trace_id`` (hex) the app exported, once there are some."""
        path = Path(self.env[SPANS_ENV])
        deadline = time.monotonic() + timeout
        while True:
            text = path.read_text() if path.exists() else ""
            found = [s for s in json_lines(text) if s["context"]["trace_id"] == f"0x{trace_id}"]
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no span of trace {trace_id} from {self.name}")
            time.sleep(0.05)

    def access_line(self, request_id: str, timeout: float = LOG_TIMEOUT) -> dict[str, Any]:
        """The access log line (JSON) of the request ``request_id``, once it is written."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [
                line
                for line in json_lines(self.output())
                if line.get("request_id") == request_id and line.get("event") in ACCESS_EVENTS
            ]
            if lines:
                assert len(lines) == 1, f"logged {len(lines)} times: {lines}"
                return lines[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no access log line for {request_id} from {self.name}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM by PID (graceful shutdown), SIGKILL if it does not exit in time."""
        stop(self.process, STOP_TIMEOUT)


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(servers: Sequence[Running]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    pending = list(servers)
    while pending:
        for server in list(pending):
            if not server.alive():
                raise RuntimeError(f"{server.name} exited early:\n{server.output()[-3000:]}")
            if _accepting(server.port):
                pending.remove(server)
        if pending and time.monotonic() > deadline:
            names = ", ".join(server.name for server in pending)
            raise RuntimeError(f"{names} did not accept connections in {STARTUP_TIMEOUT:g} s")
        time.sleep(0.05)


@contextlib.contextmanager
def start_all(
    specs: Sequence[ServerSpec], env: Callable[[ServerSpec], Mapping[str, str]], directory: Path
) -> Iterator[dict[str, Running]]:
    """Start every server in ``specs`` at once; yield them by name once all accept.

    ``env(spec)`` gives the environment variables each server gets (its config file).

    Output goes to a file per server in ``directory``. Every process is stopped by PID when
    the block ends, whatever happens.
    """
    running: dict[str, Running] = {}
    with contextlib.ExitStack() as stack:
        try:
            for spec in specs:
                port = free_port()
                log = stack.enter_context((directory / f"{spec.name}.log").open("w+b"))
                server_env = env(spec)
                process = subprocess.Popen(
                    [sys.executable, "-m", spec.module, *spec.command(port)],
                    cwd=ROOT,
                    env={
                        **os.environ,
                        **server_env,
                        "PYTHONUNBUFFERED": "1",
                        "PYTHONPATH": str(ROOT),
                    },
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                running[spec.name] = Running(spec, port, process, log, server_env)
            _wait(list(running.values()))
            yield running
        finally:
            for server in running.values():
                server.stop()
