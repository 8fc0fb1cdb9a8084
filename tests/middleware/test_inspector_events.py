"""DevInspectorMiddleware's live stream (server-sent events): new requests, keep-alives,
resuming, and ending cleanly on disconnect, on a deadline, or when a send fails."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from asgikit.contract import enforce
from asgikit.middleware.inspector import DevInspectorMiddleware
from asgikit.testing import Response, http_scope, request
from asgikit.types import Message

from .test_inspector import LOCAL, get, hello

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
        while not condition():  # noqa: ASYNC110 - polls the middleware's state, bounded
            await anyio.sleep(0.001)


async def test_the_stream_sends_new_requests_live_and_ends_on_disconnect() -> None:
    app, middleware = inspector()
    streamed: list[Response] = []

    async def watch() -> None:
        streamed.append(await get(app, EVENTS, disconnect_after=3))

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        await wait_until(lambda: middleware._endpoints._waiters)  # the stream is waiting
        await get(app, "/new")
    [response] = streamed
    start = response.messages[0]
    assert start["status"] == 200
    assert response.header("content-type") == "text/event-stream"
    assert response.header("cache-control") == "no-store"
    assert response.messages[1]["body"] == b"retry: 1000\n\n"
    assert [e["path"] for e in events(response)] == ["/new"]
    assert response.disconnected and response.dropped == []  # nothing sent after it
    assert not middleware._endpoints._waiters  # the stream is gone


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
    app, middleware = inspector()
    middleware._endpoints.keepalive = 0.01
    response = await get(app, EVENTS, disconnect_after=4)
    assert [m["body"] for m in response.messages[2:]] == [b": keep-alive\n\n"] * 2


async def test_the_stream_ends_cleanly_after_its_lifetime() -> None:
    app, middleware = inspector()
    middleware._endpoints.stream_seconds = 0.05
    await get(app, "/a")
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
    app, middleware = inspector()
    streamed: list[Response] = []

    async def watch() -> None:
        streamed.append(await get(app, EVENTS, disconnect_after=3))

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(watch)
        await wait_until(lambda: len(middleware._endpoints._waiters) == 3)
        await get(app, "/shared")
    assert [[e["path"] for e in events(r)] for r in streamed] == [["/shared"]] * 3
