"""TracingMiddleware's less travelled paths: carriers, hosts, chains, websocket variants."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind

from asgikit.middleware.tracing.attributes import HeaderGetter
from asgikit.scopes import CHAIN_KEY
from asgikit.testing import ALL_HTTP_EXTENSIONS, http_scope, request, websocket
from asgikit.types import Receive, Scope, Send
from tests.middleware.test_tracing import TRACE_ID, TRACEPARENT, Telemetry, responder

pytestmark = pytest.mark.anyio


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


def test_header_getter_joins_repeats_and_lists_keys() -> None:
    getter = HeaderGetter()
    carrier = [(b"tracestate", b"a=1"), (b"x", b"y"), (b"tracestate", b"b=2")]
    assert getter.get(carrier, "tracestate") == ["a=1,b=2"]
    assert getter.get(carrier, "x") == ["y"]
    assert getter.get(carrier, "traceparent") is None
    assert getter.keys(carrier) == ["tracestate", "x", "tracestate"]


async def test_first_host_header_wins_and_unknown_scheme_has_no_default_port(
    telemetry: Telemetry,
) -> None:
    app = telemetry.wrap(responder())
    await request(
        app,
        headers=[("host", "first.example"), ("host", "second.example")],
        scheme="gopher",
        **{"asgikit.peer": ("10.0.0.2", 0)},
    )
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["server.address"] == "first.example"
    assert "server.port" not in attributes
    assert attributes["network.peer.address"] == "10.0.0.2"
    assert "network.peer.port" not in attributes


async def test_an_existing_scope_chain_is_joined(telemetry: Telemetry) -> None:
    class Route:
        path = "/r/{id}"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        inner = {**scope, "route": Route()}
        scope[CHAIN_KEY].append(inner)
        await responder()(inner, receive, send)

    chain: list[Scope] = []
    await request(telemetry.wrap(app), "GET", "/r/1", **{CHAIN_KEY: chain})
    assert telemetry.span().name == "GET /r/{id}"
    # The middleware did not start a chain of its own: its copy joined this one.
    assert chain and all(copy[CHAIN_KEY] is chain for copy in chain)


async def test_pathsend_without_size_metrics(telemetry: Telemetry, tmp_path: Any) -> None:
    file = tmp_path / "f.txt"
    file.write_bytes(b"abc")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(file)})

    response = await request(telemetry.wrap(app), extensions=ALL_HTTP_EXTENSIONS)
    assert response.pathsend == str(file)
    assert telemetry.duration().count == 1


async def accept_and_close(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": 1000})


async def test_websocket_internal_span_and_existing_chain(telemetry: Telemetry) -> None:
    tracer = telemetry.tracer_provider.get_tracer("outer")
    with tracer.start_as_current_span("outer"):
        await websocket(telemetry.wrap(accept_and_close), **{CHAIN_KEY: []})
    inner, _ = telemetry.spans()
    assert inner.kind is SpanKind.INTERNAL


async def test_unsampled_websocket_still_binds_ids() -> None:
    telemetry = Telemetry(sampler=ALWAYS_OFF)
    seen: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(structlog.contextvars.get_contextvars())
        await accept_and_close(scope, receive, send)

    session = await websocket(telemetry.wrap(app), headers={"traceparent": TRACEPARENT})
    assert session.accepted
    assert telemetry.spans() == []
    assert seen[0]["trace_id"] == TRACE_ID


async def test_websocket_without_log_binding(telemetry: Telemetry) -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(structlog.contextvars.get_contextvars())
        await accept_and_close(scope, receive, send)

    await websocket(telemetry.wrap(app, bind_contextvars=False))
    assert "trace_id" not in seen[0]
    assert dict(telemetry.span().attributes or {})["websocket.close_code"] == 1000


async def test_no_host_header(telemetry: Telemetry) -> None:
    scope = http_scope()
    scope["headers"] = [(b"user-agent", b"ua")]
    await request(telemetry.wrap(responder()), scope=scope)
    attributes = dict(telemetry.span().attributes or {})
    assert "server.address" not in attributes
    assert attributes["user_agent.original"] == "ua"


async def test_disconnect_after_the_response_is_not_a_disconnect(telemetry: Telemetry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await responder()(scope, receive, send)
        while (await receive())["type"] != "http.disconnect":
            pass

    await request(telemetry.wrap(app))
    assert "asgikit.disconnected" not in dict(telemetry.span().attributes or {})


_LATE_GLOBAL_PROVIDERS = """
import anyio
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asgikit.middleware.tracing import TracingMiddleware
from asgikit.testing import request


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


middleware = TracingMiddleware(app)  # created before any global provider is set
exporter = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(tracer_provider)
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
anyio.run(request, middleware)
names = [m.name for r in reader.get_metrics_data().resource_metrics
         for s in r.scope_metrics for m in s.metrics]
print([span.name for span in exporter.get_finished_spans()], sorted(names))
"""


def test_global_providers_set_after_construction_are_used() -> None:
    # The global providers can be set once per process: in a child process, not here.
    result = subprocess.run(
        [sys.executable, "-c", _LATE_GLOBAL_PROVIDERS],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == (
        "['GET'] ['http.server.active_requests', 'http.server.request.duration']"
    )


def test_current_otel_context_reads_what_the_api_reads() -> None:
    from opentelemetry import context as otel_context
    from opentelemetry.trace import NonRecordingSpan, SpanContext, set_span_in_context

    from asgikit.observe import current_otel_context, current_span_context

    assert current_otel_context() is otel_context.get_current()
    assert current_span_context() is None
    span_context = SpanContext(int(TRACE_ID, 16), 0x00F067AA0BA902B7, is_remote=False)
    token = otel_context.attach(set_span_in_context(NonRecordingSpan(span_context)))
    try:
        assert current_otel_context() is otel_context.get_current()
        assert current_span_context() == span_context
    finally:
        otel_context.detach(token)
    assert current_otel_context() is otel_context.get_current()
