"""The scope chain: what a framework writes into its scope stays findable from outside."""

from typing import Any

import pytest
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgikit.contract import enforce
from asgikit.middleware import (
    AccessLogMiddleware,
    CompressionMiddleware,
    ProxyHeadersMiddleware,
    RequestIDMiddleware,
    TimeoutMiddleware,
)
from asgikit.scopes import (
    CHAIN_KEY,
    DECISION_KEY,
    TIMEOUT_KEY,
    derive_scope,
    end_chain,
    hand_down_decisions,
    innermost,
    innermost_with,
    start_chain,
)
from asgikit.testing import request

pytestmark = pytest.mark.anyio


def test_derive_scope_copies_and_records_the_copy() -> None:
    outer = start_chain({"type": "http", "path": "/"})
    inner = derive_scope(outer, {"x": 1})
    assert inner is not outer and "x" not in outer
    assert outer[CHAIN_KEY] == [outer, inner]
    assert innermost_with(outer, ("x",)) is inner


def test_without_a_chain_derive_scope_is_a_plain_copy() -> None:
    scope = {"type": "http"}
    derived = derive_scope(scope, {"x": 1})
    assert derived == {"type": "http", "x": 1} and CHAIN_KEY not in derived
    assert innermost_with(derived, ("route",)) is derived


def test_start_chain_reuses_an_existing_chain() -> None:
    outer = start_chain({"type": "http"})
    assert start_chain(outer) is outer
    again = start_chain(outer, {"y": 2})
    assert outer[CHAIN_KEY][-1] is again


def test_innermost_with_prefers_the_innermost_match() -> None:
    outer = start_chain({"type": "http", "route": "outer"})
    middle = derive_scope(outer, {"route": "inner"})
    derive_scope(middle, {"other": True})
    assert innermost_with(outer, ("route",))["route"] == "inner"


def test_innermost_with_finds_nothing_in_a_chain_without_the_keys() -> None:
    outer = start_chain({"type": "http"})
    derive_scope(outer, {"other": True})
    assert innermost_with(outer, ("route", "path_template")) is outer


def test_end_chain_empties_the_chain_it_started_and_ignores_a_scope_without_one() -> None:
    outer = start_chain({"type": "http"})
    inner = derive_scope(outer, {"route": "r"})
    end_chain(outer)
    assert outer[CHAIN_KEY] == [] and inner[CHAIN_KEY] == []
    plain = {"type": "http"}
    end_chain(plain)
    assert plain == {"type": "http"}


async def test_the_access_log_sees_the_route_through_copying_middleware() -> None:
    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x" * 2000)

    starlette_app = Starlette(routes=[Route("/items/{item_id}", item)])
    # The canonical order: every one of these copies the scope before the framework.
    app = enforce(
        ProxyHeadersMiddleware(
            RequestIDMiddleware(
                AccessLogMiddleware(
                    TimeoutMiddleware(CompressionMiddleware(enforce(starlette_app)), total=5.0)
                )
            )
        )
    )
    with structlog.testing.capture_logs() as lines:
        response = await request(
            app,
            "GET",
            "/items/42",
            headers={"accept-encoding": "gzip"},
            extensions={"http.response.zerocopysend": {}},  # makes compression copy too
        )
    assert response.status == 200 and response.header("content-encoding") == "gzip"
    [line] = [entry for entry in lines if entry.get("event") == "http.request"]
    entry: dict[str, Any] = line
    assert entry["http.route"] == "/items/{item_id}"
    assert entry["url.path"] == "/items/42"


async def test_proxy_headers_inside_a_chain_records_its_rewritten_copy() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    outer = start_chain(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "query_string": b"",
            "headers": [(b"x-forwarded-for", b"203.0.113.7")],
            "client": ("127.0.0.1", 5000),
        }
    )
    middleware = ProxyHeadersMiddleware(app)

    async def receive() -> Any:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        pass

    await middleware(outer, receive, send)
    assert seen[0]["client"] == ("203.0.113.7", 0)
    assert outer[CHAIN_KEY][-1] is seen[0]


async def test_an_access_log_inside_a_chain_joins_it_with_its_own_holder() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    outer = start_chain({"type": "http", "method": "GET", "path": "/", "headers": []})
    with structlog.testing.capture_logs():
        response = await request(AccessLogMiddleware(app), scope=outer)
    assert response.status == 204
    assert outer[CHAIN_KEY][-1] is seen[0]
    assert isinstance(seen[0]["asgikit.timeout"], dict) and "asgikit.timeout" not in outer


def test_innermost_is_the_last_copy_of_the_chain() -> None:
    plain: dict[str, Any] = {"type": "http"}
    assert innermost(plain) is plain
    outer = start_chain(plain)
    assert innermost(outer) is outer
    inner = derive_scope(outer, {"x": 1})
    assert innermost(outer) is inner


def test_hand_down_decisions_starts_a_chain_or_shares_one() -> None:
    scope, decisions, started = hand_down_decisions({"type": "http"})
    assert started and scope[CHAIN_KEY] == [scope]
    assert scope[DECISION_KEY] is decisions and scope[TIMEOUT_KEY] is decisions
    # An observer inside: the same chain, the same dict, no copy needed.
    again = hand_down_decisions(scope)
    assert again == (scope, decisions, False)
    # A chain without the dict (a timeout's own dict handed down): shared, in a copy.
    timeout: dict[str, Any] = {}
    bare = derive_scope(start_chain({"type": "http"}), {TIMEOUT_KEY: timeout})
    copied, shared, started = hand_down_decisions(bare)
    assert not started and shared is timeout and copied[DECISION_KEY] is timeout
    assert innermost(copied) is copied
