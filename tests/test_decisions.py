"""An answer asgikit makes itself says why, under one name, on the log line and the span
(``asgikit.decision``), whichever of the access log and tracing is outside."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

import asgikit.logging
from asgikit.answers import DECISION_FIELD
from asgikit.contract import enforce
from asgikit.middleware import (
    AccessLogMiddleware,
    RateLimitMiddleware,
    TimeoutMiddleware,
    TracingMiddleware,
)
from asgikit.testing import request
from asgikit.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.anyio


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    structlog.contextvars.clear_contextvars()
    with capture_logs(processors=[merge_contextvars]) as captured:
        yield captured
    structlog.contextvars.clear_contextvars()


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["path"] == "/slow":
        await anyio.sleep(5)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def stacked(outer_first: list[str], exporter: InMemorySpanExporter) -> ASGIApp:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app: ASGIApp = enforce(ok)
    inner: ASGIApp = TimeoutMiddleware(app, total=0.2)
    inner = enforce(RateLimitMiddleware(enforce(inner), rate="1/hour"))
    layers = {
        "access_log": lambda a: AccessLogMiddleware(a),
        "tracing": lambda a: TracingMiddleware(a, tracer_provider=provider),
    }
    for name in reversed(outer_first):
        inner = enforce(layers[name](inner))
    return inner


@pytest.mark.parametrize(
    "order", [["access_log", "tracing"], ["tracing", "access_log"], ["access_log"], ["tracing"]]
)
async def test_a_429_and_a_504_say_which_layer_answered(
    order: list[str], lines: list[dict[str, Any]]
) -> None:
    exporter = InMemorySpanExporter()
    app = stacked(order, exporter)
    assert (await request(app, "GET", "/slow", client=("10.0.0.1", 1))).status == 504
    assert (await request(app, "GET", "/", client=("10.0.0.2", 1))).status == 200
    assert (await request(app, "GET", "/", client=("10.0.0.2", 1))).status == 429
    expected = [("timed_out", "total"), (None, None), ("rate_limited", "default")]
    if "access_log" in order:
        logged = [line for line in lines if line["event"] == asgikit.logging.HTTP_EVENT]
        assert [
            (line.get(DECISION_FIELD), line.get("timeout.limit") or line.get("rate_limit.rule"))
            for line in logged
        ] == expected
    if "tracing" in order:
        spans = exporter.get_finished_spans()
        assert [
            (
                span.attributes.get(DECISION_FIELD),
                span.attributes.get("timeout.limit") or span.attributes.get("rate_limit.rule"),
            )
            for span in spans
            if span.attributes is not None
        ] == expected


async def test_a_refused_preflight_says_what_was_refused(lines: list[dict[str, Any]]) -> None:
    from asgikit.middleware import CORSMiddleware

    cors = CORSMiddleware(enforce(ok), allow_origins=["https://app.example.com"])
    app = enforce(AccessLogMiddleware(enforce(cors)))
    headers = {"origin": "https://evil.example", "access-control-request-method": "GET"}
    assert (await request(app, "OPTIONS", "/", headers=headers)).status == 403
    (line,) = [line for line in lines if line["event"] == asgikit.logging.HTTP_EVENT]
    assert line[DECISION_FIELD] == "cors_denied"
    assert "https://evil.example" in line["cors.reason"]
