"""BodyLimitMiddleware's per path and method rules, exclude_paths, and the websocket
message limit."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from asgikit.answers import DECISION_FIELD, DETAILS
from asgikit.contract import enforce
from asgikit.middleware.body_limit import BodyLimitMiddleware
from asgikit.scopes import DECISION_KEY
from asgikit.testing import DISCONNECT, request, websocket, websocket_scope
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def wrapped(app: ASGIApp = echo, **options: Any) -> ASGIApp:
    return enforce(BodyLimitMiddleware(enforce(app), **options))


async def status(app: ASGIApp, method: str, path: str, size: int, chunked: bool = False) -> int:
    """The status of a request with a body of *size* bytes (announced, unless chunked)."""
    headers = {} if chunked else {"content-length": str(size)}
    response = await request(app, method, path, headers=headers, body=b"x" * size)
    return response.status


# --------------------------------------------------------------------------------------
# Rules


async def test_a_rule_raises_the_limit_for_its_path_and_methods() -> None:
    app = wrapped(
        max_body_size=10,
        rules=[{"path": "/upload", "methods": ["POST", "put"], "max_body_size": 100}],
    )
    assert await status(app, "POST", "/upload", 100) == 200
    assert await status(app, "PUT", "/upload/big/file", 100, chunked=True) == 200
    assert await status(app, "POST", "/upload", 101) == 413
    assert await status(app, "PATCH", "/upload", 11) == 413  # not its method
    assert await status(app, "POST", "/uploads", 11) == 413  # not its path (segments)
    assert await status(app, "POST", "/other", 11) == 413


async def test_a_rule_can_lower_the_limit() -> None:
    app = wrapped(rules=[{"path": "/login", "max_body_size": 5}])
    assert await status(app, "POST", "/login", 6) == 413
    assert await status(app, "POST", "/login", 5, chunked=True) == 200
    assert await status(app, "POST", "/elsewhere", 6) == 200


async def test_the_most_specific_rule_wins() -> None:
    app = wrapped(
        max_body_size=1,
        rules=[
            {"max_body_size": 2},  # every path: the least specific
            {"path": "/api", "max_body_size": 3},
            {"path": "/api", "methods": ["POST"], "max_body_size": 4},
            {"route": "/api/users/{id:int}/avatar", "max_body_size": 5},
            {"path": "/api/users", "max_body_size": 6},  # shorter than the route
        ],
    )
    assert await status(app, "GET", "/", 2) == 200
    assert await status(app, "GET", "/", 3) == 413
    assert await status(app, "PUT", "/api/x", 3) == 200
    assert await status(app, "PUT", "/api/x", 4) == 413
    assert await status(app, "POST", "/api/x", 4) == 200
    assert await status(app, "POST", "/api/x", 5) == 413
    assert await status(app, "PUT", "/api/users/7/avatar", 5) == 200
    assert await status(app, "PUT", "/api/users/7/avatar", 6) == 413
    assert await status(app, "PUT", "/api/users/me/avatar", 6) == 200  # {id:int}: no match
    assert await status(app, "PUT", "/api/users/7/avatar/x", 6) == 200  # the route is whole


async def test_a_get_rule_covers_head_and_a_root_path_rule_covers_everything() -> None:
    app = wrapped(max_body_size=1, rules=[{"path": "/", "methods": ["GET"], "max_body_size": 3}])
    assert await status(app, "HEAD", "/any", 3) == 200
    assert await status(app, "POST", "/any", 3) == 413


async def test_a_rule_without_a_limit_lets_any_body_through() -> None:
    app = wrapped(max_body_size=1, rules=[{"route": "/stream/{name}", "max_body_size": None}])
    assert await status(app, "POST", "/stream/a", 5000, chunked=True) == 200
    assert await status(app, "POST", "/stream/a/b", 2) == 413


async def test_a_rule_sets_the_decompressed_limit() -> None:
    data = zlib.compress(b"x" * 1000)
    app = wrapped(
        decompress=True,
        max_decompressed_size=100,
        rules=[
            {"path": "/big", "max_body_size": 50, "max_decompressed_size": 1000},
            {"path": "/follows", "max_body_size": 5000},  # the middleware's 100
        ],
    )
    headers = {"content-encoding": "deflate"}
    ok = await request(app, "POST", "/big", headers=headers, body=data)
    assert (ok.status, ok.body) == (200, b"x" * 1000)
    assert (await request(app, "POST", "/follows", headers=headers, body=data)).status == 413
    assert (await request(app, "POST", "/other", headers=headers, body=data)).status == 413


@pytest.mark.parametrize(
    ("rules", "error", "start"),
    [
        ("/upload", TypeError, "rules: expected a list"),
        ({"path": "/x"}, TypeError, "rules: expected a list"),
        (["/upload"], TypeError, "rules[0]: expected a mapping"),
        ([{"path": "/x"}], ValueError, "rules[0].max_body_size: required"),
        ([{"path": "/x", "max_body_size": -5}], ValueError, "rules[0].max_body_size"),
        ([{"max_body_size": 1, "size": 2}], ValueError, "rules[0]: unknown field 'size'"),
        ([{"path": "/a", "route": "/a", "max_body_size": 1}], ValueError, "rules[0]: give"),
        ([{"path": "a", "max_body_size": 1}], ValueError, "rules[0].path"),
        ([{"route": 5, "max_body_size": 1}], ValueError, "rules[0].route"),
        ([{"route": "a/{x}", "max_body_size": 1}], ValueError, "rules[0].route"),
        ([{"route": "/{x:hex}", "max_body_size": 1}], ValueError, "rules[0].route: unknown"),
        ([{"route": "/{x", "max_body_size": 1}], ValueError, "rules[0].route: malformed"),
        ([{"methods": "POST", "max_body_size": 1}], TypeError, "rules[0].methods"),
        ([{"methods": ["PO ST"], "max_body_size": 1}], ValueError, "rules[0].methods"),
        ([{"methods": [], "max_body_size": 1}], ValueError, "rules[0].methods"),
        (
            [{"max_body_size": 1, "max_decompressed_size": "2"}],
            TypeError,
            "rules[0].max_decompressed_size",
        ),
    ],
)
def test_bad_rules_fail_at_start_up(rules: Any, error: type[Exception], start: str) -> None:
    with pytest.raises(error) as raised:
        BodyLimitMiddleware(echo, rules=rules)
    assert str(raised.value).startswith(start)


# --------------------------------------------------------------------------------------
# exclude_paths


async def test_excluded_paths_are_left_alone() -> None:
    app = wrapped(max_body_size=1, decompress=True, exclude_paths=["/raw", "/files*"])
    assert await status(app, "POST", "/raw/x", 100) == 200
    assert await status(app, "POST", "/filesystem", 100) == 200
    assert await status(app, "POST", "/rawx", 100) == 413
    encoded = zlib.compress(b"abc")
    headers = {"content-encoding": "deflate"}
    response = await request(app, "POST", "/raw", headers=headers, body=encoded)
    assert response.body == encoded  # not decoded either


# --------------------------------------------------------------------------------------
# Websocket messages


def ws_app(log: list[Message]) -> ASGIApp:
    """Accepts, echoes every message, and records what it receives."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        log.append(await receive())
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            log.append(message)
            if message["type"] == "websocket.disconnect":
                # Told the client went: a close now is dropped, not a second close.
                await send({"type": "websocket.close", "code": 1000})
                return
            await send({**message, "type": "websocket.send"})

    return app


async def test_a_websocket_message_over_the_limit_closes_with_1009() -> None:
    log: list[Message] = []
    holder: dict[str, Any] = {}
    scope = websocket_scope("/ws")
    scope[DECISION_KEY] = holder
    frames = [b"12345", "x" * 5, b"123456", "after"]
    session = await websocket(
        wrapped(ws_app(log), max_websocket_message_size=5), frames=frames, scope=scope
    )
    assert session.sent == [b"12345", "xxxxx"]  # exactly the limit passes
    closes = [m for m in session.messages if m["type"] == "websocket.close"]
    assert closes == [{"type": "websocket.close", "code": 1009, "reason": "message too big"}]
    assert log[-1] == {"type": "websocket.disconnect", "code": 1009, "reason": "message too big"}
    assert holder == {DECISION_FIELD: "message_too_large", DETAILS: {"body_limit.limit": 5}}


@pytest.mark.parametrize(
    ("text", "passes"),
    [
        ("é" * 3, True),  # 6 bytes in UTF-8
        ("é" * 3 + "x", False),  # 7 bytes, 4 characters
        ("\U0001f600", True),  # 4 bytes, 1 character
        ("x" * 7, False),  # more characters than bytes allowed
        ("", True),
    ],
)
async def test_text_messages_are_counted_in_utf8_bytes(text: str, passes: bool) -> None:
    log: list[Message] = []
    app = wrapped(ws_app(log), max_websocket_message_size=6)
    session = await websocket(app, frames=[text])
    assert (session.sent == [text]) is passes
    assert (session.close_code == 1009) is not passes


async def test_a_second_receive_after_the_1009_is_the_same_disconnect() -> None:
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        seen.append(await receive())
        seen.append(await receive())

    await websocket(BodyLimitMiddleware(app, max_websocket_message_size=1), frames=[b"12"])
    assert seen == [{"type": "websocket.disconnect", "code": 1009, "reason": "message too big"}] * 2


async def test_the_close_is_skipped_when_the_client_has_gone_meanwhile() -> None:
    incoming = iter(
        [{"type": "websocket.connect"}, {"type": "websocket.receive", "bytes": b"too big"}]
    )
    sent: list[Message] = []

    async def receive() -> Message:
        return next(incoming)

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "websocket.close":
            raise OSError("the client left")

    log: list[Message] = []
    middleware = BodyLimitMiddleware(ws_app(log), max_websocket_message_size=1)
    await middleware(websocket_scope("/ws"), receive, send)
    assert log[-1]["code"] == 1009
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]


async def test_websockets_pass_through_without_a_message_limit_or_when_excluded() -> None:
    for options in ({}, {"max_websocket_message_size": 1, "exclude_paths": ["/ws"]}):
        log: list[Message] = []
        session = await websocket(wrapped(ws_app(log), **options), frames=[b"x" * 100_000])
        assert session.sent == [b"x" * 100_000]
        assert log[-1] == {"type": "websocket.disconnect", "code": 1000}


async def test_a_client_close_passes_through() -> None:
    log: list[Message] = []
    app = wrapped(ws_app(log), max_websocket_message_size=10)
    session = await websocket(app, frames=[b"ok", DISCONNECT])
    assert session.sent == [b"ok"]
    assert log[-1] == {"type": "websocket.disconnect", "code": 1000}


# --------------------------------------------------------------------------------------
# Starlette and FastAPI inside


def starlette_app(route_limit: int) -> ASGIApp:
    async def endpoint(request: Request) -> Response:
        return Response(await request.body())

    return Starlette(routes=[Route("/", endpoint, methods=["POST"], max_body_size=route_limit)])


async def test_a_starlette_route_limit_inside_can_lower_the_limit_but_not_raise_it() -> None:
    lower = wrapped(starlette_app(5), max_body_size=100)
    assert await status(lower, "POST", "/", 5) == 200
    assert await status(lower, "POST", "/", 6) == 413  # Starlette's own answer
    higher = wrapped(starlette_app(1000), max_body_size=100)
    assert await status(higher, "POST", "/", 101) == 413  # asgikit's answer, before routing


class Item(BaseModel):  # at module level: FastAPI resolves the annotation by name
    name: str


async def create_item(item: Item) -> dict[str, str]:
    return {"ok": item.name}


async def test_a_fastapi_body_parameter_past_the_limit_is_a_clean_413() -> None:
    api = FastAPI()
    api.post("/items")(create_item)
    app = wrapped(api, max_body_size=20)
    headers = {"content-type": "application/json"}
    chunked = [b'{"name": "', b"x" * 30, b'"}']  # no Content-Length
    response = await request(app, "POST", "/items", headers=headers, body=chunked)
    assert (response.status, response.body) == (413, b"Content Too Large")
    small = await request(app, "POST", "/items", headers=headers, body=[b'{"name": "a"}'])
    assert (small.status, small.json()) == (200, {"ok": "a"})


async def test_a_starlette_endpoint_raises_client_disconnect_after_the_413() -> None:
    # Contract E1: the app's exception goes on, even one the middleware's disconnect
    # caused; the client has its 413 (docs/body_limit.md says how to avoid the error).
    async def endpoint(request: Request) -> Response:
        return Response(await request.body())

    app = wrapped(Starlette(routes=[Route("/", endpoint, methods=["POST"])]), max_body_size=5)
    response = await request(app, "POST", "/", body=[b"123", b"456"], raise_app_exceptions=False)
    assert (response.status, response.body) == (413, b"Content Too Large")
    assert isinstance(response.exception, ClientDisconnect)
