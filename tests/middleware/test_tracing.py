"""TracingMiddleware: spans, metrics, outcomes, context, options (plain ASGI apps)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
import structlog
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.propagate import inject
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode

from asgikit.contract import enforce
from asgikit.middleware.tracing import CANCELLED, DISCONNECTED, TracingMiddleware
from asgikit.testing import (
    ALL_HTTP_EXTENSIONS,
    DISCONNECT,
    ClientDisconnected,
    request,
    run_lifespan,
    websocket,
)
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


@dataclass
class Telemetry:
    """A real SDK set-up with in-memory exporter and reader (never the global providers)."""

    sampler: Any = None
    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)

    def __post_init__(self) -> None:
        kwargs = {} if self.sampler is None else {"sampler": self.sampler}
        self.tracer_provider = TracerProvider(**kwargs)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def wrap(self, app: ASGIApp, **options: Any) -> ASGIApp:
        """``enforce(TracingMiddleware(enforce(app)))`` with these providers."""
        middleware = TracingMiddleware(
            enforce(app),
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            **options,
        )
        return enforce(middleware)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self) -> ReadableSpan:
        [span] = self.spans()
        return span

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def duration(self) -> HistogramDataPoint:
        [point] = self.points("http.server.request.duration")
        assert isinstance(point, HistogramDataPoint)
        return point


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def responder(
    status: int = 200, body: bytes = b"ok", headers: list[tuple[bytes, bytes]] | None = None
) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        await send({"type": "http.response.body", "body": body})

    return app


async def test_plain_app_span_attributes_and_metrics(telemetry: Telemetry) -> None:
    app = telemetry.wrap(responder())
    response = await request(
        app,
        "GET",
        "/items/42?q=shoes&access_token=abc",
        headers={"host": "example.com:8443", "user-agent": "curl/8.5"},
        scheme="https",
        http_version="2",
        client=("203.0.113.9", 4321),
    )
    assert response.status == 200
    span = telemetry.span()
    assert span.name == "GET"  # no route known: never the raw path
    assert span.kind is SpanKind.SERVER
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "url.path": "/items/42",
        "url.scheme": "https",
        "url.query": "q=shoes&access_token=[REDACTED]",
        "network.protocol.name": "http",
        "network.protocol.version": "2",
        "server.address": "example.com",
        "server.port": 8443,
        "client.address": "203.0.113.9",
        "client.port": 4321,
        "network.peer.address": "203.0.113.9",
        "network.peer.port": 4321,
        "user_agent.original": "curl/8.5",
        "http.response.status_code": 200,
    }
    point = telemetry.duration()
    assert dict(point.attributes or {}) == {
        "http.request.method": "GET",
        "url.scheme": "https",
        "http.response.status_code": 200,
    }
    assert tuple(point.explicit_bounds) == BUCKETS
    assert point.count == 1
    assert span.end_time is not None and span.start_time is not None
    assert math.isclose(point.sum, (span.end_time - span.start_time) / 1e9)
    [active] = telemetry.points("http.server.active_requests")
    assert isinstance(active, NumberDataPoint)
    assert active.value == 0
    assert dict(active.attributes or {}) == {"http.request.method": "GET", "url.scheme": "https"}


async def test_default_port_peer_and_ipv6_host(telemetry: Telemetry) -> None:
    app = telemetry.wrap(responder())
    await request(
        app,
        headers={"host": "[2001:db8::1]"},
        scheme="https",
        client=("198.51.100.7", 0),
        **{"asgikit.peer": ("10.0.0.2", 5555)},
    )
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["server.address"] == "2001:db8::1"
    assert attributes["server.port"] == 443
    assert attributes["client.address"] == "198.51.100.7"
    assert "client.port" not in attributes  # 0: a proxy named the client without a port
    assert attributes["network.peer.address"] == "10.0.0.2"
    assert attributes["network.peer.port"] == 5555


async def test_bad_host_and_no_client(telemetry: Telemetry) -> None:
    app = telemetry.wrap(responder())
    await request(app, headers={"host": "bad host/"}, client=None)
    await request(app, headers={"host": "bad host/"}, client=None)  # from the cache
    for span in telemetry.spans():
        attributes = dict(span.attributes or {})
        assert "server.address" not in attributes
        assert "client.address" not in attributes
        assert "network.peer.address" not in attributes


async def test_host_cache_is_bounded(telemetry: Telemetry) -> None:
    app = telemetry.wrap(responder())
    for i in range(300):
        await request(app, headers={"host": f"h{i}.example"})
    assert dict(telemetry.spans()[-1].attributes or {})["server.address"] == "h299.example"


async def test_unknown_method_is_other(telemetry: Telemetry) -> None:
    await request(telemetry.wrap(responder()), "PURGE", "/cache")
    span = telemetry.span()
    assert span.name == "HTTP"
    attributes = dict(span.attributes or {})
    assert attributes["http.request.method"] == "_OTHER"
    assert attributes["http.request.method_original"] == "PURGE"
    assert dict(telemetry.duration().attributes or {})["http.request.method"] == "_OTHER"


@pytest.mark.parametrize(("status", "error"), [(404, None), (503, "503"), (204, None)])
async def test_status_sets_error_only_for_5xx(
    telemetry: Telemetry, status: int, error: str | None
) -> None:
    await request(telemetry.wrap(responder(status, b"" if status == 204 else b"x")))
    span = telemetry.span()
    expected = StatusCode.ERROR if error else StatusCode.UNSET
    assert span.status.status_code is expected
    assert dict(span.attributes or {}).get("error.type") == error
    assert dict(telemetry.duration().attributes or {}).get("error.type") == error


class Boom(Exception):
    """The app's failure."""


async def test_exception_before_start(telemetry: Telemetry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise Boom("before")

    with pytest.raises(Boom):
        await request(telemetry.wrap(app))
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "Boom: before"
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "Boom"
    assert attributes["http.response.status_code"] == 500  # what the server answers
    [event] = span.events
    assert event.name == "exception"
    assert dict(event.attributes or {})["exception.type"].endswith("Boom")
    assert dict(telemetry.duration().attributes or {})["error.type"] == "Boom"


async def test_exception_after_start(telemetry: Telemetry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise Boom("after")

    with pytest.raises(Boom):
        await request(telemetry.wrap(app))
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert attributes["http.response.status_code"] == 200
    assert attributes["error.type"] == "Boom"
    assert span.status.status_code is StatusCode.ERROR


async def test_incomplete_response_is_an_error(telemetry: Telemetry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    # The app breaks the contract on purpose (H3): no checker around it.
    middleware = TracingMiddleware(
        app, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    await request(middleware)
    span = telemetry.span()
    assert dict(span.attributes or {})["error.type"] == "incomplete_response"
    assert span.status.status_code is StatusCode.ERROR


async def test_span_and_metric_end_at_completion_not_after_background_work(
    telemetry: Telemetry,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"chunk", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        await anyio.sleep(0.3)  # background work after the response

    await request(telemetry.wrap(app))
    span = telemetry.span()
    assert span.end_time is not None and span.start_time is not None
    duration = (span.end_time - span.start_time) / 1e9
    assert duration < 0.2
    assert math.isclose(telemetry.duration().sum, duration)


@pytest.mark.parametrize("kind", ["trailers", "pathsend"])
async def test_completion_by_trailers_and_pathsend(
    telemetry: Telemetry, kind: str, tmp_path: Any
) -> None:
    file = tmp_path / "f.txt"
    file.write_bytes(b"12345")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        trailers = kind == "trailers"
        await send(
            {"type": "http.response.start", "status": 200, "headers": [], "trailers": trailers}
        )
        if trailers:
            await send({"type": "http.response.body", "body": b"abc"})
            await send({"type": "http.response.trailers", "headers": [], "more_trailers": False})
        else:
            await send({"type": "http.response.pathsend", "path": str(file)})
        await anyio.sleep(0.3)

    response = await request(
        telemetry.wrap(app, response_size=True), extensions=ALL_HTTP_EXTENSIONS
    )
    assert response.complete
    span = telemetry.span()
    assert span.end_time is not None and span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 < 0.2
    [size] = telemetry.points("http.server.response.body.size")
    assert size.sum == (3 if kind == "trailers" else 5)


async def test_client_disconnect_marks_the_span(telemetry: Telemetry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            await send({"type": "http.response.body", "body": b"x", "more_body": True})

    response = await request(telemetry.wrap(app), disconnect_after=2, raise_app_exceptions=False)
    assert response.disconnected
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert attributes[DISCONNECTED] is True
    assert "error.type" not in attributes
    assert span.status.status_code is StatusCode.UNSET
    assert not span.events


async def test_disconnect_while_reading_the_body(telemetry: Telemetry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    wrapped = telemetry.wrap(app, request_size=True, message_events=True)
    await request(wrapped, body=[b"ab", DISCONNECT])
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert attributes[DISCONNECTED] is True
    [size] = telemetry.points("http.server.request.body.size")
    assert size.sum == 2
    # A message event per request-body message; the disconnect is the attribute.
    assert [event.name for event in span.events] == ["http.request"]


async def test_cancellation_ends_the_span_once(telemetry: Telemetry) -> None:
    started = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await anyio.sleep_forever()

    with anyio.move_on_after(0.05):
        await request(telemetry.wrap(app))
    span = telemetry.span()  # exactly one
    attributes = dict(span.attributes or {})
    assert attributes[CANCELLED] is True
    assert attributes["error.type"] in {"CancelledError", "Cancelled"}
    assert span.status.status_code is StatusCode.UNSET
    assert started.is_set()


async def test_incoming_traceparent_is_the_parent(telemetry: Telemetry) -> None:
    seen: dict[str, str] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        inject(seen)  # what an outgoing call from the app would carry
        await responder()(scope, receive, send)

    await request(telemetry.wrap(app), headers={"traceparent": TRACEPARENT})
    span = telemetry.span()
    trace_id, span_id = hex_ids(span)
    assert trace_id == TRACE_ID
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT_ID
    assert seen["traceparent"] == f"00-{TRACE_ID}-{span_id}-01"


async def test_internal_span_when_one_is_current(telemetry: Telemetry) -> None:
    tracer = telemetry.tracer_provider.get_tracer("outer")
    app = telemetry.wrap(responder())
    with tracer.start_as_current_span("outer", kind=SpanKind.SERVER) as outer:
        await request(app, headers={"traceparent": TRACEPARENT})
    inner, outer_span = telemetry.spans()
    assert inner.kind is SpanKind.INTERNAL
    assert inner.parent is not None
    assert inner.parent.span_id == outer.get_span_context().span_id
    assert outer_span.name == "outer"


async def test_app_runs_inside_the_span(telemetry: Telemetry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        with trace.get_tracer(
            "app", tracer_provider=telemetry.tracer_provider
        ).start_as_current_span("child"):
            await responder()(scope, receive, send)

    await request(telemetry.wrap(app))
    child, server = telemetry.spans()
    assert child.parent is not None and server.context is not None
    assert child.parent.span_id == server.context.span_id
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached afterwards


async def test_structlog_lines_carry_the_ids(telemetry: Telemetry) -> None:
    capture = structlog.testing.LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            structlog.get_logger().info("inside")
            await responder()(scope, receive, send)

        await request(telemetry.wrap(app))
        structlog.get_logger().info("outside")
    finally:
        structlog.reset_defaults()
    inside, outside = capture.entries
    trace_id, span_id = hex_ids(telemetry.span())
    assert inside["trace_id"] == trace_id
    assert inside["span_id"] == span_id
    assert "trace_id" not in outside and "span_id" not in outside


async def test_bind_contextvars_off(telemetry: Telemetry) -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(structlog.contextvars.get_contextvars())
        await responder()(scope, receive, send)

    await request(telemetry.wrap(app, bind_contextvars=False))
    assert "trace_id" not in seen[0]


@pytest.mark.parametrize(("server_timing", "traceresponse"), [(True, False), (False, True)])
async def test_trace_headers_name_the_span(
    telemetry: Telemetry, server_timing: bool, traceresponse: bool
) -> None:
    headers = [(b"server-timing", b"db;dur=53")]
    app = telemetry.wrap(
        responder(headers=headers), server_timing=server_timing, traceresponse=traceresponse
    )
    response = await request(app)
    span = telemetry.span()
    trace_id, span_id = hex_ids(span)
    assert span.context is not None
    value = f"00-{trace_id}-{span_id}-{span.context.trace_flags:02x}"  # as the propagator writes
    if server_timing:
        assert response.header_values("server-timing") == [
            "db;dur=53",
            f'traceparent;desc="{value}"',
        ]
        assert response.header("traceresponse") is None
    else:
        assert response.header("traceresponse") == value
        assert response.header_values("server-timing") == ["db;dur=53"]
    assert headers == [(b"server-timing", b"db;dur=53")]  # the app's list is untouched


async def test_no_trace_headers_without_a_valid_span() -> None:
    app = TracingMiddleware(
        enforce(responder()),
        tracer_provider=NoOpTracerProvider(),
        meter_provider=NoOpMeterProvider(),
        server_timing=True,
    )
    response = await request(enforce(app))
    assert response.header("server-timing") is None


async def test_unsampled_request_records_metrics_only() -> None:
    telemetry = Telemetry(sampler=ALWAYS_OFF)
    seen: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(structlog.contextvars.get_contextvars())
        await responder()(scope, receive, send)

    await request(telemetry.wrap(app, message_events=True), "GET", "/x?token=1")
    assert telemetry.spans() == []
    assert telemetry.duration().count == 1
    assert len(seen[0]["trace_id"]) == 32  # the ids still correlate logs downstream


async def test_excluded_paths_cost_nothing(telemetry: Telemetry) -> None:
    app = telemetry.wrap(responder(), exclude_paths=["/health", "/static/*"])
    await request(app, "GET", "/health")
    await request(app, "GET", "/static/app.js")
    assert telemetry.spans() == []
    assert telemetry.points("http.server.request.duration") == []
    await request(app, "GET", "/healthz")
    assert len(telemetry.spans()) == 1


async def test_header_capture_with_redaction(telemetry: Telemetry) -> None:
    response_headers = [(b"set-cookie", b"a=1"), (b"x-cache", b"hit"), (b"x-cache", b"miss")]
    app = telemetry.wrap(
        responder(headers=response_headers),
        capture_request_headers=["Accept", "Authorization", "Cookie"],
        capture_response_headers=["x-cache", "set-cookie"],
    )
    await request(
        app,
        headers=[("accept", "a"), ("accept", "b"), ("authorization", "Bearer s"), ("cookie", "c")],
    )
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["http.request.header.accept"] == ("a", "b")
    assert attributes["http.request.header.authorization"] == ("[REDACTED]",)
    assert attributes["http.request.header.cookie"] == ("[REDACTED]",)
    assert attributes["http.response.header.x-cache"] == ("hit", "miss")
    assert attributes["http.response.header.set-cookie"] == ("[REDACTED]",)


async def test_redact_more_query_params(telemetry: Telemetry) -> None:
    app = telemetry.wrap(responder(), redact_query_params=["session*"])
    await request(app, "GET", "/?session_id=1&page=2")
    assert dict(telemetry.span().attributes or {})["url.query"] == "session_id=[REDACTED]&page=2"


async def test_message_events_and_size_metrics(telemetry: Telemetry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    wrapped = telemetry.wrap(app, message_events=True, request_size=True, response_size=True)
    await request(wrapped, "POST", body=[b"abc", b"de"])
    span = telemetry.span()
    names = [(event.name, dict(event.attributes or {})) for event in span.events]
    assert names == [
        ("http.request", {"message.size": 3}),
        ("http.request", {"message.size": 2}),
        ("http.response.start", {}),
        ("http.response.body", {"message.size": 5}),
        ("http.response.body", {}),
    ]
    [received] = telemetry.points("http.server.request.body.size")
    [sent] = telemetry.points("http.server.response.body.size")
    assert (received.sum, sent.sum) == (5, 5)
    assert dict(sent.attributes or {})["http.response.status_code"] == 201


async def test_unknown_messages_pass_through(telemetry: Telemetry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.early_hint", "links": [b"</a.css>; rel=preload"]})
        await responder()(scope, receive, send)

    response = await request(telemetry.wrap(app), extensions=ALL_HTTP_EXTENSIONS)
    assert response.message_types[0] == "http.response.early_hint"


async def test_lifespan_untouched(telemetry: Telemetry) -> None:
    state: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["ready"] = True
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    await run_lifespan(telemetry.wrap(app), state=state)
    assert state == {"ready": True}
    assert telemetry.spans() == []


async def test_other_scope_types_pass_through(telemetry: Telemetry) -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])
        await send({"type": "websocket.close", "code": 1000})

    await websocket(telemetry.wrap(app, websockets=False))
    await websocket(telemetry.wrap(app, exclude_paths=["/ws"]))
    assert seen == ["websocket", "websocket"]
    assert telemetry.spans() == []


async def test_websocket_connection_span(telemetry: Telemetry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"]})
        await receive()

    session = await websocket(
        telemetry.wrap(app, message_events=True),
        frames=["hi"],
        headers={"traceparent": TRACEPARENT},
        scheme="wss",
    )
    assert session.sent == ["hi"]
    span = telemetry.span()
    assert span.name == "WEBSOCKET"
    assert span.kind is SpanKind.SERVER
    assert hex_ids(span)[0] == TRACE_ID
    attributes = dict(span.attributes or {})
    assert attributes["http.response.status_code"] == 101
    assert attributes["url.scheme"] == "wss"
    assert attributes["websocket.close_code"] == 1000
    assert [event.name for event in span.events] == [
        "websocket.connect",
        "websocket.accept",
        "websocket.receive",
        "websocket.send",
        "websocket.disconnect",
    ]
    assert telemetry.points("http.server.request.duration") == []


async def test_websocket_denied_failed_and_errors(telemetry: Telemetry) -> None:
    async def close_first(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1008})

    async def deny(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 500, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no"})

    async def server_error(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1011})

    async def raises(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise Boom("ws")

    await websocket(telemetry.wrap(close_first))
    await websocket(telemetry.wrap(deny), extensions={"websocket.http.response": {}})
    await websocket(telemetry.wrap(server_error))
    with pytest.raises(Boom):
        await websocket(telemetry.wrap(raises))
    closed, denied, failed, raised = (dict(s.attributes or {}) for s in telemetry.spans())
    assert closed["http.response.status_code"] == 403 and "error.type" not in closed
    assert denied["http.response.status_code"] == 500 and denied["error.type"] == "500"
    assert failed["error.type"] == "1011"
    assert raised["error.type"] == "Boom"
    assert [s.status.status_code for s in telemetry.spans()] == [
        StatusCode.UNSET,
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.ERROR,
    ]


async def test_websocket_client_gone(telemetry: Telemetry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "x"})

    middleware = telemetry.wrap(app)

    async def server(scope: Scope, receive: Receive, send: Send) -> None:
        async def failing(message: Message) -> None:
            if message["type"] == "websocket.send":
                raise ClientDisconnected("gone")
            await send(message)

        await middleware(scope, receive, failing)

    with pytest.raises(ClientDisconnected):
        await websocket(server)
    attributes = dict(telemetry.span().attributes or {})
    assert attributes[DISCONNECTED] is True
    assert "error.type" not in attributes


async def test_concurrent_requests_do_not_share_state(telemetry: Telemetry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        n = int(scope["path"].rsplit("/", 1)[1])
        await anyio.sleep((n % 7) / 1000)
        await send({"type": "http.response.start", "status": 200 + n, "headers": []})
        await anyio.sleep((n % 5) / 1000)
        await send({"type": "http.response.body", "body": b"x" * n})

    wrapped = telemetry.wrap(app, response_size=True)
    async with anyio.create_task_group() as tg:
        for n in range(1, 61):
            tg.start_soon(request, wrapped, "GET", f"/n/{n}")
    spans = telemetry.spans()
    assert len(spans) == 60
    for span in spans:
        attributes = dict(span.attributes or {})
        n = int(attributes["url.path"].rsplit("/", 1)[1])
        assert attributes["http.response.status_code"] == 200 + n
    sizes = {
        dict(p.attributes)["http.response.status_code"]: p.sum
        for p in telemetry.points("http.server.response.body.size")
    }
    assert sizes == {200 + n: n for n in range(1, 61)}
    assert {p.value for p in telemetry.points("http.server.active_requests")} == {0}


async def test_active_requests_counts_requests_in_flight(telemetry: Telemetry) -> None:
    counts: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        [point] = telemetry.points("http.server.active_requests")
        counts.append(point.value)
        await responder()(scope, receive, send)

    await request(telemetry.wrap(app))
    assert counts == [1]


def _option_errors() -> Iterator[tuple[dict[str, Any], type[Exception], str]]:
    yield {"tracer_provider": object()}, TypeError, "tracer_provider:"
    yield {"meter_provider": "x"}, TypeError, "meter_provider:"
    yield {"server_timing": "yes"}, TypeError, "server_timing:"
    yield {"websockets": 1}, TypeError, "websockets:"
    yield {"exclude_paths": ["health"]}, ValueError, "exclude_paths:"
    yield {"capture_request_headers": ["bad header"]}, ValueError, "capture_request_headers:"
    yield {"redact_query_params": [3]}, TypeError, "redact_query_params"


@pytest.mark.parametrize(("options", "error", "prefix"), list(_option_errors()))
def test_bad_options_name_the_option(
    options: dict[str, Any], error: type[Exception], prefix: str
) -> None:
    with pytest.raises(error) as info:
        TracingMiddleware(responder(), **options)
    assert str(info.value).startswith(prefix)


async def test_global_providers_by_default() -> None:
    # Nothing set globally in tests: the API's no-op/proxy providers answer, and the
    # request goes through untouched.
    response = await request(enforce(TracingMiddleware(enforce(responder()))))
    assert response.status == 200
