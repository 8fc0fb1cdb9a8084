"""Logs to the collector: with ``configure(logs=...)``, every structlog line of a request
(the access line, the app's own structlog lines, ``logging`` records routed through
asgikit's logging) becomes an OpenTelemetry log record carrying the request span's trace
and span ids; exported over OTLP to a real receiver, flushed at shutdown."""

from __future__ import annotations

import io
import logging
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import asgikit.logging
from asgikit.contract import enforce
from asgikit.logging.collector import set_sink, to_collector
from asgikit.middleware import AccessLogMiddleware, TracingMiddleware
from asgikit.telemetry import MissingExtraError, Telemetry, configure
from asgikit.telemetry.logs import StructlogSink, log_processor, logs_exporters
from asgikit.testing import request
from asgikit.types import ASGIApp, Receive, Scope, Send
from tests.otlp_receivers import HTTPReceiver
from tests.telemetry_env import made_fixture, without_otel_variables  # noqa: F401 (fixture)

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    without_otel_variables(monkeypatch)
    yield
    set_sink(None)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    structlog.get_logger("shop").info("cart.loaded", items=3)
    logging.getLogger("shop.stdlib").warning("stock low for %s", "socks")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def stack(telemetry: Telemetry, order: str) -> ASGIApp:
    def tracing(inner: ASGIApp) -> ASGIApp:
        return TracingMiddleware(inner, tracer_provider=telemetry.tracer_provider)

    def access(inner: ASGIApp) -> ASGIApp:
        return AccessLogMiddleware(inner)

    outer, inner = (access, tracing) if order == "access_log outside" else (tracing, access)
    return enforce(outer(enforce(inner(enforce(app)))))


def span_ids(exporter: InMemorySpanExporter) -> tuple[str, str]:
    [span] = exporter.get_finished_spans()
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


@pytest.mark.parametrize("order", ["access_log outside", "tracing outside"])
async def test_every_line_of_a_request_carries_the_spans_ids(
    made: list[Telemetry], order: str
) -> None:
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    telemetry = configure(
        set_global=False,
        service_name="shop",
        span_processors=[SimpleSpanProcessor(spans)],
        log_processors=[SimpleLogRecordProcessor(logs)],
    )
    made.append(telemetry)
    output = io.StringIO()
    asgikit.logging.configure(format="json", stream=output)
    assert (await request(stack(telemetry, order), "GET", "/cart")).status == 200
    trace_id, span_id = span_ids(spans)
    records = {data.log_record.body: data for data in logs.get_finished_logs()}
    assert set(records) == {"cart.loaded", "stock low for socks", "http.request"}
    for data in records.values():
        assert f"{data.log_record.trace_id:032x}" == trace_id
        assert f"{data.log_record.span_id:016x}" == span_id
        assert data.resource.attributes["service.name"] == "shop"
    app_line = records["cart.loaded"].log_record
    assert (app_line.severity_text, app_line.attributes["items"]) == ("INFO", 3)
    stdlib_line = records["stock low for socks"].log_record
    assert stdlib_line.severity_text == "WARN"
    assert stdlib_line.attributes["logger.name"] == "shop.stdlib"
    access = records["http.request"].log_record
    assert access.attributes["http.response.status_code"] == 200
    assert output.getvalue().count("\n") == 3  # the lines themselves still written

    telemetry.shutdown()  # the sink goes with it: lines are written, not exported
    structlog.get_logger("shop").info("after.shutdown")
    assert "after.shutdown" in output.getvalue()
    assert len(logs.get_finished_logs()) == 3


async def test_logs_go_to_a_real_otlp_receiver_and_are_flushed_at_shutdown(
    made: list[Telemetry], monkeypatch: pytest.MonkeyPatch
) -> None:
    with HTTPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "60000")  # only the shutdown flushes
        telemetry = configure(set_global=False, service_name="shop", traces="otlp", logs="otlp")
        made.append(telemetry)
        assert telemetry.logs == ("otlp",)
        assert "logs=['otlp']" in repr(telemetry)
        asgikit.logging.configure(format="json", stream=io.StringIO())
        await request(stack(telemetry, "access_log outside"), "GET", "/cart")
        telemetry.shutdown()
        with receiver.received.lock:
            logs = list(receiver.received.logs)
            spans = list(receiver.received.span_ids)
    [span] = spans
    assert {log["body"] for log in logs} == {"cart.loaded", "stock low for socks", "http.request"}
    for log in logs:
        assert (log["trace_id"], log["span_id"]) == (span["trace_id"], span["span_id"])
        assert log["service"] == "shop"


def test_force_flush_covers_logs(made: list[Telemetry]) -> None:
    logs = InMemoryLogRecordExporter()
    telemetry = configure(
        set_global=False,
        log_processors=[BatchLogRecordProcessor(logs, schedule_delay_millis=60000)],
    )
    made.append(telemetry)
    to_collector(None, "error", {"event": "boom", "level": "error"})
    assert logs.get_finished_logs() == ()
    assert telemetry.force_flush() is True
    [data] = logs.get_finished_logs()
    assert (data.log_record.body, data.log_record.severity_text) == ("boom", "ERROR")


def test_logs_are_off_by_default(made: list[Telemetry]) -> None:
    telemetry = configure(set_global=False)
    made.append(telemetry)
    assert telemetry.logger_provider is None and telemetry.logs == ()
    assert logs_exporters(None) == ()


def test_the_logs_option_and_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert logs_exporters("console") == ("console",)
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "otlp")
    assert logs_exporters(None) == ("otlp",)
    assert logs_exporters("none") == ()
    with pytest.raises(ValueError, match=r"^logs: expected one of"):
        logs_exporters("loki")


def test_console_and_grpc_processors() -> None:
    console = log_processor("console")
    assert isinstance(console, SimpleLogRecordProcessor)
    console.shutdown()
    grpc = log_processor("otlp", "grpc", 1.0)
    assert isinstance(grpc, BatchLogRecordProcessor)
    grpc.shutdown()


def test_a_missing_exporter_names_its_extra(
    made: list[Telemetry], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http._log_exporter", None)
    with pytest.raises(MissingExtraError, match=r"^logs: 'otlp' needs"):
        configure(set_global=False, traces="console", logs="otlp")


def records_of(fields: dict[str, Any]) -> Any:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    StructlogSink(provider)("info", fields)
    [data] = exporter.get_finished_logs()
    return data.log_record


def test_what_a_record_carries() -> None:
    error = ValueError("bad")
    record = records_of(
        {
            "event": "x",
            "log_level": "critical",
            "path": ["a"],
            "none": None,
            "_record": object(),
            "exc_info": error,
            "trace_id": "not hex",
            "span_id": "0" * 16,
        }
    )
    assert record.severity_text == "FATAL"
    assert record.attributes["path"] == "['a']"  # its text
    assert "none" not in record.attributes and "_record" not in record.attributes
    assert record.attributes["exception.type"] == "ValueError"
    assert record.trace_id in (None, 0)  # invalid ids: the current span's (none here)
    zero = records_of({"event": "y", "trace_id": "0" * 32, "span_id": "0" * 16})
    assert zero.trace_id in (None, 0)
    assert records_of({"event": "z", "level": "trace"}).severity_text == "INFO"


@pytest.mark.parametrize("exc_info", [True, "tuple"])
def test_exc_info_forms(exc_info: Any) -> None:
    try:
        raise KeyError("gone")
    except KeyError as error:
        value = (KeyError, error, error.__traceback__) if exc_info == "tuple" else True
        record = records_of({"event": "e", "exc_info": value})
    assert record.attributes["exception.type"] == "KeyError"
    assert "exception.type" not in records_of({"event": "e", "exc_info": False}).attributes


def test_a_failing_sink_never_loses_the_line() -> None:
    def broken(method: str, fields: Any) -> None:
        raise RuntimeError("collector gone")

    set_sink(broken)
    fields = {"event": "kept"}
    assert to_collector(None, "info", fields) is fields


def test_a_port_in_use_shuts_the_log_processors_down_too() -> None:
    from prometheus_client import CollectorRegistry

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=r"^prometheus_port: cannot listen"):
            configure(
                set_global=False,
                metrics="prometheus",
                prometheus_port=port,
                prometheus_registry=CollectorRegistry(),
                logs="console",
            )
    to_collector(None, "info", {"event": "not exported"})  # no sink was installed


def test_a_failing_sink_is_reported_at_most_once_per_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(method: str, fields: Any) -> None:
        raise RuntimeError("collector gone")

    set_sink(broken)
    with caplog.at_level(logging.WARNING, logger="asgikit.hooks"):
        for _ in range(3):
            to_collector(None, "info", {"event": "kept"})
    [report] = [r for r in caplog.records if r.name == "asgikit.hooks"]
    assert "collector sink raised RuntimeError" in report.getMessage()


def test_a_second_telemetry_keeps_its_sink_when_the_first_shuts_down() -> None:
    first, second = InMemoryLogRecordExporter(), InMemoryLogRecordExporter()
    one = configure(set_global=False, log_processors=[SimpleLogRecordProcessor(first)])
    try:
        with pytest.warns(RuntimeWarning, match=r"^logs: another collector sink is installed"):
            two = configure(set_global=False, log_processors=[SimpleLogRecordProcessor(second)])
        one.shutdown()  # removes nothing: the sink installed is the second's
        to_collector(None, "info", {"event": "after"})
        assert [data.log_record.body for data in second.get_finished_logs()] == ["after"]
        assert first.get_finished_logs() == ()
        two.shutdown()  # its own: removed
        to_collector(None, "info", {"event": "gone"})
        assert len(second.get_finished_logs()) == 1
    finally:
        one.shutdown()


def test_a_record_is_sampled_only_when_its_span_is() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
    from opentelemetry.trace import TraceFlags

    for sampler, sampled in ((ALWAYS_ON, True), (ALWAYS_OFF, False)):
        tracer = TracerProvider(sampler=sampler).get_tracer("t")
        with tracer.start_as_current_span("s") as span:
            context = span.get_span_context()
            ids = {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
            record = records_of({"event": "in span", **ids})
            other = records_of({"event": "other", **ids, "span_id": "1" * 16})
        assert record.trace_id == context.trace_id
        assert record.trace_flags == context.trace_flags  # the span's own
        assert record.trace_flags.sampled is sampled
        assert other.trace_flags == TraceFlags.DEFAULT  # not the current span: unknown
    assert records_of({"event": "no span", **ids}).trace_flags == TraceFlags.DEFAULT


def test_a_port_in_use_shuts_the_callers_log_processors_down_too() -> None:
    from prometheus_client import CollectorRegistry

    class Recorded(SimpleLogRecordProcessor):
        closed = False

        def shutdown(self) -> None:
            Recorded.closed = True
            super().shutdown()

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match=r"^prometheus_port: cannot listen"):
            configure(
                set_global=False,
                metrics="prometheus",
                prometheus_port=taken.getsockname()[1],
                prometheus_registry=CollectorRegistry(),
                log_processors=[Recorded(InMemoryLogRecordExporter())],
            )
    assert Recorded.closed
