"""DevInspectorMiddleware's live stream (server-sent events): new requests, keep-alives,
resuming, and ending cleanly on disconnect, on a deadline, or when a send fails."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from asgikit.contract import enforce
from asgikit.middleware.inspector import DevInspectorMiddleware
from asgikit.middleware.inspector.records import Record, Renderer
from asgikit.middleware.inspector.serve import Endpoints
from asgikit.middleware.inspector.store import RingBuffer, SpanStore
from asgikit.testing import Response, http_scope, request
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

from .test_inspector import (  # the fixture: autouse here too
    LOCAL,
    _log_hooks_released,  # noqa: F401
    get,
    hello,
)

pytestmark = pytest.mark.anyio

EVENTS = "/_asgikit/api/events"


def inspector(**options: Any) -> tuple[Any, DevInspectorMiddleware]:
    middleware = DevInspectorMiddleware(enforce(hello), **options)
    return enforce(middleware), middleware


def events(response: Response) -> list[dict[str, Any]]:
    """The ``request`` events of an event stream, with their ids checked."""
    found = []
    for block in response.body.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines.get("event") == "request":
            data = json.loads(lines["data"])
            assert int(lines["id"]) == data["id"]
            found.append(data)
    return found


async def wait_until(condition: Callable[[], object]) -> None:
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110 - polls what was sent so far, bounded
            await anyio.sleep(0.001)


def recorded(app: ASGIApp) -> tuple[ASGIApp, list[Message]]:
    """*app*, and the messages it has sent so far, as they are sent."""
    sent: list[Message] = []

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_and_record(message: Message) -> None:
            await send(message)
            sent.append(message)

        await app(scope, receive, send_and_record)

    return recording, sent


def waiting(sent: list[Message]) -> bool:
    """The stream has sent its start and its ``retry:`` line, and caught up: from then
    on, it only waits for new requests."""
    return len(sent) >= 2


def endpoints(**timings: float) -> tuple[ASGIApp, RingBuffer[Record]]:
    """The inspector's endpoints on their own, with shorter stream *timings* (their
    public ``keepalive`` and ``stream_seconds``), and the ring they show."""
    ring: RingBuffer[Record] = RingBuffer(10)
    served = Endpoints(
        ring=ring,
        store=SpanStore(max_loose=10, max_spans=10),
        renderer=Renderer(limit=1024, redacted_headers=frozenset(), query_params=[]),
        tracing=lambda: False,
        max_rows=10,
    )
    for name, seconds in timings.items():
        setattr(served, name, seconds)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await served.serve(scope, receive, send, scope["path"].removeprefix("/_asgikit/"))

    return enforce(app), ring


def a_record(path: str) -> Record:
    facts = {"method": "GET", "path": path, "query_string": b"", "headers": []}
    return Record(
        scope=facts,
        started_ns=0,
        status=200,
        duration=0.001,
        ttfb=0.001,
        received=0,
        sent=5,
        response_headers=[],
        trace_id=0,
        span_id=0,
        error=None,
        disconnected=False,
    )


async def test_the_stream_sends_new_requests_live_and_ends_on_disconnect() -> None:
    app, _ = inspector()
    watched, sent = recorded(app)
    streamed: list[Response] = []

    async def watch() -> None:
        streamed.append(await get(watched, EVENTS, disconnect_after=3))

    with anyio.fail_after(5):  # a request missed by the stream would leave it waiting
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            await wait_until(lambda: waiting(sent))  # the stream is waiting
            await get(app, "/new")
    [response] = streamed
    start = response.messages[0]
    assert start["status"] == 200
    assert response.header("content-type") == "text/event-stream"
    assert response.header("cache-control") == "no-store"
    assert response.messages[1]["body"] == b"retry: 1000\n\n"
    assert [e["path"] for e in events(response)] == ["/new"]
    assert response.disconnected and response.dropped == []  # nothing sent after it
    assert sent == response.messages  # the stream is gone: it sent nothing more
    await get(app, "/later")
    assert sent == response.messages


async def test_the_stream_first_catches_up_after_the_given_id() -> None:
    app, _ = inspector()
    for path in ("/a", "/b", "/c"):
        await get(app, path)
    response = await get(app, EVENTS + "?after=1", disconnect_after=3)
    assert [e["path"] for e in events(response)] == ["/b", "/c"]
    # A reconnecting EventSource sends Last-Event-ID: the newer of the two wins.
    resumed = await get(
        app, EVENTS + "?x=1&after=1", headers={"last-event-id": "2"}, disconnect_after=3
    )
    assert [e["path"] for e in events(resumed)] == ["/c"]


async def test_a_quiet_stream_sends_keepalive_comments() -> None:
    app, _ = endpoints(keepalive=0.01)
    with anyio.fail_after(5):
        response = await get(app, EVENTS, disconnect_after=4)
    assert [m["body"] for m in response.messages[2:]] == [b": keep-alive\n\n"] * 2


async def test_the_stream_ends_cleanly_after_its_lifetime() -> None:
    app, ring = endpoints(stream_seconds=0.05)
    ring.append(a_record("/a"))
    with anyio.fail_after(5):
        response = await get(app, EVENTS)  # the contract checker sees a complete response
    assert [e["path"] for e in events(response)] == ["/a"]
    assert response.messages[-1] == {"type": "http.response.body", "body": b""}
    assert not response.disconnected


async def test_a_failing_send_ends_the_stream_quietly() -> None:
    middleware = DevInspectorMiddleware(enforce(hello))
    await request(middleware, "GET", "/a", server=LOCAL)
    sent: list[Message] = []

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(message: Message) -> None:
        sent.append(message)
        if len(sent) == 3:
            raise ConnectionResetError("the client went away")

    with anyio.fail_after(5):
        await middleware(http_scope("GET", EVENTS, server=LOCAL), receive, send)
    assert len(sent) == 3  # start, retry, the event that failed; no final body


async def test_a_server_error_from_send_propagates_as_it_is() -> None:
    # Not an OSError (the client leaving): the server's own exception, which must come
    # out unchanged, not wrapped in an exception group (contract E1).
    middleware = DevInspectorMiddleware(enforce(hello))
    sent: list[Message] = []

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(message: Message) -> None:
        sent.append(message)
        if len(sent) == 2:
            raise RuntimeError("the server refused the message")

    with anyio.fail_after(5), pytest.raises(RuntimeError, match="refused the message"):
        await middleware(http_scope("GET", EVENTS, server=LOCAL), receive, send)


async def test_head_is_not_an_event_stream() -> None:
    app, _ = inspector()
    assert (await get(app, EVENTS, method="HEAD")).status == 404


async def test_many_streams_all_get_the_same_request() -> None:
    app, _ = inspector()
    streamed: list[Response] = []
    sent_by_stream: list[list[Message]] = []

    async def watch(watched: ASGIApp) -> None:
        streamed.append(await get(watched, EVENTS, disconnect_after=3))

    with anyio.fail_after(5):  # a stream the request missed would stay waiting
        async with anyio.create_task_group() as group:
            for _ in range(3):
                watched, sent = recorded(app)
                sent_by_stream.append(sent)
                group.start_soon(watch, watched)
            await wait_until(lambda: all(waiting(sent) for sent in sent_by_stream))
            await get(app, "/shared")
    assert [[e["path"] for e in events(r)] for r in streamed] == [["/shared"]] * 3


def live_events() -> int:
    """How many ``anyio.Event`` objects are alive (what a waiting stream waits on)."""
    gc.collect()
    return sum(isinstance(thing, anyio.Event) for thing in gc.get_objects())


async def test_streams_that_end_leave_nothing_behind() -> None:
    app, _ = inspector()
    await get(app, EVENTS, disconnect_after=2)  # warmed up
    before = live_events()
    for _ in range(100):  # each gone while it waits for a request
        response = await get(app, EVENTS, disconnect_after=2)
        assert response.disconnected and response.dropped == []
    # What a waiting stream holds (the event it waits on) goes with it, even while no
    # request comes to wake the streams.
    assert live_events() - before < 10, (before, live_events())
    # And the streams that left are no obstacle to a new one.
    watched, sent = recorded(app)
    streamed: list[Response] = []

    async def watch() -> None:
        streamed.append(await get(watched, EVENTS, disconnect_after=3))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            await wait_until(lambda: waiting(sent))
            await get(app, "/new")
    assert [e["path"] for e in events(streamed[0])] == ["/new"]
