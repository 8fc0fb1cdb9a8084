"""Streams measured as streams: SSE, NDJSON and websockets get time to first byte and
stream duration, and stay out of ``http.server.request.duration`` unless asked."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from asgikit.middleware.tracing import (
    STREAM_DURATION,
    STREAM_TIME_TO_FIRST_BYTE,
    STREAM_TYPE,
)
from asgikit.testing import request, websocket
from asgikit.types import ASGIApp, Receive, Scope, Send
from tests.middleware.test_tracing import Telemetry, responder

pytestmark = pytest.mark.anyio


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


WAIT = 0.05  # before the response starts
GAP = 0.1  # between the stream's two events


def streaming(content_type: bytes) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(WAIT)
        headers = [(b"content-type", content_type)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await anyio.sleep(GAP)
        await send({"type": "http.response.body", "body": b"data: 2\n\n"})

    return app


def one(measured: Telemetry, name: str) -> Any:
    [point] = measured.points(name)
    return point


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        (b"text/event-stream", "sse"),
        (b"Text/Event-Stream; charset=utf-8", "sse"),
        (b"application/x-ndjson", "ndjson"),
        (b"application/jsonl", "ndjson"),
    ],
)
async def test_a_stream_records_first_byte_and_duration_apart(
    telemetry: Telemetry, content_type: bytes, kind: str
) -> None:
    app = telemetry.wrap(streaming(content_type))
    assert (await request(app, "GET", "/events")).status == 200
    assert telemetry.points("http.server.request.duration") == []  # not polluted
    first_byte = one(telemetry, STREAM_TIME_TO_FIRST_BYTE)
    duration = one(telemetry, STREAM_DURATION)
    assert first_byte.attributes == duration.attributes
    assert first_byte.attributes[STREAM_TYPE] == kind
    assert first_byte.attributes["http.response.status_code"] == 200
    # The wait before the start, then the whole stream: the gap is in the duration only.
    assert WAIT <= first_byte.sum < duration.sum
    assert duration.sum >= first_byte.sum + GAP
    assert (telemetry.span().attributes or {})[STREAM_TYPE] == kind


async def test_streams_in_duration_records_both(telemetry: Telemetry) -> None:
    app = telemetry.wrap(streaming(b"text/event-stream"), streams_in_duration=True)
    await request(app, "GET", "/events")
    assert telemetry.duration().sum >= WAIT + GAP
    assert one(telemetry, STREAM_DURATION).count == 1


async def test_streams_off_records_the_request_duration_only(telemetry: Telemetry) -> None:
    app = telemetry.wrap(streaming(b"text/event-stream"), streams=False)
    await request(app, "GET", "/events")
    assert telemetry.duration().count == 1
    assert telemetry.points(STREAM_DURATION) == []
    assert STREAM_TYPE not in (telemetry.span().attributes or {})


@pytest.mark.parametrize("headers", [[], [(b"content-type", b"application/json")]])
async def test_other_responses_are_requests(
    telemetry: Telemetry, headers: list[tuple[bytes, bytes]]
) -> None:
    await request(telemetry.wrap(responder(headers=headers)), "GET", "/")
    assert telemetry.duration().count == 1
    assert telemetry.points(STREAM_TIME_TO_FIRST_BYTE) == []


async def test_a_stream_that_never_started_is_a_request(telemetry: Telemetry) -> None:
    async def fails(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("before the start")

    with pytest.raises(RuntimeError):
        await request(telemetry.wrap(fails), "GET", "/")
    assert telemetry.duration().count == 1
    assert telemetry.points(STREAM_DURATION) == []


async def ws_app(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()  # websocket.connect
    await anyio.sleep(WAIT)
    await send({"type": "websocket.accept"})
    await anyio.sleep(GAP)
    await send({"type": "websocket.close", "code": 1000})


@pytest.mark.parametrize("message_events", [False, True])
async def test_a_websocket_is_a_stream(telemetry: Telemetry, message_events: bool) -> None:
    app = telemetry.wrap(ws_app, message_events=message_events)
    await websocket(app, "/ws")
    first_byte = one(telemetry, STREAM_TIME_TO_FIRST_BYTE)
    duration = one(telemetry, STREAM_DURATION)
    assert first_byte.attributes[STREAM_TYPE] == "websocket"
    assert first_byte.sum >= WAIT
    assert duration.sum >= first_byte.sum + GAP
    events = [event.name for event in telemetry.span().events]
    assert ("websocket.accept" in events) is message_events


async def test_a_refused_websocket_is_no_stream(telemetry: Telemetry) -> None:
    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1008})

    await websocket(telemetry.wrap(refuse), "/ws")
    assert telemetry.points(STREAM_DURATION) == []
    await websocket(telemetry.wrap(ws_app, streams=False), "/ws")
    assert telemetry.points(STREAM_DURATION) == []
