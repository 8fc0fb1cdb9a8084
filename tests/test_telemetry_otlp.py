"""asgikit.telemetry: OTLP over gRPC or HTTP, and flush and shutdown bounded by export_timeout.

Real receivers on loopback (tests/otlp_receivers.py): a grpcio server implementing
OpenTelemetry's TraceService and MetricsService, an HTTP server decoding protobuf; and a
black hole that accepts connections and never answers.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from asgikit.telemetry import MissingExtraError, Telemetry, configure
from tests.otlp_receivers import GRPCReceiver, HTTPReceiver, Received
from tests.telemetry_env import made_fixture, without_otel_variables  # noqa: F401 (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRPC_TRACES = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
GRPC_METRICS = "opentelemetry.exporter.otlp.proto.grpc.metric_exporter"


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    without_otel_variables(monkeypatch)


class BlackHole:
    """A collector that is down the worst way: connections are accepted by the kernel
    (the backlog), and nothing is ever read or answered."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self.endpoint = f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def grpc_receiver() -> Iterator[GRPCReceiver]:
    with GRPCReceiver() as receiver:
        yield receiver


@pytest.fixture
def http_receiver() -> Iterator[HTTPReceiver]:
    with HTTPReceiver() as receiver:
        yield receiver


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()  # the connections waiting in its backlog are reset: exporters give up


def local(made: list[Telemetry], **options: Any) -> Telemetry:
    result = configure(set_global=False, **options)
    made.append(result)
    return result


def span_names(received: Received) -> list[str]:
    with received.lock:
        return [span["name"] for span in received.spans]


def record(result: Telemetry, span: str = "GET /cart", counter: str = "carts") -> None:
    with result.tracer_provider.get_tracer("test").start_as_current_span(span):
        pass
    result.meter_provider.get_meter("test").create_counter(counter).add(2)


# --------------------------------------------------------------------------------------
# the protocol


def test_grpc_from_the_variable_exports_to_a_grpc_collector(
    made: list[Telemetry], monkeypatch: pytest.MonkeyPatch, grpc_receiver: GRPCReceiver
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", grpc_receiver.endpoint)
    result = local(made, service_name="shop", traces="otlp", metrics="otlp")
    record(result)
    assert span_names(grpc_receiver.received) == []  # batched: nothing sent yet
    result.shutdown()
    assert span_names(grpc_receiver.received) == ["GET /cart"]
    assert grpc_receiver.received.services == {"shop"}
    assert "carts" in grpc_receiver.received.metric_names


def test_the_protocol_option_wins_over_the_variables(
    made: list[Telemetry], monkeypatch: pytest.MonkeyPatch, grpc_receiver: GRPCReceiver
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")  # not even read
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", grpc_receiver.endpoint)
    result = local(made, traces="otlp", metrics="otlp", protocol="grpc")
    record(result)
    assert result.force_flush()
    assert span_names(grpc_receiver.received) == ["GET /cart"]
    assert "carts" in grpc_receiver.received.metric_names
    result.shutdown()  # while the receiver still listens


def test_a_signals_own_protocol_variable_wins_over_the_general_one(
    made: list[Telemetry],
    monkeypatch: pytest.MonkeyPatch,
    grpc_receiver: GRPCReceiver,
    http_receiver: HTTPReceiver,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", http_receiver.endpoint + "/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", grpc_receiver.endpoint)
    result = local(made, traces="otlp", metrics="otlp")
    record(result)
    result.shutdown()
    assert span_names(http_receiver.received) == ["GET /cart"]  # over HTTP
    assert span_names(grpc_receiver.received) == []
    assert "carts" in grpc_receiver.received.metric_names  # over gRPC
    assert http_receiver.received.metric_exports == 0


def test_http_protobuf_is_the_default(
    made: list[Telemetry], monkeypatch: pytest.MonkeyPatch, http_receiver: HTTPReceiver
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", http_receiver.endpoint)
    monkeypatch.setitem(sys.modules, GRPC_TRACES, None)  # gRPC is not even imported
    result = local(made, traces="otlp", protocol=None)
    record(result)
    result.shutdown()
    assert span_names(http_receiver.received) == ["GET /cart"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc/json"),
    ],
)
def test_an_unknown_protocol_variable_names_it_and_the_accepted_values(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"^traces: {variable}='{value}'") as caught:
        configure(set_global=False, traces="otlp")
    assert "'grpc' or 'http/protobuf'" in str(caught.value)
    configure(set_global=False, traces="console").shutdown()  # read only for otlp


@pytest.mark.parametrize("protocol", ["http/json", "GRPC", 4317])
def test_an_unknown_protocol_option(protocol: Any) -> None:
    with pytest.raises(ValueError, match=r"^protocol: expected one of 'grpc', 'http/protobuf'"):
        configure(set_global=False, protocol=protocol)


@pytest.mark.parametrize(
    ("missing", "options", "message"),
    [
        (GRPC_TRACES, {"traces": "otlp"}, "traces: 'otlp' over gRPC needs opentelemetry-"),
        (GRPC_METRICS, {"metrics": "otlp"}, "metrics: 'otlp' over gRPC needs opentelemetry-"),
    ],
)
def test_a_missing_grpc_exporter_names_its_extra(
    monkeypatch: pytest.MonkeyPatch, missing: str, options: dict[str, Any], message: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # what an uninstalled package looks like
    with pytest.raises(MissingExtraError, match="^" + re.escape(message)) as caught:
        configure(set_global=False, protocol="grpc", **options)
    assert "opentelemetry-exporter-otlp-proto-grpc" in str(caught.value)
    assert "pip install 'asgikit[otlp-grpc]'" in str(caught.value)


# --------------------------------------------------------------------------------------
# export_timeout


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1.0, ValueError), (float("inf"), ValueError), ("5", TypeError)],
)
def test_export_timeout_is_a_positive_number_of_seconds(value: Any, error: type) -> None:
    with pytest.raises(error, match=r"^export_timeout: "):
        configure(set_global=False, export_timeout=value)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_shutdown_returns_within_export_timeout_when_the_collector_never_answers(
    monkeypatch: pytest.MonkeyPatch, black_hole: BlackHole, protocol: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", black_hole.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5")  # each request would wait 5 s
    result = configure(
        set_global=False, traces="otlp", metrics="otlp", protocol=protocol, export_timeout=1.0
    )
    for n in range(600):  # two batches of spans
        record(result, span=f"span {n}")
    started = time.monotonic()
    result.shutdown()
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.0, elapsed
    assert result.shut_down
    result.shutdown()  # once only: returns at once
    assert time.monotonic() - started < 2.5


def test_force_flush_returns_within_export_timeout_and_says_it_did_not_flush(
    monkeypatch: pytest.MonkeyPatch, black_hole: BlackHole
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", black_hole.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5")
    result = configure(set_global=False, traces="otlp", metrics="otlp", export_timeout=0.5)
    record(result)
    started = time.monotonic()
    assert result.force_flush() is False
    assert time.monotonic() - started < 1.5
    started = time.monotonic()
    assert result.force_flush(timeout_millis=200) is False
    assert time.monotonic() - started < 1.0
    result.shutdown()


def test_a_late_shutdown_is_logged(
    monkeypatch: pytest.MonkeyPatch, black_hole: BlackHole, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", black_hole.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5")  # outlasts the bound, surely
    result = configure(set_global=False, traces="otlp", protocol="grpc", export_timeout=0.3)
    record(result)
    with caplog.at_level("WARNING", logger="asgikit.telemetry"):
        result.shutdown()
    [message] = [r.getMessage() for r in caplog.records if r.name == "asgikit.telemetry"]
    assert message.startswith("telemetry.shutdown: spans not done after export_timeout=0.3s")


WORKER = textwrap.dedent(
    """
    import sys, time
    from asgikit.telemetry import configure

    telemetry = configure(traces="otlp", metrics="otlp", protocol=sys.argv[1], export_timeout=1)
    tracer = telemetry.tracer_provider.get_tracer("worker")
    for n in range(100):
        with tracer.start_as_current_span(f"request {n}"):
            pass
    telemetry.meter_provider.get_meter("worker").create_counter("requests").add(100)
    started = time.monotonic()
    telemetry.shutdown()
    print(f"shutdown {time.monotonic() - started:.2f}", flush=True)
    """
)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_collector_that_is_down_does_not_hang_a_workers_exit(
    black_hole: BlackHole, protocol: str
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = black_hole.endpoint
    environ["OTEL_EXPORTER_OTLP_TIMEOUT"] = "60"
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-c", WORKER, protocol],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env=environ,
        check=False,
    )
    took = time.monotonic() - started
    assert completed.returncode == 0, completed.stderr
    seconds = float(completed.stdout.split()[-1])
    assert 0.9 <= seconds < 2.0, completed.stdout
    assert took < 15, (took, completed.stderr)  # interpreter start and exit included
