"""The observation core (``asgikit.observe``): what the access log and tracing read about
an exchange, under the ways real servers deliver messages and cancellations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from starlette.responses import StreamingResponse

from asgikit.middleware.access_log import AccessLogMiddleware
from asgikit.middleware.tracing import TracingMiddleware
from asgikit.testing import http_scope, request
from asgikit.types import Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio


async def chunks() -> AsyncIterator[bytes]:
    for number in range(3):
        yield f"chunk {number}\n".encode()


async def test_a_stream_cancelled_inside_its_final_send_is_logged_complete() -> None:
    """hypercorn's trio worker writes the final body, queues ``http.disconnect`` and
    reaches a checkpoint before its ``send`` returns; Starlette's disconnect watcher
    (ASGI spec 2.3) then cancels the response inside that send. Every byte went out:
    the line and the span must say 200, not ``incomplete_response`` as an error."""
    sent: list[Message] = []
    done = anyio.Event()
    received_request = False

    async def receive() -> Message:
        nonlocal received_request
        if not received_request:
            received_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()  # the stream is over: the server tells the app
            await anyio.sleep(0.05)  # the server's next checkpoint

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    streamed = StreamingResponse(chunks(), media_type="text/plain")
    app = AccessLogMiddleware(TracingMiddleware(streamed, tracer_provider=provider))
    scope: dict[str, Any] = http_scope(path="/stream")
    scope["asgi"] = {"version": "3.0", "spec_version": "2.3"}  # hypercorn's
    with structlog.testing.capture_logs() as lines:
        await app(scope, receive, send)
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"chunk 0\nchunk 1\nchunk 2\n"
    [line] = [line for line in lines if line["event"] == "http.request"]
    assert line["log_level"] == "info"
    assert line["http.response.status_code"] == 200
    assert "error.type" not in line
    [span] = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 200
    assert "error.type" not in span.attributes
    assert span.status.status_code is not StatusCode.ERROR


@pytest.mark.parametrize("raises", ["before", "after"])
async def test_the_span_and_the_line_report_the_status_the_client_got(raises: str) -> None:
    """An app that raised before answering: the server answers 500, and both say so (the
    span had no status code). After answering: the status it sent, on both."""

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        if raises == "after":
            await send({"type": "http.response.start", "status": 201, "headers": []})
        raise RuntimeError("the app failed")

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = AccessLogMiddleware(TracingMiddleware(failing, tracer_provider=provider))
    with structlog.testing.capture_logs() as lines:
        await request(app, raise_app_exceptions=False)
    [line] = [line for line in lines if line["event"] == "http.request"]
    [span] = exporter.get_finished_spans()
    assert span.attributes is not None
    expected = 500 if raises == "before" else 201
    assert line["http.response.status_code"] == expected
    assert span.attributes["http.response.status_code"] == expected
    assert span.attributes["error.type"] == line["error.type"] == "RuntimeError"
