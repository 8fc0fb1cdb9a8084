"""Two real uvicorn processes (examples/two_services.py): A calls B, and one trace id and
one request id cover both, in the answers, the spans a real OTLP receiver decoded, and B's
access line.

Each service exports its spans over OTLP/HTTP (protobuf) to ``tests.otlp_receivers``;
both are stopped by PID (SIGTERM: the lifespan shutdown flushes the spans) before the
spans are read.
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
from typing import IO, Any

import pytest

from tests._processes import free_port, stop
from tests.otlp_receivers import HTTPReceiver

httpx = pytest.importorskip("httpx", reason="httpx is not installed")
pytest.importorskip("uvicorn", reason="uvicorn is not installed")

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def _accepting(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((HOST, port)) == 0


class Service:
    """A uvicorn process serving one of the example's factories."""

    def __init__(self, factory: str, port: int, env: dict[str, str]) -> None:
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "--app-dir",
            str(ROOT / "examples"),
            f"two_services:{factory}",
            "--host",
            HOST,
            "--port",
            str(port),
            "--no-access-log",
        ]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _accepting(self.port):
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, f"not listening: {self.output()}"
            time.sleep(0.05)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        stop(self.process, STOP_TIMEOUT)

    def close(self) -> None:
        self.stop()
        self.log.close()


@pytest.fixture
def services() -> Iterator[tuple[Service, Service, HTTPReceiver]]:
    with HTTPReceiver() as receiver:
        a_port, b_port = free_port(), free_port()
        while b_port == a_port:
            b_port = free_port()
        env = {
            **os.environ,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "B_URL": f"http://{HOST}:{b_port}",
        }
        env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
        b = Service("service_b", b_port, env)
        a = Service("service_a", a_port, env)
        try:
            b.wait()
            a.wait()
            yield a, b, receiver
        finally:
            a.close()
            b.close()


def _server_spans(receiver: HTTPReceiver, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        with receiver.received.lock:
            found = [s for s in receiver.received.span_ids if s["kind"] == 2]  # SERVER
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_one_trace_and_one_request_id_cover_both_services(
    services: tuple[Service, Service, HTTPReceiver],
) -> None:
    a, b, receiver = services
    given = httpx.get(f"{a.url}/", headers={"x-request-id": "order-42"}, timeout=20)
    made = httpx.get(f"{a.url}/", timeout=20)  # no id given: A makes one, B gets it
    assert given.status_code == made.status_code == 200, given.text
    assert given.headers["x-request-id"] == "order-42"
    first, second = given.json(), made.json()
    for answer in (first, second):
        assert answer["request_id"] == answer["b"]["request_id"]
        assert answer["trace_id"] is not None
        assert answer["trace_id"] == answer["b"]["trace_id"]
    assert first["request_id"] == "order-42"
    assert second["request_id"] == made.headers["x-request-id"] != "order-42"
    assert first["trace_id"] != second["trace_id"]

    a.stop()
    b.stop()  # both flushed their spans at shutdown
    spans = _server_spans(receiver, 4)
    by_trace: dict[str, dict[str, dict[str, Any]]] = {}
    for span in spans:
        by_trace.setdefault(span["trace_id"], {})[span["service"]] = span
    for answer in (first, second):
        trace = by_trace[answer["trace_id"]]
        assert set(trace) == {"shop-a", "shop-b"}
        # B's server span is the child of A's: the traceparent went from A to B.
        assert trace["shop-b"]["parent_span_id"] == trace["shop-a"]["span_id"]
        assert trace["shop-b"]["name"] == "GET /stock"
    assert "order-42" in b.output()  # B's access line carries A's request id
