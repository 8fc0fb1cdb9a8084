"""Nothing lost at shutdown: ``asgikit serve`` with 2 workers, under each server, stopped
by SIGTERM (or CTRL+C's SIGINT to the process group), exports every span and its metrics
to a real OTLP receiver, writes every access line, then exits 0.

The exporters are set so that nothing leaves before shutdown (a 60 s span batch delay, a
10 min metric interval): every span and metric the receiver gets was flushed when the
worker stopped. The receiver is real: OTLP/HTTP with protobuf bodies, or OTLP/gRPC on
grpcio (``tests/otlp_receivers.py``), on a free loopback port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests._processes import free_port, stop, wait_until_answering
from tests.e2e.servers import HOST, ROOT
from tests.e2e.stack import json_lines
from tests.otlp_receivers import GRPCReceiver, HTTPReceiver

pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="needs the otlp extra")

REQUESTS = 40
WORKERS = 2
STARTUP_TIMEOUT = 60.0  # two workers importing the stack on two busy cores
STOP_TIMEOUT = 30.0
EXPORT_WAIT = 5.0

APP = """\
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""

CONFIG = """\
app = "shutdown_app:app"

[server]
server = "{server}"
host = "{host}"
port = {port}
workers = {workers}

[logging]
format = "json"

[telemetry]
service_name = "shutdown-e2e"
traces = "otlp"
metrics = "otlp"

[[middleware]]
use = "request_id"

[[middleware]]
use = "access_log"

[[middleware]]
use = "tracing"
"""


def _receiver(protocol: str) -> HTTPReceiver | GRPCReceiver:
    if protocol == "grpc":
        pytest.importorskip("grpc", reason="needs grpcio (the otlp-grpc extra)")
        return GRPCReceiver()
    return HTTPReceiver()


def _serve(
    tmp_path: Path, server: str, protocol: str, endpoint: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    (tmp_path / "shutdown_app.py").write_text(APP, encoding="utf-8")
    config = tmp_path / "asgikit.toml"
    text = CONFIG.format(server=server, host=HOST, port=port, workers=WORKERS)
    config.write_text(text, encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # spans leave only when flushed
        "OTEL_METRIC_EXPORT_INTERVAL": "600000",  # metrics too
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "asgikit", "serve", str(config)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a signal from the terminal reaches pytest only
        )
    return process, f"http://{HOST}:{port}", log


@pytest.mark.parametrize(
    ("protocol", "stop_signal"),
    [
        ("http/protobuf", signal.SIGTERM),  # what a process manager sends to the server
        ("grpc", signal.SIGTERM),
        ("http/protobuf", signal.SIGINT),  # CTRL+C: the terminal signals every process
    ],
    ids=["http-sigterm", "grpc-sigterm", "http-sigint"],
)
@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "granian"])
def test_a_stop_signal_flushes_every_span_and_metric_and_exits_0(
    tmp_path: Path, server: str, protocol: str, stop_signal: signal.Signals
) -> None:
    pytest.importorskip(server, reason=f"{server} is not installed")
    with _receiver(protocol) as receiver:
        process, url, log = _serve(tmp_path, server, protocol, receiver.endpoint)
        try:
            wait_until_answering(url + "/ready", process, log, STARTUP_TIMEOUT)
            with httpx.Client(base_url=url, timeout=10.0) as client:
                for number in range(REQUESTS):
                    assert client.get(f"/item/{number}").status_code == 200
            time.sleep(0.5)
            spans_before_stop = len(receiver.received.server_spans())
            if stop_signal == signal.SIGINT:
                os.killpg(process.pid, stop_signal)  # the whole group, as a terminal does
            else:
                process.send_signal(stop_signal)
            status = process.wait(STOP_TIMEOUT)
        finally:
            stop(process, 5.0, group=True)
        output = log.read_text(encoding="utf-8", errors="replace")
        assert status == 0, output[-3000:]
        deadline = time.monotonic() + EXPORT_WAIT  # the exports were sent before exit
        while len(receiver.received.server_spans()) < REQUESTS + 1:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        spans = receiver.received.server_spans()
        with receiver.received.lock:
            metric_exports = receiver.received.metric_exports
            metric_names = set(receiver.received.metric_names)
            services = set(receiver.received.services)
    assert spans_before_stop == 0  # nothing left before shutdown: the flush sent them
    item_spans = [span for span in spans if str(span.get("url.path", "")).startswith("/item/")]
    assert sorted(span["url.path"] for span in item_spans) == sorted(
        f"/item/{number}" for number in range(REQUESTS)
    ), textwrap.shorten(output, 3000)
    assert metric_exports >= 1
    assert "http.server.request.duration" in metric_names
    assert services == {"shutdown-e2e"}
    access = [
        line
        for line in json_lines(output)
        if line.get("event") == "http.request" and line["url.path"].startswith("/item/")
    ]
    assert len(access) == REQUESTS
    assert len({line["request_id"] for line in access}) == REQUESTS
