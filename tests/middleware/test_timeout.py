"""TimeoutMiddleware: deadlines, answers, aborts and what reaches the server, on both backends.

Time-based tests use deadlines of tens of milliseconds and assert the order of events
and generous upper bounds; where a test needs something to happen "later", it waits for
an event rather than for a clock.
"""

from __future__ import annotations

import contextvars
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest
import structlog
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from asgikit.contract import ContractViolation, enforce
from asgikit.middleware.timeout import (
    DEADLINE_SCOPE_KEY,
    INFO_SCOPE_KEY,
    ResponseTimeout,
    TimeoutMiddleware,
)
from asgikit.middleware.timeout.routes import Limit, Limits, build_routes, make_limits
from asgikit.paths import PathTable
from asgikit.testing import (
    ALL_HTTP_EXTENSIONS,
    DISCONNECT,
    http_scope,
    request,
    run_lifespan,
    websocket,
)
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

SHORT = 0.05  # a deadline that passes quickly
LONG = 10.0  # a wait no passing test ever sits through
BOUND = 3.0  # a generous upper bound for "promptly", on a loaded 2-core machine

START: Message = {"type": "http.response.start", "status": 200, "headers": []}
BODY: Message = {"type": "http.response.body", "body": b"ok"}


def wrapped(app: ASGIApp, **options: Any) -> tuple[ASGIApp, TimeoutMiddleware]:
    middleware = TimeoutMiddleware(enforce(app), **options)
    return enforce(middleware), middleware


def checked(app: ASGIApp, **options: Any) -> ASGIApp:
    return wrapped(app, **options)[0]


def recorded(app: ASGIApp, events: list[str]) -> ASGIApp:
    """Log what reaches the server, in order with the app's own events."""

    async def server_side(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_and_log(message: Message) -> None:
            status = f" {message['status']}" if "status" in message else ""
            events.append(f"sent {message['type']}{status}")
            await send(message)

        await app(scope, receive, send_and_log)

    return server_side


def stalling_client(app: ASGIApp, after: int = 1, stall: float = LONG) -> ASGIApp:
    """The client sends ``after`` body chunks promptly, then nothing for ``stall`` seconds."""

    async def server_side(scope: Scope, receive: Receive, send: Send) -> None:
        calls = 0

        async def slow_receive() -> Message:
            nonlocal calls
            calls += 1
            if calls > after:
                await anyio.sleep(stall)
            return await receive()

        await app(scope, slow_receive, send)

    return server_side


async def respond(send: Send, status: int = 200, body: bytes = b"ok") -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


def fast_app(seen: list[Scope] | None = None) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if seen is not None:
            seen.append(scope)
        await read_body(receive)
        await respond(send)

    return app


def sleeping_app(events: list[str], seconds: float = LONG) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            events.append("app cancelled")
            raise
        await respond(send)

    return app


class Logs:
    """structlog lines, captured; ``on(event, fn)`` runs ``fn`` when such a line is written."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.hooks: dict[str, Callable[[], None]] = {}

    def on(self, event: str, hook: Callable[[], None]) -> None:
        self.hooks[event] = hook

    def events(self) -> list[str]:
        return [line["event"] for line in self.lines]

    def __call__(self, _: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        self.lines.append(dict(event))
        hook = self.hooks.get(event["event"])
        if hook is not None:
            hook()
        raise structlog.DropEvent


@pytest.fixture
def logs() -> Iterator[Logs]:
    captured = Logs()
    structlog.configure(processors=[structlog.processors.add_log_level, captured])
    try:
        yield captured
    finally:
        structlog.reset_defaults()


# --------------------------------------------------------------------------------------
# Nothing to do: responses in time pass unchanged


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"total": 1.0, "first_byte": 0.5},
        {"total": None, "first_byte": 1.0},
        {"total": None, "request_body_idle": 1.0},
        {"total": 2.0, "first_byte": 1.0, "request_body_idle": 1.0},
    ],
)
async def test_a_response_in_time_passes_unchanged(options: dict[str, Any]) -> None:
    app, middleware = wrapped(fast_app(), **options)
    response = await request(app, "POST", body=[b"a", b"", b"b"])
    assert response.messages == [START, BODY]
    assert middleware.abandoned == 0


async def test_a_start_called_but_not_yet_awaited_at_the_deadline_still_gets_the_answer() -> None:
    # The response starts when the start is sent (awaited), not when send() is called.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pending = send(START)
        await anyio.to_thread.run_sync(time.sleep, SHORT * 4)  # past the deadline
        await pending
        await send(BODY)

    # The app straight under the middleware: its send() is the middleware's own.
    response = await request(enforce(TimeoutMiddleware(app, total=SHORT)))
    assert response.status == 504


async def test_the_deadline_is_in_the_scope_on_anyios_clock() -> None:
    seen: list[Scope] = []
    before = anyio.current_time()
    await request(checked(fast_app(seen), total=2.0))
    deadline = seen[0][DEADLINE_SCOPE_KEY]
    assert isinstance(deadline, float)
    assert before + 2.0 <= deadline <= anyio.current_time() + 2.0
    assert seen[0][INFO_SCOPE_KEY] == {}


async def test_the_scope_deadline_is_the_first_byte_one_and_only_shrinks() -> None:
    seen: list[Scope] = []
    now = anyio.current_time()
    await request(checked(fast_app(seen), total=5.0, first_byte=1.0))
    assert now + 1.0 <= seen[0][DEADLINE_SCOPE_KEY] < now + 5.0
    earlier = anyio.current_time() + 0.5
    scope = http_scope(**{DEADLINE_SCOPE_KEY: earlier})
    await request(checked(fast_app(seen), total=5.0), scope=scope)
    assert seen[1][DEADLINE_SCOPE_KEY] == earlier


async def test_the_app_can_bound_its_own_work_with_the_scope_deadline() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        with anyio.move_on_at(scope[DEADLINE_SCOPE_KEY] - 0.03):
            await anyio.sleep(LONG)  # a database call, given what is left of the budget
        await respond(send, body=b"partial")

    response = await request(checked(app, total=0.08))
    assert response.status == 200 and response.body == b"partial"


async def test_idle_limit_alone_publishes_no_deadline() -> None:
    seen: list[Scope] = []
    await request(checked(fast_app(seen), total=None, request_body_idle=1.0))
    assert DEADLINE_SCOPE_KEY not in seen[0] and seen[0][INFO_SCOPE_KEY] == {}


async def test_contextvars_flow_both_ways_because_the_app_runs_in_the_callers_task() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(var.get())
        var.set("set by the app")
        await respond(send)

    inner = checked(app)

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        var.set("set outside")
        await inner(scope, receive, send)
        seen.append(var.get())

    await request(outer)
    assert seen == ["set outside", "set by the app"]


# --------------------------------------------------------------------------------------
# total: the deadline passes before the response started


async def test_an_async_handler_gets_504_at_the_deadline_and_is_cancelled() -> None:
    events: list[str] = []
    app, middleware = wrapped(sleeping_app(events), total=SHORT)
    begin = anyio.current_time()
    response = await request(recorded(app, events))
    elapsed = anyio.current_time() - begin
    assert response.status == 504
    assert response.body == b"Gateway Timeout"
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert response.header("content-length") == "15"
    assert response.header("connection") is None
    assert events == ["sent http.response.start 504", "sent http.response.body", "app cancelled"]
    assert SHORT <= elapsed < BOUND
    assert middleware.abandoned == 0


@pytest.mark.parametrize(("status", "body"), [(503, b"Service Unavailable"), (599, b"Timeout")])
async def test_the_status_is_configurable(status: int, body: bytes) -> None:
    response = await request(checked(sleeping_app([]), total=SHORT, status_code=status))
    assert (response.status, response.body) == (status, body)


async def test_outer_middleware_read_the_outcome_from_their_own_dict() -> None:
    outcome: dict[str, Any] = {}
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await anyio.sleep(LONG)

    scope = http_scope(**{INFO_SCOPE_KEY: outcome})
    response = await request(checked(app, total=SHORT), scope=scope)
    assert response.status == 504
    assert outcome == {"error.type": "timeout", "limit": "total", "status": 504}
    assert seen[0][INFO_SCOPE_KEY] is outcome  # the app sees the same dict


async def test_a_handler_that_swallows_cancellation_cannot_send_a_second_response() -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await anyio.sleep(LONG)
        except anyio.get_cancelled_exc_class():
            events.append("swallowed")  # and carries on as if nothing happened
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.01)
            await respond(send, body=b"too late")
        events.append("app returned")

    response = await request(recorded(checked(app, total=SHORT), events))
    assert response.message_types == ["http.response.start", "http.response.body"]
    assert response.status == 504
    assert events == [
        "sent http.response.start 504",
        "sent http.response.body",
        "swallowed",
        "app returned",
    ]


async def test_a_late_send_re_delivers_the_cancellation() -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await anyio.sleep(LONG)
        except anyio.get_cancelled_exc_class():
            events.append("swallowed")
        try:
            await respond(send, body=b"too late")
        except anyio.get_cancelled_exc_class():
            events.append("send cancelled")
            raise

    response = await request(checked(app, total=SHORT))
    assert response.status == 504 and len(response.messages) == 2
    assert events == ["swallowed", "send cancelled"]


async def test_a_sync_endpoint_in_a_thread_gets_504_and_is_counted_as_abandoned(
    logs: Logs,
) -> None:
    events: list[str] = []
    release = threading.Event()

    def slow_report(request: Request) -> Response:
        release.wait(LONG)
        events.append("thread done")
        return PlainTextResponse("late")

    starlette_app = Starlette(routes=[Route("/report", slow_report)])
    app, middleware = wrapped(starlette_app, total=SHORT, cancel_grace=0.02)
    # The thread carries on only once the middleware has given up on it.
    logs.on("abandoned after deadline", release.set)
    outcome: dict[str, Any] = {}
    scope = http_scope("GET", "/report", **{INFO_SCOPE_KEY: outcome})
    begin = anyio.current_time()
    response = await request(recorded(app, events), scope=scope)
    assert anyio.current_time() - begin < BOUND

    assert response.status == 504 and len(response.messages) == 2
    assert events == [
        "sent http.response.start 504",
        "sent http.response.body",
        "thread done",
    ]
    assert logs.events() == ["abandoned after deadline", "abandoned request returned"]
    warning = logs.lines[0]
    assert warning["limit"] == "total" and warning["path"] == "/report"
    assert warning["method"] == "GET" and warning["level"] == "warning"
    assert logs.lines[1]["duration"] > SHORT
    assert middleware.abandoned == 1 and middleware.abandoned_running == 0
    assert outcome == {"error.type": "timeout", "limit": "total", "status": 504, "abandoned": True}


async def test_an_app_that_returns_while_the_answer_goes_out_is_not_abandoned(
    logs: Logs,
) -> None:
    answering = anyio.Event()
    app_returned = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await answering.wait()
        await respond(send, body=b"dropped")
        app_returned.set()

    inner, middleware = wrapped(app, total=SHORT)

    async def slow_server(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_slowly(message: Message) -> None:
            answering.set()
            await app_returned.wait()
            await send(message)

        await inner(scope, receive, send_slowly)

    response = await request(slow_server)
    assert response.status == 504 and response.body == b"Gateway Timeout"
    assert middleware.abandoned == 0 and logs.lines == []


async def test_an_app_error_after_the_answer_still_propagates() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await anyio.sleep(LONG)
        except anyio.get_cancelled_exc_class():
            raise RuntimeError("the driver turned the cancellation into its own error") from None

    response = await request(checked(app, total=SHORT), raise_app_exceptions=False)
    assert response.status == 504 and response.complete
    assert isinstance(response.exception, RuntimeError)


async def test_a_client_gone_before_the_answer_ends_quietly() -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "http.request"
        assert (await receive())["type"] == "http.disconnect"
        await sleeping_app(events)(scope, receive, send)

    response = await request(checked(app, total=SHORT), body=[b"a", DISCONNECT])
    assert response.messages == []
    assert [m["type"] for m in response.dropped] == ["http.response.start"]
    assert events == ["app cancelled"]


async def test_a_server_error_while_answering_is_raised_unwrapped() -> None:
    inner = checked(sleeping_app([]), total=SHORT)

    async def broken_server(scope: Scope, receive: Receive, send: Send) -> None:
        async def failing_send(message: Message) -> None:
            raise RuntimeError("the server broke")

        await inner(scope, receive, failing_send)

    with pytest.raises(RuntimeError, match="the server broke"):
        await request(broken_server)


# --------------------------------------------------------------------------------------
# total: the deadline passes after the response started


@pytest.mark.parametrize(
    ("chunk", "options", "limit"),
    [
        ([], {"total": SHORT}, "total"),  # started, no body yet: total still applies
        ([b"part"], {"total": LONG, "stream_idle": SHORT}, "stream_idle"),  # a stream
        ([b"part"], {"total": None, "stream_total": SHORT}, "stream_total"),
    ],
    ids=["total", "stream_idle", "stream_total"],
)
async def test_a_stalled_response_is_aborted_never_completed(
    chunk: list[bytes], options: dict[str, Any], limit: str
) -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        for body in chunk:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await sleeping_app(events)(scope, receive, send)

    outcome: dict[str, Any] = {}
    response = await request(
        checked(app, **options),
        scope=http_scope(**{INFO_SCOPE_KEY: outcome}),
        raise_app_exceptions=False,
    )
    assert isinstance(response.exception, ResponseTimeout)
    assert isinstance(response.exception, TimeoutError)
    assert response.exception.limit == limit and response.exception.seconds == SHORT
    assert response.message_types == ["http.response.start"] + ["http.response.body"] * len(chunk)
    assert not response.complete
    assert events == ["app cancelled"]
    assert outcome == {"error.type": "timeout", "limit": limit, "status": None}


async def test_an_aborted_app_that_swallows_cancellation_cannot_complete_the_body() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        try:
            await anyio.sleep(LONG)
        except anyio.get_cancelled_exc_class():
            pass
        with anyio.CancelScope(shield=True):
            await send({"type": "http.response.body", "body": b"rest"})

    with pytest.raises(ResponseTimeout):
        await request(checked(app, stream_idle=SHORT))


async def test_a_start_still_on_its_way_to_the_server_counts_as_started() -> None:
    inner = checked(fast_app(), total=SHORT)

    async def slow_server(scope: Scope, receive: Receive, send: Send) -> None:
        async def slow_send(message: Message) -> None:
            await anyio.sleep(LONG)
            await send(message)

        await inner(scope, receive, slow_send)

    response = await request(slow_server, raise_app_exceptions=False)
    assert isinstance(response.exception, ResponseTimeout)
    assert response.messages == []


@pytest.mark.parametrize("ending", ["body", "pathsend", "zerocopysend", "trailers"])
async def test_every_way_of_ending_a_response_ends_the_deadline(ending: str) -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.early_hint", "links": [b"</a.css>; rel=preload"]})
        await send({**START, "trailers": ending == "trailers"})
        await send({"type": "http.response.debug", "info": {}})
        if ending == "pathsend":
            await send({"type": "http.response.pathsend", "path": "/etc/hostname"})
        elif ending == "zerocopysend":
            with tempfile.TemporaryFile() as file:
                await send({"type": "http.response.zerocopysend", "file": file})
        else:
            await send({"type": "http.response.body", "body": b"ok"})
        if ending == "trailers":
            await send({"type": "http.response.trailers", "headers": [], "more_trailers": True})
            await send({"type": "http.response.trailers", "headers": [(b"x-sum", b"1")]})
        await anyio.sleep(SHORT * 2)  # past the deadline, after the end
        events.append("app returned")

    response = await request(checked(app, total=SHORT), extensions=ALL_HTTP_EXTENSIONS)
    assert response.complete and events == ["app returned"]


async def test_trailers_still_due_keep_the_deadline() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({**START, "trailers": True})
        await send({"type": "http.response.body", "body": b"ok"})
        await anyio.sleep(LONG)

    with pytest.raises(ResponseTimeout):
        await request(checked(app, total=SHORT), extensions=ALL_HTTP_EXTENSIONS)


async def test_background_tasks_after_the_body_are_not_cancelled() -> None:
    events: list[str] = []

    async def send_email() -> None:
        await anyio.sleep(SHORT * 2)
        events.append("background task done")

    async def signup(request: Request) -> Response:
        return PlainTextResponse("welcome", background=BackgroundTask(send_email))

    app = Starlette(routes=[Route("/signup", signup, methods=["POST"])])
    begin = anyio.current_time()
    response = await request(recorded(checked(app, total=SHORT), events), "POST", "/signup")
    assert response.status == 200 and response.body == b"welcome"
    assert events == [
        "sent http.response.start 200",
        "sent http.response.body",
        "background task done",
    ]
    assert anyio.current_time() - begin > SHORT  # it did outlive the deadline


# --------------------------------------------------------------------------------------
# first_byte: bounds the start only


async def test_first_byte_answers_a_slow_start() -> None:
    outcome: dict[str, Any] = {}
    scope = http_scope(**{INFO_SCOPE_KEY: outcome})
    response = await request(checked(sleeping_app([]), total=LONG, first_byte=SHORT), scope=scope)
    assert response.status == 504
    assert outcome["limit"] == "first_byte"


def ticking_app(ticks: int, every: float) -> ASGIApp:
    """A stream of *ticks* chunks, one every *every* seconds, then the end."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        for n in range(ticks):
            await anyio.sleep(every)
            await send({"type": "http.response.body", "body": b"%d\n" % n, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


async def test_the_default_total_does_not_cut_a_stream_that_keeps_sending() -> None:
    # Eight periods of the idle limit, and four times total: a chunk every third of the
    # idle limit keeps it alive (the deadline, re-armed lazily, finds a later chunk).
    app = ticking_app(12, SHORT / 3)
    response = await request(checked(app, total=SHORT, stream_idle=SHORT))
    assert response.status == 200 and response.complete
    assert response.body == b"".join(b"%d\n" % n for n in range(12))


@pytest.mark.parametrize(("taking", "aborted"), [(SHORT / 2, False), (LONG, True)])
async def test_a_client_slow_to_take_chunks_is_not_idle_one_taking_none_is(
    taking: float, aborted: bool
) -> None:
    inner = checked(ticking_app(6, 0), stream_idle=SHORT)

    async def client(scope: Scope, receive: Receive, send: Send) -> None:
        async def slow_send(message: Message) -> None:
            if message.get("more_body"):
                await anyio.sleep(taking)  # the transport's buffer is full
            await send(message)

        await inner(scope, receive, slow_send)

    if not aborted:  # 6 chunks, half the idle limit each: three times the limit in all
        response = await request(client)
        assert response.status == 200 and response.complete
        return
    with anyio.fail_after(LONG / 2), pytest.raises(ResponseTimeout) as caught:
        await request(client)  # a client that stopped reading: ended after stream_idle
    assert caught.value.limit == "stream_idle"


async def test_a_route_can_free_its_streams_and_another_bound_them() -> None:
    routes = {"/events": {"stream_idle": None}, "/downloads": {"stream_total": SHORT}}
    app = checked(ticking_app(4, SHORT), stream_idle=SHORT / 2, routes=routes)
    assert (await request(app, "GET", "/events")).complete  # gaps of SHORT: free here
    with pytest.raises(ResponseTimeout) as idle:
        await request(app, "GET", "/elsewhere")
    assert idle.value.limit == "stream_idle"
    with pytest.raises(ResponseTimeout) as whole:
        await request(app, "GET", "/downloads")
    assert whole.value.limit == "stream_total"  # from the request's start: due at once


async def test_sse_runs_free_under_first_byte() -> None:
    async def ticks() -> AsyncIterator[str]:
        for n in range(5):
            await anyio.sleep(SHORT / 2)
            yield f"data: {n}\n\n"

    async def events_endpoint(request: Request) -> Response:
        await anyio.sleep(SHORT / 5)  # a lookup before the stream starts
        return StreamingResponse(ticks(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/events", events_endpoint)])
    begin = anyio.current_time()
    response = await request(checked(app, total=None, first_byte=SHORT), "GET", "/events")
    assert anyio.current_time() - begin > SHORT  # streamed past the first-byte deadline
    assert response.status == 200 and response.complete
    assert response.text == "".join(f"data: {n}\n\n" for n in range(5))
    # Under a total deadline shorter than the stream, the stream runs on too: once it
    # began, total no longer applies (its chunks keep it within stream_idle).
    response = await request(checked(app, total=SHORT), "GET", "/events")
    assert response.status == 200 and response.complete
    # Bounded as a stream: as a whole, or between two chunks. Either cuts it off.
    for limits in ({"stream_total": SHORT}, {"stream_idle": SHORT / 5}):
        with pytest.raises(ResponseTimeout) as aborted:
            await request(checked(app, **limits), "GET", "/events")
        assert aborted.value.limit == next(iter(limits))


async def test_first_byte_then_total_bound_a_stalled_stream() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        await anyio.sleep(LONG)

    with pytest.raises(ResponseTimeout) as caught:
        await request(checked(app, total=SHORT * 2, first_byte=SHORT))
    assert caught.value.limit == "total"


# --------------------------------------------------------------------------------------
# request_body_idle


async def test_a_stalled_upload_gets_408_and_connection_close() -> None:
    chunks: list[bytes] = []

    async def upload(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            chunks.append(message["body"])
            if not message["more_body"]:
                break
        await respond(send)

    outcome: dict[str, Any] = {}
    app, _ = wrapped(upload, total=None, request_body_idle=SHORT)
    begin = anyio.current_time()
    response = await request(
        stalling_client(app),
        scope=http_scope("PUT", "/files/a", **{INFO_SCOPE_KEY: outcome}),
        body=[b"first", b"second"],
    )
    assert SHORT <= anyio.current_time() - begin < BOUND
    assert response.status == 408 and response.body == b"Request Timeout"
    assert response.header("connection") == "close"
    assert chunks == [b"first"]
    assert outcome == {"error.type": "timeout", "limit": "request_body_idle", "status": 408}


async def test_no_connection_close_on_http2() -> None:
    app = checked(fast_app(), total=LONG, request_body_idle=SHORT)
    scope = http_scope("PUT", http_version="2")
    response = await request(stalling_client(app), scope=scope, body=[b"a", b"b"])
    assert response.status == 408 and response.header("connection") is None


@pytest.mark.parametrize("stream_idle", [60.0, None], ids=["watched", "body-idle-alone"])
async def test_the_idle_limit_ends_with_the_body(stream_idle: float | None) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await anyio.sleep(SHORT * 2)  # slow work after the upload is not an idle client
        await respond(send)

    limits = {"total": None, "request_body_idle": SHORT, "stream_idle": stream_idle}
    response = await request(checked(app, **limits), body=[b"a"])
    assert response.status == 200


async def test_an_idle_upload_after_the_start_is_aborted() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        await read_body(receive)

    app_checked = checked(app, total=None, request_body_idle=SHORT)
    with pytest.raises(ResponseTimeout) as caught:
        await request(stalling_client(app_checked), body=[b"a", b"b"])
    assert caught.value.limit == "request_body_idle"


async def test_reading_the_rest_of_the_body_after_the_response_is_not_limited() -> None:
    read: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send)
        read.append(await read_body(receive))

    app_checked = checked(app, total=None, request_body_idle=SHORT)
    client = stalling_client(app_checked, after=0, stall=SHORT * 2)
    response = await request(client, body=[b"late"])
    assert response.status == 200 and read == [b"late"]


async def test_a_client_gone_mid_upload_is_not_an_idle_client() -> None:
    received: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.extend([(await receive())["type"] for _ in range(3)])

    response = await request(
        checked(app, total=None, request_body_idle=SHORT), body=[b"a", DISCONNECT]
    )
    assert received == ["http.request", "http.disconnect", "http.disconnect"]
    assert response.messages == []


async def test_a_shielded_receive_gets_a_disconnect_after_the_answer() -> None:
    received: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        with anyio.CancelScope(shield=True):
            received.append((await receive())["type"])

    # total answers first (504); the idle limit then fires inside the shielded receive.
    app_checked = checked(app, total=SHORT, request_body_idle=SHORT * 2)
    response = await request(stalling_client(app_checked), body=[b"a", b"b"])
    assert response.status == 504
    assert received == ["http.disconnect"]


# --------------------------------------------------------------------------------------
# Per-path limits, and what is left alone


async def test_per_path_overrides_and_exclusions() -> None:
    events: list[str] = []
    app = checked(
        sleeping_app(events, seconds=SHORT * 2),
        total=SHORT,
        routes={
            "/reports/": {"total": LONG},
            "/reports/live": {"total": LONG, "first_byte": SHORT},
        },
        exclude_paths=("/stream",),
    )
    assert (await request(app, "GET", "/reports/2024")).status == 200
    assert (await request(app, "GET", "/reports/live/now")).status == 504
    assert (await request(app, "GET", "/stream")).status == 200
    assert (await request(app, "GET", "/stream/x")).status == 200
    assert (await request(app, "GET", "/streams")).status == 504
    assert (await request(app, "GET", "/")).status == 504


async def test_an_excluded_path_gets_no_deadline_and_no_wrapper() -> None:
    seen: list[Scope] = []
    await request(checked(fast_app(seen), exclude_paths=["/health"]), "GET", "/health")
    assert DEADLINE_SCOPE_KEY not in seen[0] and INFO_SCOPE_KEY not in seen[0]


async def test_no_limit_at_all_means_no_wrapper() -> None:
    seen: list[Scope] = []
    await request(checked(fast_app(seen), total=None, stream_idle=None))
    assert INFO_SCOPE_KEY not in seen[0]


async def test_websocket_is_untouched() -> None:
    seen: list[Scope] = []

    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await anyio.sleep(SHORT)  # slower than every limit
            await send({"type": "websocket.send", "text": message["text"]})

    app = checked(echo, total=SHORT / 5, first_byte=SHORT / 10, request_body_idle=SHORT / 5)
    session = await websocket(app, frames=["a", "b"])
    assert session.sent == ["a", "b"]
    assert DEADLINE_SCOPE_KEY not in seen[0]


async def test_lifespan_is_untouched() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert DEADLINE_SCOPE_KEY not in scope
        await receive()
        await anyio.sleep(SHORT)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    session = await run_lifespan(checked(app, total=SHORT / 5))
    assert [m["type"] for m in session.messages] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


# --------------------------------------------------------------------------------------
# Exceptions and cancellation


async def test_exceptions_propagate_unchanged_not_grouped() -> None:
    error = ValueError("boom")
    group = ExceptionGroup("app's own group", [KeyError("k")])

    def raising(exc: Exception) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            raise exc

        return app

    for options in ({}, {"total": None, "request_body_idle": 1.0}):
        with pytest.raises(ValueError, match="boom") as caught:
            await request(checked(raising(error), **options))
        assert caught.value is error
    with pytest.raises(ExceptionGroup) as grouped:
        await request(checked(raising(group), first_byte=1.0))
    assert grouped.value is group


async def test_outside_cancellation_propagates() -> None:
    events: list[str] = []
    with anyio.move_on_after(SHORT) as outside:
        await request(checked(sleeping_app(events), total=LONG))
    assert outside.cancelled_caught
    assert events == ["app cancelled"]


async def test_app_bugs_after_the_end_still_reach_the_checker() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send)
        await send(BODY)

    with pytest.raises(ContractViolation, match=r"\[H3\]"):
        await request(enforce(TimeoutMiddleware(app)))


# --------------------------------------------------------------------------------------
# Options


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"total": 0}, ValueError, "total: expected a positive"),
        ({"total": -1.0}, ValueError, "total"),
        ({"total": float("inf")}, ValueError, "total"),
        ({"total": "30"}, TypeError, "total: expected a number"),
        ({"total": True}, TypeError, "total"),
        ({"first_byte": 30.0}, ValueError, "first_byte .* must be shorter than total"),
        ({"request_body_idle": 0.0}, ValueError, "request_body_idle"),
        ({"status_code": 404}, ValueError, "status_code"),
        ({"status_code": "504"}, ValueError, "status_code"),
        ({"cancel_grace": -1}, ValueError, "cancel_grace"),
        ({"cancel_grace": float("nan")}, ValueError, "cancel_grace"),
        ({"cancel_grace": None}, TypeError, "cancel_grace"),
        ({"exclude_paths": 42}, TypeError, "exclude_paths"),
        ({"exclude_paths": ["health"]}, ValueError, "starting with '/'"),
        ({"exclude_paths": ["/a", "/a/"]}, ValueError, "twice"),
        ({"routes": [("/a", {})]}, TypeError, "routes must be a mapping"),
        ({"routes": {"/a": 5}}, TypeError, r"routes\['/a'\] must be a mapping"),
        ({"routes": {"/a": {"totl": 5}}}, ValueError, "unknown options"),
        ({"routes": {"/a": {"total": 0}}}, ValueError, r"in routes\['/a'\]"),
        ({"routes": {"/a": {}}, "exclude_paths": ["/a"]}, ValueError, "both excluded"),
    ],
)
def test_bad_options_fail_at_start_up(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        TimeoutMiddleware(fast_app(), **options)


async def test_exclude_paths_may_be_a_comma_separated_str() -> None:
    asgi = TimeoutMiddleware(
        sleeping_app([], SHORT * 4), total=SHORT, exclude_paths="/health, /metrics"
    )
    assert (await request(asgi, "GET", "/metrics/x")).status == 200


def test_limits_give_the_length_of_each_limit() -> None:
    policy = Limits(1.0, 2.0, 3.0, 504, 4.0, 5.0)
    assert [policy.seconds(limit) for limit in Limit] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [limit.value for limit in Limit] == [
        "total",
        "first_byte",
        "request_body_idle",
        "stream_idle",
        "stream_total",
    ]


def test_make_limits_without_any_limit_is_none() -> None:
    options = {
        "total": None,
        "first_byte": None,
        "request_body_idle": None,
        "stream_idle": None,
        "stream_total": None,
        "status_code": 504,
    }
    assert make_limits(options) is None
    assert make_limits({**options, "first_byte": 2}) == Limits(None, 2.0, None, 504)


def test_routes_and_exclusions_match_whole_segments_longest_first() -> None:
    a, b, root = (Limits(float(n), None, None, 504) for n in (1, 2, 3))
    defaults = {
        "total": 9,
        "first_byte": None,
        "request_body_idle": None,
        "stream_idle": None,
        "stream_total": None,
        "status_code": 504,
    }
    entries = build_routes(defaults, {"/api/": {"total": 1}, "/api/v2": {"total": 2}}, ["/x"])
    table = PathTable(entries, None)
    assert table.match("/api") == a
    assert table.match("/api/v1/users") == a
    assert table.match("/api/v2") == b
    assert table.match("/api/v2/users") == b
    assert table.match("/api/v20") == a
    assert table.match("/apis") is None
    assert table.match("/x/y") is None
    assert PathTable([("/", root)], None).match("/anything") == root
