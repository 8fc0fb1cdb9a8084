"""Every rule of the contract: a violating app or middleware is caught, a correct one passes."""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from asgikit.contract import RULES, ContractViolation, ContractWarning, enforce
from asgikit.testing import (
    ALL_HTTP_EXTENSIONS,
    ClientDisconnected,
    Disconnect,
    LifespanFailed,
    http_scope,
    lifespan,
    request,
    run_lifespan,
    websocket,
)
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain")],
}
BODY = {"type": "http.response.body", "body": b"hello"}


def app_sending(*messages: Message) -> ASGIApp:
    """An app that reads the request body, then sends *messages* (fresh copies)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            while (await receive()).get("more_body", False):
                pass
        for message in messages:
            # a fresh dict and header list each time, as a well-behaved app sends
            fresh = dict(message)
            if "headers" in fresh:
                fresh["headers"] = copy.deepcopy(fresh["headers"])
            await send(fresh)

    return app


hello = app_sending(START, BODY)


class Passthrough:
    """The correct minimal middleware."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class SendHook:
    """A middleware whose send wrapper is a given function (for writing broken ones)."""

    def __init__(self, app: ASGIApp, hook: Callable[[Message, Send], Any]) -> None:
        self.app = app
        self.hook = hook

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def wrapped(message: Message) -> None:
            await self.hook(message, send)

        await self.app(scope, receive, wrapped)


async def violation(coro: Any) -> ContractViolation:
    with pytest.raises(ContractViolation) as info:
        await coro
    return info.value


def sandwich(middleware: Callable[[ASGIApp], ASGIApp], app: ASGIApp, **kw: bool) -> ASGIApp:
    return enforce(middleware(enforce(app)), **kw)


def test_every_rule_has_an_id_severity_and_summary() -> None:
    ids = [rule.id for rule in RULES.values()]
    prefixes = {"S", "M", "H", "X", "W", "L", "E"}
    assert {i[0] for i in ids} == prefixes
    assert all(rule.severity in ("E", "W") and rule.summary for rule in RULES.values())
    assert RULES["S2"].severity == "W" and RULES["H5"].severity == "W"


def test_violation_message_names_rule_side_and_message() -> None:
    error = ContractViolation("H2", "app", "a second start", {"type": "http.response.start"})
    assert error.rule == "H2" and error.side == "app"
    text = str(error)
    assert text.startswith("[H2] app side: a second start")
    assert "http.response.start" in text and RULES["H2"].summary in text
    assert isinstance(error, AssertionError)


# ---- correct apps pass -----------------------------------------------------------------


async def test_correct_http_app_passes_through_a_checked_middleware() -> None:
    response = await request(sandwich(Passthrough, hello), body=[b"a", b"b"])
    assert response.status == 200 and response.body == b"hello"


async def test_streaming_response_passes() -> None:
    app = app_sending(
        START,
        {"type": "http.response.body", "body": b"a", "more_body": True},
        {"type": "http.response.body", "body": b"b", "more_body": True},
        {"type": "http.response.body", "body": b""},
    )
    response = await request(sandwich(Passthrough, app))
    assert response.chunks == [b"a", b"b", b""]


async def test_pathsend_completion_passes(tmp_path: Any) -> None:
    path = tmp_path / "file.txt"
    path.write_bytes(b"data")
    app = app_sending(START, {"type": "http.response.pathsend", "path": str(path)})
    response = await request(sandwich(Passthrough, app), extensions=ALL_HTTP_EXTENSIONS)
    assert response.pathsend == str(path)


async def test_early_hints_before_start_and_trailers_pass() -> None:
    app = app_sending(
        {"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload"]},
        {**START, "trailers": True},
        {"type": "http.response.body", "body": b"x"},
        {
            "type": "http.response.trailers",
            "headers": [(b"x-checksum", b"1")],
            "more_trailers": True,
        },
        {"type": "http.response.trailers", "headers": [(b"x-more", b"2")]},
    )
    response = await request(sandwich(Passthrough, app), extensions=ALL_HTTP_EXTENSIONS)
    assert response.early_hints == [[b"</style.css>; rel=preload"]]
    assert response.trailers == [(b"x-checksum", b"1"), (b"x-more", b"2")]


async def test_zerocopysend_and_push_and_debug_pass(tmp_path: Any) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    with open(path, "rb") as handle:  # noqa: ASYNC230 - a tiny local file
        app = app_sending(
            {"type": "http.response.debug", "info": {"template": "x"}},
            START,
            {"type": "http.response.push", "path": "/style.css", "headers": []},
            {"type": "http.response.zerocopysend", "file": handle, "count": 4, "more_body": True},
            {"type": "http.response.zerocopysend", "file": handle, "offset": 4},
        )
        response = await request(sandwich(Passthrough, app), extensions=ALL_HTTP_EXTENSIONS)
    assert response.complete


async def test_send_after_disconnect_raising_oserror_is_allowed() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(dict(START))
        for _ in range(5):
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with pytest.raises(ClientDisconnected):
        await request(sandwich(Passthrough, app), disconnect_after=2)


async def test_send_after_disconnect_ignored_and_app_returning_early_is_allowed() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        message = await receive()
        assert message["type"] == "http.disconnect"
        await send(dict(START))  # the server ignores it; the app then gives up

    response = await request(
        sandwich(Passthrough, app), body=[b"a", Disconnect()], send_after_disconnect="ignore"
    )
    assert response.disconnected and response.dropped


async def test_websocket_denial_response_passes() -> None:
    app = app_sending(
        {"type": "websocket.http.response.start", "status": 403, "headers": []},
        {"type": "websocket.http.response.body", "body": b"no", "more_body": True},
        {"type": "websocket.http.response.body", "body": b"!"},
    )
    session = await websocket(
        sandwich(Passthrough, app), extensions={"websocket.http.response": {}}
    )
    assert session.denial is not None and session.denial.status == 403
    assert session.denial.body == b"no!"


async def test_correct_websocket_app_passes() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept", "subprotocol": "chat"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message["text"].upper()})

    session = await websocket(sandwich(Passthrough, app), frames=["a", "b"], subprotocols=["chat"])
    assert session.sent == ["A", "B"] and session.subprotocol == "chat"


async def test_correct_lifespan_passes() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "lifespan.startup"
        scope["state"]["ready"] = True
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        await send({"type": "lifespan.shutdown.complete"})

    session = await run_lifespan(sandwich(Passthrough, app))
    assert session.state == {"ready": True}


def test_starlette_app_through_testclient_passes() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    async def home(_: Any) -> PlainTextResponse:
        return PlainTextResponse("home")

    app = Starlette(routes=[Route("/", home)])
    with TestClient(enforce(Passthrough(enforce(app)))) as client:  # TestClient omits "asgi"
        assert client.get("/").text == "home"
        assert client.get("/missing").status_code == 404


# ---- S: scope ----------------------------------------------------------------------------


async def test_s1_scope_without_type() -> None:
    error = await violation(enforce(hello)({"path": "/"}, None, None))  # type: ignore[arg-type]
    assert (error.rule, error.side) == ("S1", "server")


async def test_s1_middleware_that_swallows_lifespan() -> None:
    class NoLifespan(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":
                return
            await self.app(scope, receive, send)

    with pytest.raises(ContractViolation) as info:
        await run_lifespan(sandwich(NoLifespan, hello))
    assert (info.value.rule, info.value.side) == ("S1", "middleware")


async def test_s1_unknown_scope_type_reaches_the_app() -> None:
    seen = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    await sandwich(Passthrough, app)({"type": "custom"}, None, None)  # type: ignore[arg-type]
    assert seen == ["custom"]


async def test_s2_unknown_asgi_version_warns_and_strict_raises() -> None:
    scope = http_scope(asgi={"version": "4.0"})
    with pytest.warns(ContractWarning, match=r"\[S2\]"):
        await request(enforce(hello), scope=scope)
    error = await violation(request(enforce(hello, strict=True), scope=scope))
    assert error.rule == "S2"


async def test_s2_missing_asgi_key_is_fine() -> None:
    scope = http_scope()
    del scope["asgi"]
    assert (await request(enforce(hello, strict=True), scope=scope)).status == 200


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("method", "get"),
        ("path", b"/"),
        ("query_string", "a=1"),
        ("raw_path", "/"),
        ("root_path", None),
        ("scheme", ""),
    ],
)
async def test_s3_scope_field_types(key: str, value: Any) -> None:
    scope = http_scope()
    scope[key] = value
    error = await violation(request(enforce(hello), scope=scope))
    assert (error.rule, error.side) == ("S3", "server")


async def test_s3_missing_path() -> None:
    scope = http_scope()
    del scope["path"]
    assert (await violation(request(enforce(hello), scope=scope))).rule == "S3"


@pytest.mark.parametrize(
    "headers",
    [
        [("host", b"x")],
        [(b":authority", b"x")],
        [(b"a", b"b", b"c")],
        "host: x",
    ],
)
async def test_s4_scope_headers(headers: Any) -> None:
    scope = http_scope()
    scope["headers"] = headers
    assert (await violation(request(enforce(hello), scope=scope))).rule == "S4"


async def test_s4_uppercase_scope_header_names_warn() -> None:
    scope = http_scope()
    scope["headers"] = [(b"Host", b"x")]
    with pytest.warns(ContractWarning, match=r"\[S4\].*lowercase"):
        await request(enforce(hello), scope=scope)
    assert (await violation(request(enforce(hello, strict=True), scope=scope))).rule == "S4"


@pytest.mark.parametrize(
    ("key", "value"),
    [("client", ("1.2.3.4", "80")), ("client", ("1.2.3.4", None)), ("server", "host:80")],
)
async def test_s5_addresses(key: str, value: Any) -> None:
    scope = http_scope()
    scope[key] = value
    assert (await violation(request(enforce(hello), scope=scope))).rule == "S5"


async def test_s5_unix_socket_server_and_list_addresses_are_fine() -> None:
    scope = http_scope(client=None, server=("/tmp/sock", None))
    await request(enforce(hello), scope=scope)
    await request(enforce(hello), scope=http_scope(server=["testserver", 80]))  # type: ignore[arg-type]


async def test_s6_extensions_shape() -> None:
    scope = http_scope()
    scope["extensions"] = {"http.response.pathsend": True}
    assert (await violation(request(enforce(hello), scope=scope))).rule == "S6"


async def test_s6_middleware_that_replaces_state() -> None:
    class FreshState(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self.app({**scope, "state": dict(scope["state"])}, receive, send)

    error = await violation(request(sandwich(FreshState, hello), state={"db": "pool"}))
    assert (error.rule, error.side) == ("S6", "middleware")
    await request(sandwich(Passthrough, hello), state={"db": "pool"})


async def test_s6_middleware_that_drops_state() -> None:
    class NoState(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self.app({k: v for k, v in scope.items() if k != "state"}, receive, send)

    error = await violation(request(sandwich(NoState, hello), state={}))
    assert error.rule == "S6"


async def test_s7_middleware_that_mutates_the_servers_scope_warns() -> None:
    class Mutates(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            scope["client"] = ("10.0.0.1", 1)
            await self.app(scope, receive, send)

    class Copies(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self.app({**scope, "client": ("10.0.0.1", 1)}, receive, send)

    with pytest.warns(ContractWarning, match=r"\[S7\] middleware side.*client"):
        await request(sandwich(Mutates, hello))
    error = await violation(request(sandwich(Mutates, hello, strict=True)))
    assert error.rule == "S7"
    await request(sandwich(Copies, hello, strict=True))


async def test_s7_routing_app_may_update_the_scope() -> None:
    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = "/users/{id}"  # what Starlette's router does, after the middleware
        await hello(scope, receive, send)

    await request(sandwich(Passthrough, router, strict=True))


# ---- M: messages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        ["http.response.start"],
        {"status": 200},
        {"type": b"http.response.start"},
        {**START, "extra": math.nan},
        {**START, "extra": 2**70},
        {**START, "extra": object()},
        {**START, 1: "x"},
    ],
)
async def test_m1_message_shape(message: Any) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(message)

    error = await violation(request(enforce(app)))
    assert (error.rule, error.side) == ("M1", "app")


async def test_m1_from_the_server_side() -> None:
    async def bad_receive() -> Message:
        return {"type": "http.request", "body": b"", "x": {1, 2}}

    error = await violation(enforce(hello)(http_scope(), bad_receive, None))  # type: ignore[arg-type]
    assert (error.rule, error.side) == ("M1", "server")


@pytest.mark.parametrize(
    "message",
    [
        {"type": "http.response.body", "body": "text"},
        {"type": "http.response.body", "more_body": "yes"},
        {**START, "trailers": "no"},
    ],
)
async def test_m2_optional_key_types(message: Message) -> None:
    app = app_sending(START, message) if "status" not in message else app_sending(message)
    assert (await violation(request(enforce(app)))).rule == "M2"


async def test_m2_optional_keys_may_be_absent() -> None:
    app = app_sending(
        {"type": "http.response.start", "status": 204}, {"type": "http.response.body"}
    )
    assert (await request(enforce(app, strict=True))).status == 204


async def test_m3_middleware_that_rebuilds_start_and_loses_keys() -> None:
    async def rebuild(message: Message, send: Send) -> None:
        if message["type"] == "http.response.start":
            message = {"type": message["type"], "status": message["status"], "headers": []}
        await send(message)

    async def copy(message: Message, send: Send) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message["headers"], (b"x-a", b"1")]}
        await send(message)

    app = app_sending({**START, "x-server-hint": "keep"}, BODY)
    error = await violation(request(sandwich(lambda a: SendHook(a, rebuild), app)))
    assert (error.rule, error.side) == ("M3", "middleware")
    assert "x-server-hint" in error.detail
    response = await request(sandwich(lambda a: SendHook(a, copy), app))
    assert response.start["x-server-hint"] == "keep"


async def test_m4_unknown_message_dropped() -> None:
    async def drop_unknown(message: Message, send: Send) -> None:
        if message["type"].startswith("http.response."):
            await send(message)

    app = app_sending(START, {"type": "x.custom", "n": 1}, BODY)
    error = await violation(request(sandwich(lambda a: SendHook(a, drop_unknown), app)))
    assert (error.rule, error.side) == ("M4", "middleware")
    assert (await request(sandwich(Passthrough, app))).message_types[1] == "x.custom"


async def test_m4_unknown_messages_reordered_or_changed() -> None:
    held: list[Message] = []

    async def swap(message: Message, send: Send) -> None:
        if message["type"] == "x.first":
            held.append(message)
            return
        await send(message)
        if held:
            await send(held.pop())

    async def change(message: Message, send: Send) -> None:
        if message["type"] == "x.first":
            message = {**message, "n": 2}
        await send(message)

    app = app_sending(START, {"type": "x.first", "n": 1}, {"type": "x.second"}, BODY)
    error = await violation(request(sandwich(lambda a: SendHook(a, swap), app)))
    assert error.rule == "M4" and "order" in error.detail
    error = await violation(request(sandwich(lambda a: SendHook(a, change), app)))
    assert error.rule == "M4" and "changed" in error.detail


async def test_m5_middleware_that_mutates_the_apps_constant_header_list() -> None:
    constant_headers = [(b"content-type", b"text/plain")]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": constant_headers})
        await send({"type": "http.response.body", "body": b"x"})

    async def append_header(message: Message, send: Send) -> None:
        if message["type"] == "http.response.start":
            message["headers"].append((b"x-added", b"1"))
        await send(message)

    error = await violation(request(sandwich(lambda a: SendHook(a, append_header), app)))
    assert (error.rule, error.side) == ("M5", "middleware")


async def test_m5_mutation_after_the_send_returned_is_caught_later() -> None:
    held: list[Message] = []

    async def hold_then_mutate(message: Message, send: Send) -> None:
        # Like a compressor that keeps the start and edits its headers when the body comes.
        if message["type"] == "http.response.start":
            held.append(message)
            return
        start = held.pop()
        start["headers"] = [*start["headers"], (b"content-encoding", b"gzip")]
        await send(start)
        await send(message)

    error = await violation(request(sandwich(lambda a: SendHook(a, hold_then_mutate), hello)))
    assert error.rule == "M5" and "earlier" in error.detail


async def test_m5_catches_starlettes_gzip_body_rewrite() -> None:
    from starlette.middleware.gzip import GZipMiddleware

    app = app_sending(START, {"type": "http.response.body", "body": b"hello " * 200})
    error = await violation(
        request(sandwich(GZipMiddleware, app), headers={"accept-encoding": "gzip"})
    )
    assert (error.rule, error.side) == ("M5", "middleware")


# ---- H: http -----------------------------------------------------------------------------


async def test_h1_server_sends_request_after_last_chunk() -> None:
    calls = 0

    async def receive() -> Message:
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": b"x", "more_body": False}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await receive()

    error = await violation(enforce(app)(http_scope(), receive, None))  # type: ignore[arg-type]
    assert (error.rule, error.side) == ("H1", "server")


@pytest.mark.parametrize(
    "message",
    [
        {"type": "http.request", "body": "text"},
        {"type": "http.request", "more_body": 1},
        {"type": "websocket.receive", "text": "x"},
    ],
)
async def test_h1_request_message_types(message: Message) -> None:
    async def receive() -> Message:
        return message

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    error = await violation(enforce(app)(http_scope(), receive, None))  # type: ignore[arg-type]
    assert error.rule == "H1"


async def test_h1_app_may_call_receive_many_times_after_disconnect() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kinds = [(await receive())["type"] for _ in range(3)]
        assert kinds == ["http.request", "http.disconnect", "http.disconnect"]

    await request(enforce(app), body=[b"a", Disconnect()])


async def test_h2_second_start_from_an_error_handler() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(dict(START))
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            await send({**START, "status": 500})

    error = await violation(request(enforce(app)))
    assert (error.rule, error.side) == ("H2", "app")


@pytest.mark.parametrize(
    "messages",
    [
        [BODY],
        [{"type": "http.response.trailers", "headers": []}],
        [{**START, "status": 99}],
        [{**START, "status": True}],
        [{**START, "headers": [(b"Content-Type", b"text/plain")]}],
        [{**START, "headers": [("content-type", "text/plain")]}],
        [START, {"type": "http.response.early_hint", "links": []}],
    ],
)
async def test_h2_start_rules(messages: list[Message]) -> None:
    app = app_sending(*messages, BODY)
    error = await violation(request(enforce(app), extensions=ALL_HTTP_EXTENSIONS))
    assert error.rule == "H2"


async def test_h2_returning_without_a_response() -> None:
    error = await violation(request(enforce(app_sending())))
    assert error.rule == "H2" and "without starting" in error.detail


async def test_h3_message_after_final_body() -> None:
    error = await violation(request(enforce(app_sending(START, BODY, BODY))))
    assert error.rule == "H3" and "after the response ended" in error.detail


async def test_h3_returning_with_a_half_sent_response() -> None:
    app = app_sending(START, {"type": "http.response.body", "body": b"a", "more_body": True})
    error = await violation(request(enforce(app)))
    assert error.rule == "H3" and "without completing" in error.detail


@pytest.mark.parametrize(
    "messages",
    [
        # trailers without trailers=True
        [START, BODY, {"type": "http.response.trailers", "headers": []}],
        # body after the body ended while trailers are expected
        [{**START, "trailers": True}, BODY, BODY],
        # trailers before the body ended
        [
            {**START, "trailers": True},
            {"type": "http.response.body", "more_body": True},
            {"type": "http.response.trailers", "headers": []},
        ],
    ],
)
async def test_h3_trailer_ordering(messages: list[Message]) -> None:
    error = await violation(
        request(enforce(app_sending(*messages)), extensions=ALL_HTTP_EXTENSIONS)
    )
    assert error.rule == "H3"


async def test_h4_middleware_completing_a_cut_short_response() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(dict(START))
        await send({"type": "http.response.body", "body": b"half", "more_body": True})
        raise RuntimeError("database went away")

    class Completes(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await self.app(scope, receive, send)
            except RuntimeError:
                await send({"type": "http.response.body", "body": b""})

    error = await violation(request(sandwich(Completes, app)))
    assert (error.rule, error.side) == ("H4", "middleware")
    with pytest.raises(RuntimeError, match="database went away"):
        await request(sandwich(Passthrough, app))


async def test_h5_content_length_mismatch_warns() -> None:
    app = app_sending({**START, "headers": [(b"content-length", b"10")]}, BODY)
    with pytest.warns(ContractWarning, match=r"\[H5\].*10 but 5"):
        await request(enforce(app))
    assert (await violation(request(enforce(app, strict=True)))).rule == "H5"


async def test_h5_head_and_304_and_exact_lengths_are_fine() -> None:
    app = app_sending(
        {**START, "headers": [(b"content-length", b"5")]}, {"type": "http.response.body"}
    )
    await request(enforce(app, strict=True), "HEAD")
    not_modified = app_sending(
        {"type": "http.response.start", "status": 304, "headers": [(b"content-length", b"5")]},
        {"type": "http.response.body"},
    )
    await request(enforce(not_modified, strict=True))
    exact = app_sending({**START, "headers": [(b"content-length", b"5")]}, BODY)
    await request(enforce(exact, strict=True))


async def test_h5_conflicting_content_lengths() -> None:
    headers = [(b"content-length", b"5"), (b"content-length", b"6")]
    app = app_sending({**START, "headers": headers}, BODY)
    assert (await violation(request(enforce(app, strict=True)))).rule == "H5"


class ErrorPage(Passthrough):
    """Turns a RuntimeError into a 500 page: fine before a start reached the server."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except RuntimeError:
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"error"})


async def test_h6_middleware_answering_after_the_response_started() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(dict(START))
        raise RuntimeError("late failure")

    error = await violation(request(sandwich(ErrorPage, app, answers_errors=True)))
    assert (error.rule, error.side) == ("H6", "middleware")


async def test_h6_answering_before_any_start_is_fine() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("early failure")

    response = await request(sandwich(ErrorPage, app, answers_errors=True))
    assert response.status == 500


async def test_h7_failed_send_turned_into_a_second_response() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(dict(START))
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await send({"type": "http.response.body", "body": b"y"})

    class Retry(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await self.app(scope, receive, send)
            except OSError:
                await send({"type": "http.response.start", "status": 500, "headers": []})

    error = await violation(request(sandwich(Retry, app), disconnect_after=1))
    assert error.rule == "H6"


async def test_h7_ending_quietly_after_a_failed_send_is_fine() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(dict(START))
        await send({"type": "http.response.body", "body": b"x", "more_body": True})

    class Quiet(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await self.app(scope, receive, send)
            except OSError:
                return

    response = await request(sandwich(Quiet, app), disconnect_after=1)
    assert response.disconnected


async def test_h8_middleware_that_replays_the_body_wrongly() -> None:
    class ReplaysForever(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break

            async def replay() -> Message:
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await receive()  # must be http.disconnect, but the replay repeats the body

    error = await violation(request(sandwich(ReplaysForever, app), body=[b"a", b"b"]))
    assert (error.rule, error.side) == ("H8", "middleware")


# ---- X: extensions -----------------------------------------------------------------------


async def test_x1_extension_message_without_the_extension(tmp_path: Any) -> None:
    app = app_sending(START, {"type": "http.response.pathsend", "path": str(tmp_path)})
    error = await violation(request(enforce(app)))
    assert (error.rule, error.side) == ("X1", "app")
    app = app_sending({**START, "trailers": True}, BODY)
    assert (await violation(request(enforce(app)))).rule == "X1"


async def test_x1_middleware_that_removes_the_extension_from_a_copy(tmp_path: Any) -> None:
    class NoPathsend(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            extensions = {k: v for k, v in scope["extensions"].items() if "pathsend" not in k}
            await self.app({**scope, "extensions": extensions}, receive, send)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(dict(START))
        if "http.response.pathsend" in scope["extensions"]:
            await send({"type": "http.response.pathsend", "path": str(tmp_path)})
        else:
            await send(dict(BODY))

    response = await request(sandwich(NoPathsend, app), extensions=ALL_HTTP_EXTENSIONS)
    assert response.body == b"hello"


async def test_x2_pathsend_mixed_with_body_or_relative(tmp_path: Any) -> None:
    mixed = app_sending(
        START,
        {"type": "http.response.body", "body": b"a", "more_body": True},
        {"type": "http.response.pathsend", "path": str(tmp_path)},
    )
    error = await violation(request(enforce(mixed), extensions=ALL_HTTP_EXTENSIONS))
    assert error.rule == "X2"
    relative = app_sending(START, {"type": "http.response.pathsend", "path": "file.txt"})
    error = await violation(request(enforce(relative), extensions=ALL_HTTP_EXTENSIONS))
    assert error.rule == "X2"
    after = app_sending(START, {"type": "http.response.pathsend", "path": str(tmp_path)}, BODY)
    error = await violation(request(enforce(after), extensions=ALL_HTTP_EXTENSIONS))
    assert error.rule == "X2"


async def test_x2_middleware_that_drops_pathsend(tmp_path: Any) -> None:
    async def only_body(message: Message, send: Send) -> None:
        # A body-transforming middleware that only knows http.response.body.
        if message["type"] in ("http.response.start", "http.response.body"):
            await send(message)

    app = app_sending(START, {"type": "http.response.pathsend", "path": str(tmp_path)})
    error = await violation(
        request(sandwich(lambda a: SendHook(a, only_body), app), extensions=ALL_HTTP_EXTENSIONS)
    )
    assert (error.rule, error.side) == ("X2", "middleware")
    assert "never reached the server" in error.detail


async def test_x3_trailers_changed_or_dropped() -> None:
    async def drop(message: Message, send: Send) -> None:
        if message["type"] != "http.response.early_hint":
            await send(message)

    async def change(message: Message, send: Send) -> None:
        if message["type"] == "http.response.trailers":
            message = {**message, "headers": []}
        await send(message)

    app = app_sending(
        {"type": "http.response.early_hint", "links": [b"</a>"]},
        {**START, "trailers": True},
        BODY,
        {"type": "http.response.trailers", "headers": [(b"x-sum", b"1")]},
    )
    for hook, what in ((drop, "dropped or held back"), (change, "changed")):
        error = await violation(
            request(sandwich(lambda a, h=hook: SendHook(a, h), app), extensions=ALL_HTTP_EXTENSIONS)
        )
        assert error.rule == "X3" and what in error.detail


# ---- W: websocket ------------------------------------------------------------------------


async def test_w1_first_receive_is_not_connect() -> None:
    async def receive() -> Message:
        return {"type": "websocket.receive", "text": "hi"}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    scope = {"type": "websocket", "path": "/", "query_string": b"", "headers": []}
    error = await violation(enforce(app)(scope, receive, None))  # type: ignore[arg-type]
    assert (error.rule, error.side) == ("W1", "server")


async def test_w1_send_before_accept() -> None:
    app = app_sending({"type": "websocket.send", "text": "early"})
    assert (await violation(websocket(enforce(app)))).rule == "W1"


async def test_w1_receive_before_answering_connect() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await receive()

    error = await violation(websocket(enforce(app)))
    assert (error.rule, error.side) == ("W1", "app")


async def test_w1_denial_after_accept() -> None:
    app = app_sending(
        {"type": "websocket.accept"},
        {"type": "websocket.http.response.start", "status": 403, "headers": []},
    )
    error = await violation(websocket(enforce(app), extensions={"websocket.http.response": {}}))
    assert error.rule == "W1"


@pytest.mark.parametrize(
    "accept",
    [
        {"type": "websocket.accept", "headers": [(b"sec-websocket-protocol", b"chat")]},
        {"type": "websocket.accept", "subprotocol": b"chat"},
        {"type": "websocket.accept", "headers": [(b"X-Up", b"1")]},
    ],
)
async def test_w2_accept_fields(accept: Message) -> None:
    assert (await violation(websocket(enforce(app_sending(accept))))).rule == "W2"


async def test_w2_accept_twice() -> None:
    app = app_sending({"type": "websocket.accept"}, {"type": "websocket.accept"})
    assert (await violation(websocket(enforce(app)))).rule == "W2"


async def test_w2_subprotocol_not_offered_warns() -> None:
    app = app_sending(
        {"type": "websocket.accept", "subprotocol": "graphql"}, {"type": "websocket.close"}
    )
    with pytest.warns(ContractWarning, match=r"\[W2\].*graphql"):
        await websocket(enforce(app), subprotocols=["chat"])


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "websocket.send"},
        {"type": "websocket.send", "text": "a", "bytes": b"a"},
        {"type": "websocket.send", "bytes": "a"},
        {"type": "websocket.send", "text": b"a"},
    ],
)
async def test_w3_exactly_one_of_bytes_and_text(frame: Message) -> None:
    app = app_sending({"type": "websocket.accept"}, frame)
    assert (await violation(websocket(enforce(app)))).rule == "W3"


async def test_w4_send_after_close() -> None:
    app = app_sending({"type": "websocket.close"}, {"type": "websocket.send", "text": "late"})
    assert (await violation(websocket(enforce(app)))).rule == "W4"


async def test_w4_receive_after_disconnect() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            await receive()  # never stops at the disconnect

    error = await violation(websocket(enforce(app), frames=["a"]))
    assert (error.rule, error.side) == ("W4", "app")


# ---- L: lifespan -------------------------------------------------------------------------


async def test_l1_answer_before_the_event() -> None:
    app = app_sending({"type": "lifespan.startup.complete"})

    async def receive() -> Message:
        raise AssertionError("not reached")  # pragma: no cover

    error = await violation(enforce(app)({"type": "lifespan"}, receive, None))  # type: ignore[arg-type]
    assert (error.rule, error.side) == ("L1", "app")


async def test_l1_answering_startup_twice() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.startup.complete"})

    assert (await violation(run_lifespan(enforce(app)))).rule == "L1"


async def test_l1_shutdown_before_startup_answered() -> None:
    events = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Message:
        return next(events)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await receive()

    error = await violation(enforce(app)({"type": "lifespan"}, receive, None))  # type: ignore[arg-type]
    assert (error.rule, error.side) == ("L1", "server")


async def test_l1_middleware_translating_an_exception_into_failed() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise RuntimeError("no database")

    class Translates(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await self.app(scope, receive, send)
            except RuntimeError as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})

    error = await violation(run_lifespan(sandwich(Translates, app)))
    assert (error.rule, error.side) == ("L1", "middleware")


async def test_l1_middleware_translating_failed_into_an_exception() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    async def raise_instead(message: Message, send: Send) -> None:
        if message["type"].endswith(".failed"):
            raise RuntimeError(message["message"])
        await send(message)  # pragma: no cover

    error = await violation(run_lifespan(sandwich(lambda a: SendHook(a, raise_instead), app)))
    assert (error.rule, error.side) == ("L1", "middleware")


async def test_l1_failed_startup_passes_through_untouched() -> None:
    app = app_sending({"type": "lifespan.startup.failed", "message": "no database"})

    async def startup_failed(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await app(scope, receive, send)

    with pytest.raises(LifespanFailed, match="no database"):
        await run_lifespan(sandwich(Passthrough, startup_failed))


# ---- E: exceptions and cancellation --------------------------------------------------------


async def failing(scope: Scope, receive: Receive, send: Send) -> None:
    raise KeyError("missing")


async def test_e1_exception_propagates_unchanged() -> None:
    with pytest.raises(KeyError):
        await request(sandwich(Passthrough, failing))


async def test_e1_middleware_swallowing_an_exception() -> None:
    class Swallows(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await self.app(scope, receive, send)
            except Exception:
                await send({"type": "http.response.start", "status": 500, "headers": []})
                await send({"type": "http.response.body", "body": b""})

    error = await violation(request(sandwich(Swallows, failing)))
    assert (error.rule, error.side) == ("E1", "middleware")
    response = await request(sandwich(Swallows, failing, answers_errors=True))
    assert response.status == 500


async def test_e1_middleware_replacing_an_exception() -> None:
    class Wraps(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            async with anyio.create_task_group() as tg:  # wraps errors in an ExceptionGroup
                await self.app(scope, receive, send)
                tg.cancel_scope.cancel()

    error = await violation(request(sandwich(Wraps, failing)))
    assert error.rule == "E1" and "ExceptionGroup" in error.detail


async def sleeper(scope: Scope, receive: Receive, send: Send) -> None:
    await anyio.sleep(10)


async def test_e2_middleware_swallowing_cancellation() -> None:
    class Swallows(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await self.app(scope, receive, send)
            except anyio.get_cancelled_exc_class():
                return

    with pytest.raises(ContractViolation) as info:
        with anyio.move_on_after(0.05):
            await request(sandwich(Swallows, sleeper))
    assert (info.value.rule, info.value.side) == ("E2", "middleware")


async def test_e2_cancellation_propagating_is_fine() -> None:
    with anyio.move_on_after(0.05) as scope:
        await request(sandwich(Passthrough, sleeper))
    assert scope.cancelled_caught


async def test_e2_middleware_cancelling_the_app_on_its_own_is_fine() -> None:
    class OwnDeadline(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            with anyio.move_on_after(0.02):
                await self.app(scope, receive, send)
                return
            await send({"type": "http.response.start", "status": 504, "headers": []})
            await send({"type": "http.response.body", "body": b"timeout"})

    response = await request(sandwich(OwnDeadline, sleeper))
    assert response.status == 504


async def test_e2_app_swallowing_cancellation_in_receive() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        try:
            await receive()  # waits for the disconnect; cancelled here
        except anyio.get_cancelled_exc_class():
            return

    with pytest.raises(ContractViolation) as info:
        with anyio.move_on_after(0.05):
            await request(enforce(app))
    assert (info.value.rule, info.value.side) == ("E2", "app")


async def test_e3_middleware_running_the_app_in_another_task() -> None:
    class InTask(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.app, scope, receive, send)

    error = await violation(request(sandwich(InTask, hello)))
    assert (error.rule, error.side) == ("E3", "middleware")
    assert (await request(sandwich(InTask, hello, runs_app_in_task=True))).status == 200


async def test_a_violation_swallowed_by_the_app_is_still_raised() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(ContractViolation):
            await send({"type": "http.response.body", "body": b""})
        await send(dict(START))
        await send(dict(BODY))

    error = await violation(request(enforce(app)))
    assert error.rule == "H2"


async def test_lifespan_session_state_reaches_requests() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["pool"] = "ready"
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = scope["state"]["pool"].encode()
        await send(dict(START))
        await send({"type": "http.response.body", "body": body})

    checked = sandwich(Passthrough, app)
    async with lifespan(checked) as session:
        response = await request(checked, state=session.state)
    assert response.body == b"ready"


def test_enforce_is_importable_from_an_installed_layout() -> None:
    import asgikit.contract
    import asgikit.testing

    package_dir, module_file = os.path.split(asgikit.contract.__file__)
    assert (os.path.basename(package_dir), module_file) == ("contract", "__init__.py")
    assert callable(asgikit.testing.request)


# ---- field checks, table-driven ----------------------------------------------------------

PUSH = {"type": "http.response.push", "path": "/a.css", "headers": []}


@pytest.mark.parametrize(
    ("messages", "rule"),
    [
        ([START, {"type": "http.response.zerocopysend", "file": "name"}], "M2"),
        ([START, {"type": "http.response.zerocopysend", "file": None, "count": "4"}], "M2"),
        ([START, {**PUSH, "path": b"/a.css"}], "M2"),
        ([START, {**PUSH, "headers": [(b"A", b"1")]}], "M2"),
        ([{"type": "http.response.early_hint", "links": ["</a>"]}], "M2"),
        (
            [{**START, "trailers": True}, BODY, {"type": "http.response.trailers", "headers": 1}],
            "M2",
        ),
        (
            [
                {**START, "trailers": True},
                BODY,
                {"type": "http.response.trailers", "headers": [], "more_trailers": "no"},
            ],
            "M2",
        ),
        ([START, BODY, {"type": "x.late"}], "H3"),
    ],
)
async def test_http_message_fields(messages: list[Message], rule: str) -> None:
    app = app_sending(*messages)
    error = await violation(request(enforce(app), extensions=ALL_HTTP_EXTENSIONS))
    assert (error.rule, error.side) == (rule, "app")


async def test_zerocopysend_more_body_type(tmp_path: Any) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    with open(path, "rb") as handle:  # noqa: ASYNC230 - a tiny local file
        app = app_sending(
            START, {"type": "http.response.zerocopysend", "file": handle, "more_body": 1}
        )
        error = await violation(request(enforce(app), extensions=ALL_HTTP_EXTENSIONS))
    assert error.rule == "M2"


DENIAL = {"type": "websocket.http.response.start", "status": 403, "headers": []}


@pytest.mark.parametrize(
    ("messages", "rule"),
    [
        ([{"type": "websocket.close", "code": "1000"}], "M2"),
        ([{"type": "websocket.close", "reason": 1}], "M2"),
        ([{**DENIAL, "status": 42}], "W1"),
        ([{**DENIAL, "headers": [(b"X", b"1")]}], "W1"),
        ([DENIAL, {"type": "websocket.http.response.body", "body": "no"}], "M2"),
        ([DENIAL, {"type": "websocket.http.response.body", "more_body": "no"}], "M2"),
        ([DENIAL, {"type": "websocket.send", "text": "x"}], "W1"),
        ([{"type": "websocket.close"}, {"type": "x.late"}], "W4"),
    ],
)
async def test_websocket_message_fields(messages: list[Message], rule: str) -> None:
    app = app_sending(*messages)
    error = await violation(websocket(enforce(app), extensions={"websocket.http.response": {}}))
    assert (error.rule, error.side) == (rule, "app")


async def test_unknown_messages_pass_before_the_end() -> None:
    app = app_sending({"type": "x.before"}, START, {"type": "x.during"}, BODY)
    assert (await request(sandwich(Passthrough, app))).message_types[0] == "x.before"
    ws_app = app_sending(
        {"type": "websocket.accept"}, {"type": "x.ws"}, {"type": "websocket.close"}
    )
    assert (await websocket(sandwich(Passthrough, ws_app))).accepted
    life = app_sending({"type": "x.life"})

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await life(scope, receive, send)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    session = await run_lifespan(sandwich(Passthrough, lifespan_app))
    assert session.messages[0] == {"type": "x.life"}


async def test_middleware_may_send_unknown_messages_of_its_own() -> None:
    async def extra(message: Message, send: Send) -> None:
        if message["type"] == "http.response.body":
            await send({"type": "x.from-middleware"})
        await send(message)

    response = await request(sandwich(lambda a: SendHook(a, extra), hello))
    assert "x.from-middleware" in response.message_types


async def test_websocket_scope_subprotocols_type() -> None:
    app = app_sending({"type": "websocket.close"})
    from asgikit.testing import websocket_scope

    scope = websocket_scope()
    scope["subprotocols"] = "chat"
    assert (await violation(websocket(enforce(app), scope=scope))).rule == "S3"


def scripted_receive(*messages: Message) -> Receive:
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0)

    return receive


async def drain(scope: Scope, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})


@pytest.mark.parametrize(
    "events",
    [
        [{"type": "lifespan.startup"}, {"type": "lifespan.startup"}],
        [{"type": "lifespan.shutdown"}],
        [
            {"type": "lifespan.startup"},
            {"type": "lifespan.shutdown"},
            {"type": "lifespan.shutdown"},
        ],
        [{"type": "lifespan.wakeup"}],
    ],
)
async def test_lifespan_server_side_order(events: list[Message]) -> None:
    scope = {"type": "lifespan"}
    error = await violation(enforce(drain)(scope, scripted_receive(*events), _null_send))
    assert (error.rule, error.side) == ("L1", "server")


async def _null_send(message: Message) -> None:
    pass


async def test_lifespan_failed_message_type() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": b"bytes"})

    assert (await violation(run_lifespan(enforce(app)))).rule == "M2"


@pytest.mark.parametrize(
    "message",
    [
        {"type": "websocket.disconnect", "code": "1000"},
        {"type": "websocket.http.request"},
        {"type": "websocket.receive", "text": "a", "bytes": b"a"},
    ],
)
async def test_websocket_server_side_messages(message: Message) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()

    scope = {"type": "websocket", "path": "/", "query_string": b"", "headers": []}
    receive = scripted_receive({"type": "websocket.connect"}, message)
    error = await violation(enforce(app)(scope, receive, _null_send))
    assert error.side == "server" and error.rule in ("M2", "W1", "W3")


async def test_violation_swallowed_by_a_middleware_still_surfaces() -> None:
    class SwallowsAll(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await self.app(scope, receive, send)
            except Exception:
                await send({"type": "http.response.start", "status": 500, "headers": []})
                await send({"type": "http.response.body", "body": b""})

    bad = app_sending(BODY)  # body before start: H2 in the inner checker
    error = await violation(request(sandwich(SwallowsAll, bad, answers_errors=True)))
    assert (error.rule, error.side) == ("H2", "app")


async def test_violation_swallowed_by_the_app_wins_over_its_later_exception() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(ContractViolation):
            await send(dict(BODY))
        raise ValueError("later")

    error = await violation(request(enforce(app)))
    assert error.rule == "H2"
    assert isinstance(error.__cause__, ValueError)  # the later error is kept, chained


async def test_e2_middleware_turning_cancellation_into_another_error() -> None:
    class Converts(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await self.app(scope, receive, send)
            except anyio.get_cancelled_exc_class():
                raise RuntimeError("cancelled") from None

    with pytest.raises(ContractViolation) as info:
        with anyio.move_on_after(0.05):
            await request(sandwich(Converts, sleeper))
    assert (info.value.rule, info.value.side) == ("E2", "middleware")


async def test_child_checkers_link_only_to_a_running_parent_of_the_same_type() -> None:
    inner = enforce(hello)

    class SubRequest(Passthrough):
        # A middleware that answers a websocket with an http sub-request to the app: the
        # http checker must not take the websocket exchange for its parent.
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "websocket":
                await receive()
                sub = await request(self.app)
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.send", "bytes": sub.body})
                await send({"type": "websocket.close"})
                return
            await self.app(scope, receive, send)

    session = await websocket(enforce(SubRequest(inner)))
    assert session.sent == [b"hello"]


# ---- remaining edges ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [[1, math.nan], {"nested": object()}, "deep"],
)
async def test_m1_bad_values_nested_in_lists_and_dicts(extra: Any) -> None:
    if extra == "deep":
        extra = [1]
        for _ in range(20):
            extra = [extra]
    app = app_sending({**START, "extra": extra}, BODY)
    assert (await violation(request(enforce(app)))).rule == "M1"


async def test_m1_byte_buffers_are_valid_values() -> None:
    app = app_sending(START, {"type": "http.response.body", "body": bytearray(b"buf")})
    response = await request(sandwich(Passthrough, app))
    assert response.body == b"buf"


async def test_zerocopysend_offset_must_be_an_int(tmp_path: Any) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    with open(path, "rb") as handle:  # noqa: ASYNC230 - a tiny local file
        zerocopy = {"type": "http.response.zerocopysend", "file": handle, "offset": "0"}
        app = app_sending(START, zerocopy)
        error = await violation(request(enforce(app), extensions=ALL_HTTP_EXTENSIONS))
    assert error.rule == "M2" and "offset" in error.detail


async def test_s5_client_host_must_be_a_str() -> None:
    scope = http_scope()
    scope["client"] = (127, 1)
    assert (await violation(request(enforce(hello), scope=scope))).rule == "S5"


async def test_h5_unparsable_content_length_warns_once() -> None:
    app = app_sending({**START, "headers": [(b"content-length", b"five")]}, BODY)
    with pytest.warns(ContractWarning, match=r"\[H5\].*not one number"):
        await request(enforce(app))


async def test_e2_app_swallowing_cancellation_raised_in_send() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(dict(START))
        while True:
            try:
                await send({"type": "http.response.body", "body": b"x", "more_body": True})
            except anyio.get_cancelled_exc_class():
                return  # gives up quietly instead of letting the cancellation through

    with pytest.raises(ContractViolation) as info:
        with anyio.move_on_after(0.05):
            await request(enforce(app))
    assert (info.value.rule, info.value.side) == ("E2", "app")


async def test_middleware_replacing_a_disconnect_error_is_tolerated() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(dict(START))
        await send({"type": "http.response.body", "body": b"x", "more_body": True})

    class Relabels(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await self.app(scope, receive, send)
            except OSError as exc:
                raise ConnectionResetError("client went away") from exc

    with pytest.raises(ConnectionResetError):
        await request(sandwich(Relabels, app), disconnect_after=1)


async def test_deep_stacks_without_a_nested_checker_are_checked_from_outside() -> None:
    app: ASGIApp = hello
    for _ in range(20):
        app = Passthrough(app)
    assert (await request(enforce(app, strict=True))).status == 200


async def test_the_first_of_several_violations_the_app_swallowed_is_reported() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(ContractViolation):
            await send(dict(BODY))  # H2: a body before the start
        await send(dict(START))
        await send(dict(BODY))
        with contextlib.suppress(ContractViolation):
            await send(dict(BODY))  # H3: a body after the final one

    error = await violation(request(enforce(app)))
    assert error.rule == "H2"


async def test_an_error_from_the_servers_receive_reaches_the_server_unchanged() -> None:
    class ConnectionLost(Exception):
        pass

    lost = ConnectionLost("the socket closed")

    async def receive() -> Message:
        raise lost

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent")  # pragma: no cover - must not run

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    with pytest.raises(ConnectionLost) as info:
        await sandwich(Passthrough, app)(http_scope(), receive, send)
    assert info.value is lost


async def test_a_scope_holding_a_value_that_refers_back_to_it_is_checked() -> None:
    # A framework may keep the scope inside a value it puts in the scope.
    scope = http_scope("GET", "/")
    scope["framework"] = {"scope": scope}
    response = await request(sandwich(Passthrough, hello), scope=scope)
    assert (response.status, response.body) == (200, b"hello")


async def test_middleware_may_send_a_message_of_its_own_before_forwarding_the_apps() -> None:
    async def announce(message: Message, send: Send) -> None:
        if message["type"] == "x.app":
            await send({"type": "x.middleware"})
        await send(message)

    app = app_sending(START, {"type": "x.app"}, BODY)
    response = await request(sandwich(lambda a: SendHook(a, announce), app))
    assert response.message_types[1:3] == ["x.middleware", "x.app"]


async def test_an_error_page_middleware_whose_page_fails_may_raise_that_error() -> None:
    class TemplateMissing(Exception):
        pass

    class ErrorPageWithoutTemplate(Passthrough):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await self.app(scope, receive, send)
            except Exception as exc:
                raise TemplateMissing("500.html") from exc

    with pytest.raises(TemplateMissing):
        await request(sandwich(ErrorPageWithoutTemplate, failing, answers_errors=True))
    error = await violation(request(sandwich(ErrorPageWithoutTemplate, failing)))
    assert error.rule == "E1"
