"""asgikit.telemetry: configure() from options and OTEL_* variables, exporters, Prometheus."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import sampling as sdk_sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from prometheus_client import REGISTRY, CollectorRegistry

from asgikit import telemetry
from asgikit.contract import enforce
from asgikit.telemetry import (
    MetricsEndpoint,
    MissingExtraError,
    Telemetry,
    configure,
    global_providers_set,
    start_prometheus_server,
)
from asgikit.testing import request, run_lifespan, websocket
from asgikit.types import ASGIApp, Receive, Scope, Send
from tests._processes import free_port
from tests.telemetry_env import made_fixture, without_otel_variables  # noqa: F401 (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OTLP_TRACES = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
OTLP_METRICS = "opentelemetry.exporter.otlp.proto.http.metric_exporter"
PROMETHEUS = "opentelemetry.exporter.prometheus"
EXPORTER_THREADS = ("OtelBatchSpanRecordProcessor", "OtelPeriodicExportingMetricReader")


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from an environment without OTEL_* variables."""
    without_otel_variables(monkeypatch)


def local(made: list[Telemetry], **options: Any) -> Telemetry:
    result = configure(set_global=False, **options)
    made.append(result)
    return result


def exporter_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in EXPORTER_THREADS and t.is_alive()]


# --------------------------------------------------------------------------------------
# resource and environment


def test_without_options_or_environment_nothing_is_exported(made: list[Telemetry]) -> None:
    result = local(made)
    assert result.traces == ()
    assert result.metrics == ()
    assert result.prometheus_server is None
    assert str(result.resource.attributes["service.name"]).startswith("unknown_service")
    description = sdk_sampling.DEFAULT_ON.get_description()  # type: ignore[no-untyped-call]
    assert result.tracer_provider.sampler.get_description() == description
    assert not result.is_global


def test_service_name_and_resource_attributes_from_the_environment(
    made: list[Telemetry], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=staging,a=1")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    attributes = local(made).resource.attributes
    assert attributes["service.name"] == "from-env"
    assert attributes["deployment.environment.name"] == "staging"
    assert attributes["a"] == "1"


def test_options_win_over_the_environment(
    made: list[Telemetry], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=attr,a=1,b=2")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    result = local(made, service_name="checkout", resource_attributes={"b": "option"})
    attributes = result.resource.attributes
    assert (attributes["service.name"], attributes["a"], attributes["b"]) == (
        "checkout",
        "1",
        "option",
    )
    assert "service='checkout'" in repr(result)


def test_service_name_may_come_from_resource_attributes(made: list[Telemetry]) -> None:
    result = local(made, resource_attributes={"service.name": "api"}, service_name="api")
    assert result.resource.attributes["service.name"] == "api"


@pytest.mark.parametrize(
    ("variables", "traces", "metrics"),
    [
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",), ()),
        ({"OTEL_TRACES_EXPORTER": " Console , none,console"}, ("console",), ()),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}, (), ()),
        ({"OTEL_TRACES_EXPORTER": "otlp_proto_http"}, ("otlp",), ()),
        ({"OTEL_METRICS_EXPORTER": "console,otlp"}, (), ("console", "otlp")),
        ({"OTEL_METRICS_EXPORTER": "prometheus"}, (), ("prometheus",)),
    ],
)
def test_exporters_from_the_environment(
    made: list[Telemetry],
    monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str],
    traces: tuple[str, ...],
    metrics: tuple[str, ...],
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    result = local(made, prometheus_registry=CollectorRegistry())
    assert (result.traces, result.metrics) == (traces, metrics)


def test_options_win_over_exporter_variables(
    made: list[Telemetry], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "zipkin")  # not even read
    result = local(made, traces="none", metrics="console")
    assert (result.traces, result.metrics) == ((), ("console",))


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "traces: OTEL_TRACES_EXPORTER='zipkin' names 'zipkin'"),
        ("OTEL_METRICS_EXPORTER", "console,jaeger", "metrics: OTEL_METRICS_EXPORTER="),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "http", "prometheus_port: OTEL_EXPORTER_PROMETHEUS"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "70000", "prometheus_port: OTEL_EXPORTER_PROMETHEUS"),
    ],
)
def test_bad_environment_values_name_the_option_and_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match="^" + re.escape(message)) as caught:
        configure(set_global=False, metrics="prometheus" if "PROMETHEUS" in variable else None)
    assert value.split(",")[-1] in str(caught.value)


@pytest.mark.parametrize(
    ("variables", "error"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "traces: OTEL_EXPORTER_OTLP_PROTOCOL="),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "traces: OTEL_EXPORTER_OTLP_TRA"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, None),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, None),
        (
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            None,
        ),
    ],
)
def test_otlp_protocol_is_grpc_or_http_protobuf(
    made: list[Telemetry],
    monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str],
    error: str | None,
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    if error is None:
        assert local(made, traces="otlp").traces == ("otlp",)
    else:
        with pytest.raises(ValueError, match="^" + re.escape(error)):
            configure(set_global=False, traces="otlp")


# --------------------------------------------------------------------------------------
# sampling


def recorded_spans(sampler_options: dict[str, Any], made: list[Telemetry], count: int) -> int:
    memory = InMemorySpanExporter()
    result = local(made, span_processors=[SimpleSpanProcessor(memory)], **sampler_options)
    tracer = result.tracer_provider.get_tracer("test")
    for _ in range(count):
        with tracer.start_as_current_span("work"):
            pass
    return len(memory.get_finished_spans())


def test_the_sdk_reads_the_sampler_variables_when_no_option_names_one(
    made: list[Telemetry], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    sampler = local(made).tracer_provider.sampler
    assert isinstance(sampler, sdk_sampling.TraceIdRatioBased)
    assert sampler.rate == 0.25
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    assert recorded_spans({}, made, 3) == 0


def test_sampler_options_win_over_the_variables(
    made: list[Telemetry], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    assert recorded_spans({"sampler": "always_on"}, made, 3) == 3
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    assert recorded_spans({"sampler": "always_off"}, made, 3) == 0
    assert recorded_spans({"sampler_ratio": 0.0}, made, 20) == 0
    assert recorded_spans({"sampler_ratio": 1}, made, 20) == 20


def test_a_ratio_sampler_without_a_ratio_reads_the_ratio_variable(
    made: list[Telemetry], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")  # the option names the sampler
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    sampler = local(made, sampler="traceidratio").tracer_provider.sampler
    assert isinstance(sampler, sdk_sampling.TraceIdRatioBased)
    assert sampler.rate == 0.25
    sampler = local(made, sampler="traceidratio", sampler_ratio=0.5).tracer_provider.sampler
    assert "{0.5}" in sampler.get_description()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "half")
    with pytest.raises(ValueError, match=r"^sampler_ratio: OTEL_TRACES_SAMPLER_ARG='half' is"):
        configure(set_global=False, sampler="parentbased_traceidratio")
    assert "AlwaysOn" in local(made, sampler="always_on").tracer_provider.sampler.get_description()


@pytest.mark.parametrize(
    ("options", "kind", "description"),
    [
        ({"sampler": "always_on"}, sdk_sampling.StaticSampler, "AlwaysOnSampler"),
        ({"sampler": "parentbased_always_off"}, sdk_sampling.ParentBased, "AlwaysOffSampler"),
        ({"sampler": "parentbased_always_on"}, sdk_sampling.ParentBased, "AlwaysOnSampler"),
        ({"sampler": "traceidratio"}, sdk_sampling.TraceIdRatioBased, "{1.0}"),
        ({"sampler": "traceidratio", "sampler_ratio": 0.5}, sdk_sampling.TraceIdRatioBased, "0.5"),
        ({"sampler_ratio": 0.125}, sdk_sampling.ParentBasedTraceIdRatio, "{0.125}"),
        (
            {"sampler": "parentbased_traceidratio"},
            sdk_sampling.ParentBasedTraceIdRatio,
            "{1.0}",
        ),
    ],
)
def test_sampler_options(
    made: list[Telemetry], options: dict[str, Any], kind: type, description: str
) -> None:
    sampler = local(made, **options).tracer_provider.sampler
    assert isinstance(sampler, kind)
    assert description in sampler.get_description()


# --------------------------------------------------------------------------------------
# option validation


@pytest.mark.parametrize(
    ("options", "error", "prefix"),
    [
        ({"service_name": " "}, ValueError, "service_name: expected a name, not an empty"),
        ({"service_name": 3}, TypeError, "service_name: expected a str, not 3"),
        (
            {"service_name": "a", "resource_attributes": {"service.name": "b"}},
            ValueError,
            "service_name: 'a' but resource_attributes names 'b'",
        ),
        ({"resource_attributes": [("a", "b")]}, TypeError, "resource_attributes: expected a"),
        ({"resource_attributes": {"": "b"}}, TypeError, "resource_attributes: keys are"),
        ({"resource_attributes": {"a": 1}}, TypeError, "resource_attributes['a']: expected a str"),
        ({"traces": "jaeger"}, ValueError, "traces: expected one of 'console', 'none', 'otlp'"),
        ({"traces": ["console"]}, ValueError, "traces: expected one of"),
        ({"metrics": "otel"}, ValueError, "metrics: expected one of 'console', 'none', 'otlp', "),
        ({"sampler": "sometimes"}, ValueError, "sampler: expected one of 'always_on'"),
        ({"sampler_ratio": "0.5"}, TypeError, "sampler_ratio: expected a number"),
        ({"sampler_ratio": True}, TypeError, "sampler_ratio: expected a number"),
        ({"sampler_ratio": 1.5}, ValueError, "sampler_ratio: 1.5 is not from 0 to 1"),
        (
            {"sampler": "always_on", "sampler_ratio": 0.5},
            ValueError,
            "sampler_ratio: only the 'traceidratio' and 'parentbased_traceidratio'",
        ),
        ({"prometheus_port": 9464}, ValueError, "prometheus_port: only used with metrics="),
        (
            {"metrics": "prometheus", "prometheus_port": "9464"},
            TypeError,
            "prometheus_port: expected an int",
        ),
        (
            {"metrics": "prometheus", "prometheus_port": 65536},
            ValueError,
            "prometheus_port: 65536 is not a TCP port (0-65535)",
        ),
        ({"prometheus_host": "0.0.0.0"}, ValueError, "prometheus_host: only used with metrics"),
        ({"prometheus_host": " "}, ValueError, "prometheus_host: expected an address"),
        ({"prometheus_host": 127}, TypeError, "prometheus_host: expected a str, not 127"),
        (
            {"metrics": "prometheus", "prometheus_host": "::1"},
            ValueError,
            "prometheus_host: only used with a prometheus_port",
        ),
        ({"prometheus_registry": object()}, TypeError, "prometheus_registry: expected a"),
        ({"set_global": "yes"}, TypeError, "set_global: expected a bool"),
        ({"span_processors": "x"}, TypeError, "span_processors: expected a sequence"),
        ({"span_processors": [object()]}, TypeError, "span_processors[0]: expected a Span"),
        ({"metric_readers": [InMemorySpanExporter()]}, TypeError, "metric_readers[0]: expected"),
        ({"export_timeout": None}, TypeError, "export_timeout: expected a number of seconds"),
    ],
)
def test_bad_options_fail_with_the_option_name_first(
    options: dict[str, Any], error: type[Exception], prefix: str
) -> None:
    threads = exporter_threads()
    with pytest.raises(error) as caught:
        configure(**{"set_global": False, **options})
    assert str(caught.value).startswith(prefix), str(caught.value)
    assert exporter_threads() == threads


# --------------------------------------------------------------------------------------
# exporters


def test_console_exporters_print_spans_and_metrics(
    made: list[Telemetry], capsys: pytest.CaptureFixture[str]
) -> None:
    result = local(made, service_name="dev", traces="console", metrics="console")
    with result.tracer_provider.get_tracer("test").start_as_current_span("GET /items/{id}"):
        pass
    printed = capsys.readouterr().out  # printed at once, not batched
    span = json.loads(printed)
    assert span["name"] == "GET /items/{id}"
    assert span["resource"]["attributes"]["service.name"] == "dev"
    counter = result.meter_provider.get_meter("test").create_counter("orders")
    counter.add(3)
    result.shutdown()  # the periodic reader exports once more on shutdown
    printed = capsys.readouterr().out
    assert '"name": "orders"' in printed
    assert '"value": 3' in printed


class OTLPReceiver(http.server.ThreadingHTTPServer):
    """A loopback OTLP/HTTP endpoint that keeps what it is sent."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, bytes]] = []
        super().__init__(("127.0.0.1", 0), OTLPHandler)


class OTLPHandler(http.server.BaseHTTPRequestHandler):
    server: OTLPReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.posts.append((self.path, self.headers["content-type"], body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    receiver = OTLPReceiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.shutdown()
    receiver.server_close()
    thread.join(5)


def test_otlp_exports_to_the_endpoint_from_the_environment(
    made: list[Telemetry], monkeypatch: pytest.MonkeyPatch, otlp_receiver: OTLPReceiver
) -> None:
    host, port = otlp_receiver.server_address[:2]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{host!s}:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    result = local(made, service_name="shop", metrics="otlp")
    with result.tracer_provider.get_tracer("test").start_as_current_span("GET /cart"):
        pass
    result.meter_provider.get_meter("test").create_counter("carts").add(2)
    assert otlp_receiver.posts == []  # batched: nothing sent yet
    result.shutdown()

    by_path = {path: (kind, body) for path, kind, body in otlp_receiver.posts}
    assert sorted(by_path) == ["/v1/metrics", "/v1/traces"]
    assert by_path["/v1/traces"][0] == "application/x-protobuf"
    traces = ExportTraceServiceRequest.FromString(by_path["/v1/traces"][1])
    [resource_spans] = traces.resource_spans
    services = [a.value.string_value for a in resource_spans.resource.attributes]
    assert "shop" in services
    assert [s.name for s in resource_spans.scope_spans[0].spans] == ["GET /cart"]
    exported = ExportMetricsServiceRequest.FromString(by_path["/v1/metrics"][1])
    names = [
        metric.name
        for resource_metrics in exported.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    ]
    assert "carts" in names


@pytest.mark.parametrize(
    ("missing", "options", "message"),
    [
        (OTLP_TRACES, {"traces": "otlp"}, "traces: 'otlp' needs opentelemetry-exporter-otlp"),
        (OTLP_METRICS, {"metrics": "otlp"}, "metrics: 'otlp' needs opentelemetry-exporter-otlp"),
        (PROMETHEUS, {"metrics": "prometheus"}, "metrics: 'prometheus' needs opentelemetry-"),
    ],
)
def test_a_missing_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, missing: str, options: dict[str, Any], message: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # what an uninstalled package looks like
    with pytest.raises(MissingExtraError, match="^" + re.escape(message)) as caught:
        configure(set_global=False, **options)
    extra = "prometheus" if missing == PROMETHEUS else "otlp"
    assert f"pip install 'asgikit[{extra}]'" in str(caught.value)
    assert isinstance(caught.value, ImportError)


def test_a_missing_extra_leaves_no_exporter_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, OTLP_METRICS, None)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console,otlp")
    registry = CollectorRegistry()
    threads = exporter_threads()
    with pytest.raises(MissingExtraError):
        configure(set_global=False, traces="otlp", prometheus_registry=registry)
    assert exporter_threads() == threads
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus,otlp")
    with pytest.raises(MissingExtraError):
        configure(set_global=False, prometheus_registry=registry)
    assert list(registry.collect()) == []  # the Prometheus reader unregistered itself


# --------------------------------------------------------------------------------------
# Prometheus


def record_durations(result: Telemetry, values: list[float]) -> None:
    histogram = result.meter_provider.get_meter("test").create_histogram(
        "http.server.request.duration", unit="s"
    )
    for value in values:
        histogram.record(value, {"http.request.method": "GET"})


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not in:\n{text}")


def test_prometheus_port_serves_the_exposition_format(made: list[Telemetry]) -> None:
    port = free_port()
    result = local(
        made, metrics="prometheus", prometheus_port=port, prometheus_registry=CollectorRegistry()
    )
    server = result.prometheus_server
    assert server is not None
    assert (server.host, server.port, server.url) == (
        "127.0.0.1",
        port,
        f"http://127.0.0.1:{port}/metrics",
    )
    record_durations(result, [0.1, 0.2, 0.4])
    with httpx.Client(trust_env=False, timeout=5) as client:
        scraped = client.get(server.url)
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert sample(scraped.text, "http_server_request_duration_seconds_count") == 3
    assert sample(scraped.text, "http_server_request_duration_seconds_sum") == pytest.approx(0.7)
    assert "python_gc" not in scraped.text  # only the registry asked for
    result.shutdown()
    assert not server.running
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_prometheus_address_from_the_environment(
    made: list[Telemetry], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "::1")
    result = local(made, prometheus_registry=CollectorRegistry())
    assert result.prometheus_server is not None
    assert result.prometheus_server.url == f"http://[::1]:{port}/metrics"
    with httpx.Client(trust_env=False, timeout=5) as client:
        assert client.get(result.prometheus_server.url).status_code == 200


def test_prometheus_port_zero_picks_a_free_port(made: list[Telemetry]) -> None:
    result = local(
        made,
        metrics="prometheus",
        prometheus_port=0,
        prometheus_host="127.0.0.1",
        prometheus_registry=CollectorRegistry(),
    )
    assert result.prometheus_server is not None
    assert result.prometheus_server.port > 0


def test_a_port_in_use_fails_and_leaves_nothing_registered() -> None:
    registry = CollectorRegistry()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"^prometheus_port: cannot listen on 127.0.0.1:{port}"):
            configure(
                set_global=False,
                metrics="prometheus",
                prometheus_port=port,
                prometheus_registry=registry,
            )
    assert list(registry.collect()) == []


def test_without_a_port_the_metrics_go_to_prometheus_clients_registry(
    made: list[Telemetry],
) -> None:
    result = local(made, metrics="prometheus")
    assert result.prometheus_server is None
    assert result.prometheus_registry is REGISTRY
    record_durations(result, [0.5])
    families = {family.name for family in REGISTRY.collect()}
    assert "http_server_request_duration_seconds" in families
    result.shutdown()
    families = {family.name for family in REGISTRY.collect()}
    assert "http_server_request_duration_seconds" not in families


def test_start_prometheus_server_alone() -> None:
    registry = CollectorRegistry()
    server = start_prometheus_server(port=0, registry=registry)
    try:
        with httpx.Client(trust_env=False, timeout=5) as client:
            assert client.get(server.url).text == ""
    finally:
        server.stop()
        server.stop()
    default = start_prometheus_server(port=0)  # prometheus_client's REGISTRY
    try:
        with httpx.Client(trust_env=False, timeout=5) as client:
            assert "python_info" in client.get(default.url).text
    finally:
        default.stop()


@pytest.mark.parametrize(
    ("options", "error", "prefix"),
    [
        ({"port": -1}, ValueError, "port: -1 is not a TCP port"),
        ({"port": True}, TypeError, "port: expected an int"),
        ({"host": ""}, TypeError, "host: expected a non-empty str"),
    ],
)
def test_start_prometheus_server_validates(
    options: dict[str, Any], error: type[Exception], prefix: str
) -> None:
    with pytest.raises(error, match="^" + re.escape(prefix)):
        start_prometheus_server(**options)


# --------------------------------------------------------------------------------------
# MetricsEndpoint


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"app"})


@pytest.fixture
def scraped(made: list[Telemetry]) -> Telemetry:
    result = local(made, metrics="prometheus", prometheus_registry=CollectorRegistry())
    record_durations(result, [0.01, 0.02])
    result.meter_provider.get_meter("test").create_counter("orders").add(5)
    return result


def endpoint(result: Telemetry, **options: Any) -> ASGIApp:
    return enforce(MetricsEndpoint(enforce(hello), registry=result.prometheus_registry, **options))


@pytest.mark.anyio
async def test_endpoint_serves_get(scraped: Telemetry) -> None:
    response = await request(endpoint(scraped), "GET", "/metrics")
    assert response.status == 200
    assert response.header("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    assert response.header("content-length") == str(len(response.body))
    assert sample(response.text, "http_server_request_duration_seconds_count") == 2
    assert sample(response.text, "orders_total") == 5


@pytest.mark.anyio
async def test_endpoint_head_has_the_headers_and_no_body(scraped: Telemetry) -> None:
    get = await request(endpoint(scraped), "GET", "/metrics")
    head = await request(endpoint(scraped), "HEAD", "/metrics")
    assert head.status == 200
    assert head.body == b""
    assert head.header("content-length") == get.header("content-length")
    assert head.header("content-type") == get.header("content-type")


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
async def test_endpoint_other_methods_get_405(scraped: Telemetry, method: str) -> None:
    response = await request(endpoint(scraped), method, "/metrics", body=b"x")
    assert response.status == 405
    assert response.header("allow") == "GET, HEAD"
    assert response.text.startswith("405 Method Not Allowed")


@pytest.mark.anyio
async def test_endpoint_other_paths_and_scopes_pass_through(scraped: Telemetry) -> None:
    app = endpoint(scraped, path="/internal/metrics")
    for path in ("/", "/metrics", "/internal/metrics/", "/internal/metric"):
        response = await request(app, "GET", path)
        assert response.text == "app", path
    assert "orders_total" in (await request(app, "GET", "/internal/metrics?x=1")).text
    session = await websocket(app, "/internal/metrics")
    assert session.accepted
    lifespan = await run_lifespan(app)
    assert [m["type"] for m in lifespan.messages] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


@pytest.mark.anyio
async def test_endpoint_negotiates_openmetrics_and_gzip(scraped: Telemetry) -> None:
    response = await request(
        endpoint(scraped),
        "GET",
        "/metrics",
        headers=[
            ("accept", "application/openmetrics-text; version=1.0.0, text/plain;q=0.5"),
            ("accept-encoding", "gzip"),
        ],
    )
    assert str(response.header("content-type")).startswith("application/openmetrics-text")
    assert response.header("content-encoding") == "gzip"
    assert response.header("vary") == "accept, accept-encoding"
    assert response.header("content-length") == str(len(response.body))
    text = gzip.decompress(response.body).decode()
    assert text.endswith("# EOF\n")
    assert sample(text, "orders_total") == 5


@pytest.mark.anyio
async def test_endpoint_defaults_to_prometheus_clients_registry() -> None:
    app = MetricsEndpoint(hello)
    assert app.registry is REGISTRY
    response = await request(enforce(app), "GET", "/metrics")
    assert "python_info" in response.text


@pytest.mark.parametrize(
    ("options", "error", "prefix"),
    [
        ({"path": b"/metrics"}, TypeError, "path: expected a str"),
        ({"path": "metrics"}, ValueError, "path: 'metrics' is not a path"),
        ({"path": "/metrics?x"}, ValueError, "path: '/metrics?x' is not a path"),
        ({"registry": "REGISTRY"}, TypeError, "registry: expected a prometheus_client"),
    ],
)
def test_endpoint_validates_options(
    options: dict[str, Any], error: type[Exception], prefix: str
) -> None:
    with pytest.raises(error, match="^" + re.escape(prefix)):
        MetricsEndpoint(hello, **options)


def test_endpoint_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, PROMETHEUS, None)
    with pytest.raises(MissingExtraError, match=r"^MetricsEndpoint needs .*asgikit\[prometheus\]"):
        MetricsEndpoint(hello)


# --------------------------------------------------------------------------------------
# flush, shutdown, context manager


def test_force_flush_exports_batched_spans(made: list[Telemetry]) -> None:
    memory = InMemorySpanExporter()
    metrics = InMemoryMetricReader()
    result = local(made, span_processors=[BatchSpanProcessor(memory)], metric_readers=[metrics])
    with result.tracer_provider.get_tracer("test").start_as_current_span("batched"):
        pass
    assert memory.get_finished_spans() == ()
    assert result.force_flush(5_000)
    assert [span.name for span in memory.get_finished_spans()] == ["batched"]


def test_shutdown_is_idempotent_and_thread_safe(caplog: pytest.LogCaptureFixture) -> None:
    memory = InMemorySpanExporter()
    result = configure(
        set_global=False,
        metrics="prometheus",
        prometheus_port=0,
        prometheus_registry=CollectorRegistry(),
        span_processors=[BatchSpanProcessor(memory)],
    )
    with result.tracer_provider.get_tracer("test").start_as_current_span("last"):
        pass
    threads = [threading.Thread(target=result.shutdown) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    result.shutdown()
    assert result.shut_down
    assert [span.name for span in memory.get_finished_spans()] == ["last"]  # flushed
    assert result.prometheus_server is not None and not result.prometheus_server.running
    assert "can only be called once" not in caplog.text
    assert "shut_down=True" in repr(result)


def test_context_manager_shuts_down(capsys: pytest.CaptureFixture[str]) -> None:
    with configure(set_global=False, metrics="console") as result:
        result.meter_provider.get_meter("test").create_counter("visits").add(1)
        inside = result.shut_down
    assert (inside, result.shut_down) == (False, True)
    assert '"name": "visits"' in capsys.readouterr().out


# --------------------------------------------------------------------------------------
# global providers


@pytest.fixture
def fresh_globals(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenTelemetry's set-once globals as in a new process, restored after the test."""
    monkeypatch.setattr(trace_api, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(trace_api, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(metrics_internal, "_METER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(metrics_internal, "_METER_PROVIDER", None)
    monkeypatch.setattr(
        metrics_internal, "_PROXY_METER_PROVIDER", type(metrics_api.get_meter_provider())()
    )


@pytest.mark.usefixtures("fresh_globals")
def test_set_global_installs_the_providers_once(made: list[Telemetry]) -> None:
    assert not global_providers_set()
    result = configure(service_name="global")
    made.append(result)
    assert result.is_global
    assert trace_api.get_tracer_provider() is result.tracer_provider
    assert metrics_api.get_meter_provider() is result.meter_provider
    assert global_providers_set()
    with pytest.raises(RuntimeError, match=r"^set_global: global OpenTelemetry providers"):
        configure(service_name="again")
    assert trace_api.get_tracer_provider() is result.tracer_provider
    assert local(made, service_name="local").tracer_provider is not result.tracer_provider


@pytest.mark.usefixtures("fresh_globals")
def test_a_meter_provider_set_elsewhere_counts(made: list[Telemetry]) -> None:
    metrics_api.set_meter_provider(metrics_api.NoOpMeterProvider())
    with pytest.raises(RuntimeError, match=r"^set_global:"):
        configure()
    # Nothing half-installed: the tracer provider is still the API's proxy.
    assert isinstance(trace_api.get_tracer_provider(), trace_api.ProxyTracerProvider)


GLOBAL_SCRIPT = textwrap.dedent(
    """
    import logging
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.trace import TracerProvider
    from asgikit.telemetry import configure

    logging.basicConfig(level=logging.WARNING)
    if {other_first}:
        trace.set_tracer_provider(TracerProvider())
    else:
        first = configure(service_name="one")
        assert trace.get_tracer_provider() is first.tracer_provider
        assert metrics.get_meter_provider() is first.meter_provider
    try:
        configure(service_name="two")
    except RuntimeError as exc:
        print("refused:", exc)
    else:
        print("accepted")
    """
)


@pytest.mark.parametrize("other_first", [False, True])
def test_global_providers_in_a_fresh_process(other_first: bool) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", GLOBAL_SCRIPT.format(other_first=other_first)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("refused: set_global: global OpenTelemetry providers")
    assert "Overriding" not in completed.stderr  # refused before the API had to refuse


def test_public_names() -> None:
    for name in telemetry.__all__:
        assert getattr(telemetry, name) is not None


def test_shutdown_flushes_metrics_even_when_the_span_side_fails() -> None:
    telemetry = configure(traces="none", metrics="none", set_global=False)
    calls: list[str] = []

    def failing() -> None:
        calls.append("tracer")
        raise RuntimeError("exporter broke")

    telemetry.tracer_provider.shutdown = failing  # type: ignore[method-assign]
    meter_shutdown = telemetry.meter_provider.shutdown

    def meter(**options: Any) -> None:
        calls.append("meter")
        meter_shutdown(**options)

    telemetry.meter_provider.shutdown = meter  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="exporter broke"):
        telemetry.shutdown()
    assert sorted(calls) == ["meter", "tracer"]  # both at once
