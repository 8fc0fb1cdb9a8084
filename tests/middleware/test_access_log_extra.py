"""AccessLogMiddleware's ``extra_fields(scope, exchange)``: called once per line written,
its fields added beside the line's own, and a hook that raises changes nothing for the
client nor for the line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from asgikit.contract import enforce
from asgikit.middleware import RateLimitMiddleware
from asgikit.middleware.access_log import AccessLogMiddleware
from asgikit.observe import Exchange, WebSocketExchange
from asgikit.scopes import derive_scope
from asgikit.testing import request, websocket
from asgikit.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.anyio


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    structlog.contextvars.clear_contextvars()
    with capture_logs() as captured:
        yield captured


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    # A layer inside adds to its own copy: the hook sees the innermost scope.
    scope = derive_scope(scope, {"tenant": "acme"})
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def logged(app: ASGIApp, **options: Any) -> ASGIApp:
    return enforce(AccessLogMiddleware(enforce(app), **options))


async def test_extra_fields_are_added_once_beside_the_lines_own(
    lines: list[dict[str, Any]],
) -> None:
    calls: list[tuple[Any, Any]] = []

    def extra(scope: Scope, exchange: Any) -> dict[str, Any]:
        calls.append((scope.get("tenant"), exchange))
        return {
            "tenant": scope.get("tenant"),
            "sent": exchange.sent,
            "http.request.method": "FORGED",
        }

    await request(logged(ok, extra_fields=extra), "GET", "/")
    [line] = lines
    assert line["tenant"] == "acme"
    assert line["sent"] == 2
    assert line["http.request.method"] == "GET"  # never replaces the line's own
    assert len(calls) == 1 and isinstance(calls[0][1], Exchange)


def broken(scope: Scope, exchange: Any) -> Any:
    raise RuntimeError("the hook is broken")


@pytest.mark.parametrize(
    "hook",
    [broken, lambda scope, exchange: ["no mapping"], lambda scope, exchange: {"event": "x"}],
)
async def test_a_failing_hook_changes_nothing(
    lines: list[dict[str, Any]], caplog: pytest.LogCaptureFixture, hook: Any
) -> None:
    await request(logged(ok), "GET", "/")
    plain = lines.pop()
    with caplog.at_level(logging.WARNING, logger="asgikit.hooks"):
        response = await request(logged(ok, extra_fields=hook), "GET", "/")
    assert (response.status, response.body) == (200, b"ok")
    [line] = lines
    assert line.keys() == plain.keys()
    assert "AccessLogMiddleware.extra_fields raised" in caplog.text


async def test_a_sampled_out_line_does_not_call_the_hook(lines: list[dict[str, Any]]) -> None:
    calls: list[int] = []
    app = logged(ok, sample_rate=0.0, extra_fields=lambda s, e: calls.append(1) or {})
    await request(app, "GET", "/")
    assert lines == [] and calls == []


async def test_a_429_goes_through_the_hook(lines: list[dict[str, Any]]) -> None:
    limited = RateLimitMiddleware(enforce(ok), rate="1/hour")
    app = logged(limited, extra_fields=lambda scope, ex: {"seen.status": ex.status})
    await request(app, "GET", "/")
    await request(app, "GET", "/")
    assert [line["seen.status"] for line in lines] == [200, 429]
    assert lines[1]["asgikit.decision"] == "rate_limited"


async def test_websocket_lines_get_extra_fields(lines: list[dict[str, Any]]) -> None:
    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})

    seen: list[Any] = []

    def extra(scope: Scope, exchange: Any) -> dict[str, Any]:
        seen.append(exchange)
        return {"room": scope["path"]}

    await websocket(logged(echo, extra_fields=extra), "/ws/lobby")
    [line] = lines
    assert line["room"] == "/ws/lobby"
    assert isinstance(seen[0], WebSocketExchange)


def test_extra_fields_must_be_callable() -> None:
    with pytest.raises(TypeError, match=r"^extra_fields: expected a callable"):
        AccessLogMiddleware(ok, extra_fields="module:function")  # type: ignore[arg-type]
