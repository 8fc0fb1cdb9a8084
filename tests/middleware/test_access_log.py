"""AccessLogMiddleware: one line per request, its fields, levels, redaction, context."""

from __future__ import annotations

import io
import logging
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

import asgikit.logging
from asgikit.contract import enforce
from asgikit.middleware import ProxyHeadersMiddleware, RequestIDMiddleware
from asgikit.middleware import access_log as access_log_module
from asgikit.middleware.access_log import AccessLogMiddleware
from asgikit.middleware.timeout import TimeoutMiddleware
from asgikit.observe import route_template
from asgikit.redact import DEFAULT_REDACTED_QUERY_PARAMS, QueryRedactor, truncate
from asgikit.testing import (
    ALL_HTTP_EXTENSIONS,
    DISCONNECT,
    ClientDisconnected,
    Disconnect,
    request,
    run_lifespan,
    websocket,
)
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

tracer = TracerProvider().get_tracer("tests")


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    """Every event logged, with structlog's context merged in, as the processors see it."""
    structlog.contextvars.clear_contextvars()
    with capture_logs(processors=[merge_contextvars]) as captured:
        yield captured
    structlog.contextvars.clear_contextvars()


def access_lines(captured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        line
        for line in captured
        if line["event"] in (asgikit.logging.HTTP_EVENT, asgikit.logging.WEBSOCKET_EVENT)
    ]


def the_line(captured: list[dict[str, Any]]) -> dict[str, Any]:
    """The access line, asserting that there is exactly one."""
    found = access_lines(captured)
    assert len(found) == 1, found
    return found[0]


def wrapped(app: ASGIApp, **options: Any) -> ASGIApp:
    return enforce(AccessLogMiddleware(enforce(app), **options))


def responding(
    status: int = 200, body: bytes = b"hello", headers: list[tuple[bytes, bytes]] | None = None
) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        await send({"type": "http.response.body", "body": body})

    return app


async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole request body, then echoes it back one byte per message."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for byte in body:
        await send({"type": "http.response.body", "body": bytes([byte]), "more_body": True})
    await send({"type": "http.response.body"})


# --------------------------------------------------------------------------------------
# One line, whatever happens


async def test_a_normal_request_gives_one_line_with_every_field(
    lines: list[dict[str, Any]],
) -> None:
    response = await request(
        wrapped(responding()),
        "GET",
        "/items/42",
        headers={"user-agent": "curl/8.5", "referer": "https://example.com/from"},
    )
    assert response.status == 200
    line = the_line(lines)
    assert line["log_level"] == "info"
    expected = {
        "event": "http.request",
        "http.request.method": "GET",
        "url.path": "/items/42",
        "http.response.status_code": 200,
        "http.request.body.size": 0,
        "http.response.body.size": 5,
        "network.protocol.version": "1.1",
        "url.scheme": "http",
        "client.address": "127.0.0.1",
        "client.port": 50000,
        "user_agent.original": "curl/8.5",
        "http.request.header.referer": "https://example.com/from",
    }
    assert expected.items() <= line.items()
    assert 0 <= line["ttfb_ms"] <= line["duration_ms"] < 60_000
    for absent in ("url.query", "http.route", "request_id", "trace_id", "error.type"):
        assert absent not in line
    assert "disconnected" not in line and "slow" not in line and "sample_rate" not in line


async def test_streaming_counts_every_chunk_both_ways(lines: list[dict[str, Any]]) -> None:
    response = await request(wrapped(streaming), "POST", "/upload", body=[b"ab", b"cde", b""])
    assert response.body == b"abcde"
    line = the_line(lines)
    assert line["http.request.body.size"] == 5
    assert line["http.response.body.size"] == 5
    assert line["http.request.method"] == "POST"


async def test_pathsend_counts_the_file(lines: list[dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"x" * 1234)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(path)})

    response = await request(wrapped(app), extensions=ALL_HTTP_EXTENSIONS)
    assert response.pathsend == str(path)
    line = the_line(lines)
    assert line["http.response.body.size"] == 1234
    assert "error.type" not in line


async def test_a_vanished_pathsend_file_counts_zero(lines: list[dict[str, Any]]) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/no/such/file"})

    await request(wrapped(app), extensions=ALL_HTTP_EXTENSIONS)
    assert the_line(lines)["http.response.body.size"] == 0


async def test_zerocopysend_counts_its_count_or_the_rest_of_the_file(
    lines: list[dict[str, Any]], tmp_path: Path
) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"x" * 100)
    with path.open("rb") as file:

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send(
                {
                    "type": "http.response.zerocopysend",
                    "file": file,
                    "count": 10,
                    "more_body": True,
                }
            )
            await send({"type": "http.response.zerocopysend", "file": file, "offset": 60})

        await request(wrapped(app), extensions=ALL_HTTP_EXTENSIONS)
    assert the_line(lines)["http.response.body.size"] == 10 + 40


async def test_a_response_with_trailers_ends_with_its_last_trailers(
    lines: list[dict[str, Any]],
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.early_hint", "links": [b"</a.css>; rel=preload"]})
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"abc"})
        await send({"type": "http.response.trailers", "headers": [], "more_trailers": True})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"1")]})

    response = await request(wrapped(app), extensions=ALL_HTTP_EXTENSIONS)
    assert response.trailers == [(b"x-checksum", b"1")]
    line = the_line(lines)
    assert line["http.response.body.size"] == 3
    assert "error.type" not in line


async def test_an_exception_before_start_logs_a_500_error_and_propagates(
    lines: list[dict[str, Any]],
) -> None:
    class Boom(Exception):
        pass

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise Boom("no")

    with pytest.raises(Boom) as raised:
        await request(wrapped(app))
    line = the_line(lines)
    assert line["log_level"] == "error"
    assert line["http.response.status_code"] == 500  # what the server answers
    assert line["error.type"] == Boom.__qualname__
    assert line["exc_info"] is raised.value
    assert "ttfb_ms" not in line


async def test_an_exception_mid_stream_keeps_the_status_sent(lines: list[dict[str, Any]]) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise ValueError("mid-stream")

    with pytest.raises(ValueError, match="mid-stream"):
        await request(wrapped(app))
    line = the_line(lines)
    assert line["log_level"] == "error"
    assert line["http.response.status_code"] == 200
    assert line["http.response.body.size"] == 4
    assert line["error.type"] == "ValueError"


async def test_a_client_gone_while_sending_is_a_disconnect_not_an_error(
    lines: list[dict[str, Any]],
) -> None:
    with pytest.raises(ClientDisconnected):
        await request(wrapped(streaming), body=b"abcdef", disconnect_after=3)
    line = the_line(lines)
    assert line["disconnected"] is True
    assert "error.type" not in line and "exc_info" not in line
    assert line["http.response.status_code"] == 200
    assert line["http.response.body.size"] == 2  # the third chunk never left
    assert line["log_level"] == "info"


async def test_a_client_gone_mid_upload_is_marked(lines: list[dict[str, Any]]) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    await request(wrapped(app), "POST", body=[b"abc", DISCONNECT])
    line = the_line(lines)
    assert line["disconnected"] is True
    assert line["http.request.body.size"] == 3
    assert "http.response.status_code" not in line
    assert line["log_level"] == "warning"  # nothing was answered


async def test_the_disconnect_after_a_complete_response_is_not_a_disconnect(
    lines: list[dict[str, Any]],
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})
        assert (await receive())["type"] == "http.disconnect"

    await request(wrapped(app))
    assert "disconnected" not in the_line(lines)


async def test_cancellation_is_logged_then_propagates(lines: list[dict[str, Any]]) -> None:
    structlog.contextvars.bind_contextvars(request_id="outer")
    cancel_scope = anyio.CancelScope()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        cancel_scope.cancel()
        await anyio.sleep_forever()

    with cancel_scope:
        await request(enforce(RequestIDMiddleware(wrapped(app), log_key=None)))
    assert cancel_scope.cancelled_caught
    line = the_line(lines)
    assert line["log_level"] == "warning"
    assert line["error.type"] in ("CancelledError", "Cancelled")
    assert "exc_info" not in line
    assert structlog.contextvars.get_contextvars() == {"request_id": "outer"}


async def test_returning_without_a_complete_response_is_an_error(
    lines: list[dict[str, Any]],
) -> None:
    # Deliberately broken apps: no enforce() around them, which would raise instead.
    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return

    async def cut_short(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})

    await request(AccessLogMiddleware(silent))
    await request(AccessLogMiddleware(cut_short))
    first, second = access_lines(lines)
    assert (first["error.type"], first["http.response.status_code"]) == ("incomplete_response", 500)
    assert (second["error.type"], second["http.response.status_code"]) == (
        "incomplete_response",
        200,
    )
    assert first["log_level"] == second["log_level"] == "error"


async def test_lifespan_passes_through_without_a_line(lines: list[dict[str, Any]]) -> None:
    session = await run_lifespan(wrapped(responding()))
    assert [m["type"] for m in session.messages] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert lines == []


# --------------------------------------------------------------------------------------
# Websockets


async def echo_ws(scope: Scope, receive: Receive, send: Send) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text") or "?"})


async def test_a_websocket_gives_one_line_with_duration_and_close_code(
    lines: list[dict[str, Any]],
) -> None:
    session = await websocket(
        wrapped(echo_ws), "/chat?token=s3cret", frames=["a", "b", Disconnect(1001)]
    )
    assert session.sent == ["a", "b"]
    line = the_line(lines)
    assert line["event"] == "websocket.connection"
    assert line["log_level"] == "info"
    expected = {
        "url.path": "/chat",
        "url.query": "token=[REDACTED]",
        "http.response.status_code": 101,
        "websocket.close_code": 1001,
        "websocket.messages_received": 2,
        "websocket.messages_sent": 2,
        "url.scheme": "ws",
    }
    assert expected.items() <= line.items()
    assert line["duration_ms"] >= 0


async def test_a_websocket_closed_before_accept_is_a_403(lines: list[dict[str, Any]]) -> None:
    async def deny(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1008})

    session = await websocket(wrapped(deny))
    assert not session.accepted
    line = the_line(lines)
    assert (line["http.response.status_code"], line["websocket.close_code"]) == (403, 1008)
    assert line["log_level"] == "warning"


async def test_a_websocket_denial_response_logs_its_status(lines: list[dict[str, Any]]) -> None:
    async def deny(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no"})

    session = await websocket(
        wrapped(deny), extensions={"websocket.http.response": {}}, frames=["never"]
    )
    assert session.denial is not None
    assert the_line(lines)["http.response.status_code"] == 401


async def test_a_websocket_closed_by_the_app_with_1011_is_an_error(
    lines: list[dict[str, Any]],
) -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1011})

    await websocket(wrapped(failing))
    line = the_line(lines)
    assert (line["websocket.close_code"], line["log_level"]) == (1011, "error")


async def test_a_websocket_exception_is_logged_and_propagates(
    lines: list[dict[str, Any]],
) -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise KeyError("ws")

    with pytest.raises(KeyError):
        await websocket(wrapped(failing))
    line = the_line(lines)
    assert (line["error.type"], line["log_level"]) == ("KeyError", "error")
    assert line["http.response.status_code"] == 500


async def test_a_websocket_send_to_a_gone_client_is_a_disconnect(
    lines: list[dict[str, Any]],
) -> None:
    async def gone(message: Message) -> None:
        raise ClientDisconnected("gone")

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
    with pytest.raises(ClientDisconnected):
        await AccessLogMiddleware(app)(scope, receive, gone)
    line = the_line(lines)
    assert line["disconnected"] is True and "error.type" not in line


async def test_websocket_cancellation_is_logged_then_propagates(
    lines: list[dict[str, Any]],
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await anyio.sleep_forever()

    cancel_scope = anyio.CancelScope()

    async def cancelling(scope: Scope, receive: Receive, send: Send) -> None:
        cancel_scope.cancel()
        await app(scope, receive, send)

    with cancel_scope:
        await websocket(wrapped(cancelling))
    assert cancel_scope.cancelled_caught
    line = the_line(lines)
    assert line["log_level"] == "warning"
    assert line["error.type"] in ("CancelledError", "Cancelled")


async def test_websockets_can_be_left_out(lines: list[dict[str, Any]]) -> None:
    await websocket(wrapped(echo_ws, websockets=False), frames=["a"])
    assert lines == []


# --------------------------------------------------------------------------------------
# Context: request id, trace ids, contextvars


def logging_app(logger_name: str = "app") -> ASGIApp:
    logger = structlog.get_logger(logger_name)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        logger.info("inside")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def test_the_apps_own_lines_carry_the_request_id_of_the_access_line(
    lines: list[dict[str, Any]],
) -> None:
    app = enforce(RequestIDMiddleware(wrapped(logging_app())))
    response = await request(app)
    inside = [line for line in lines if line["event"] == "inside"]
    request_id = response.header("x-request-id")
    assert request_id
    assert [line["request_id"] for line in inside] == [request_id]
    assert the_line(lines)["request_id"] == request_id


async def test_the_request_id_is_bound_here_when_request_id_middleware_binds_nothing(
    lines: list[dict[str, Any]],
) -> None:
    app = enforce(RequestIDMiddleware(wrapped(logging_app()), log_key=None))
    response = await request(app)
    [inside] = [line for line in lines if line["event"] == "inside"]
    assert inside["request_id"] == response.header("x-request-id")
    assert structlog.contextvars.get_contextvars() == {}


async def test_nothing_is_bound_with_bind_contextvars_off(lines: list[dict[str, Any]]) -> None:
    app = enforce(RequestIDMiddleware(wrapped(logging_app(), bind_contextvars=False), log_key=None))
    response = await request(app)
    [inside] = [line for line in lines if line["event"] == "inside"]
    assert "request_id" not in inside
    assert the_line(lines)["request_id"] == response.header("x-request-id")


async def test_context_is_restored_after_success_error_and_between_requests(
    lines: list[dict[str, Any]],
) -> None:
    structlog.contextvars.bind_contextvars(request_id="outer")

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    stack = enforce(RequestIDMiddleware(wrapped(responding()), log_key=None))
    failing_stack = enforce(RequestIDMiddleware(wrapped(failing), log_key=None))
    await request(stack)
    assert structlog.contextvars.get_contextvars() == {"request_id": "outer"}
    with pytest.raises(RuntimeError):
        await request(failing_stack)
    assert structlog.contextvars.get_contextvars() == {"request_id": "outer"}
    await request(stack)
    ids = [line["request_id"] for line in access_lines(lines)]
    assert len(set(ids)) == 3 and "outer" not in ids


async def test_an_outer_span_is_bound_and_logged(lines: list[dict[str, Any]]) -> None:
    with tracer.start_as_current_span("server") as span:
        await request(wrapped(logging_app()))
        context = span.get_span_context()
    trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
    [inside] = [line for line in lines if line["event"] == "inside"]
    assert (inside["trace_id"], inside["span_id"]) == (trace_id, span_id)
    line = the_line(lines)
    assert (line["trace_id"], line["span_id"]) == (trace_id, span_id)
    assert "trace_id" not in structlog.contextvars.get_contextvars()


async def test_a_span_opened_inside_is_the_one_logged(lines: list[dict[str, Any]]) -> None:
    seen: dict[str, str] = {}

    async def traced(scope: Scope, receive: Receive, send: Send) -> None:
        with tracer.start_as_current_span("handler") as span:
            seen["span_id"] = f"{span.get_span_context().span_id:016x}"
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body"})

    await request(wrapped(traced))
    line = the_line(lines)
    assert line["span_id"] == seen["span_id"]
    assert len(line["trace_id"]) == 32


async def test_trace_ids_can_be_left_out(lines: list[dict[str, Any]]) -> None:
    with tracer.start_as_current_span("server"):
        await request(wrapped(logging_app(), trace_ids=False))
    [inside] = [line for line in lines if line["event"] == "inside"]
    assert "trace_id" not in inside and "trace_id" not in the_line(lines)


async def test_the_client_is_the_one_proxy_headers_resolved(lines: list[dict[str, Any]]) -> None:
    app = enforce(ProxyHeadersMiddleware(wrapped(responding()), trusted_proxies="127.0.0.1"))
    await request(app, headers={"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"})
    line = the_line(lines)
    assert line["client.address"] == "203.0.113.7"
    assert "client.port" not in line  # the proxy gave none: port 0 means unknown
    assert line["network.peer.address"] == "127.0.0.1"
    assert line["url.scheme"] == "https"


async def test_a_unix_socket_client_has_no_address(lines: list[dict[str, Any]]) -> None:
    await request(wrapped(responding()), client=None, http_version="2")
    line = the_line(lines)
    assert "client.address" not in line and "client.port" not in line
    assert line["network.protocol.version"] == "2"


# --------------------------------------------------------------------------------------
# Route templates


async def endpoint(_: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


starlette_app = Starlette(
    routes=[
        Route("/items/{item_id:int}", endpoint),
        Mount("/api", app=Starlette(routes=[Route("/users/{uid}", endpoint)])),
        Mount("/static", app=PlainTextResponse("file")),
    ]
)


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/items/42", "/items/{item_id}"),
        ("/api/users/ann", "/api/users/{uid}"),
        ("/static/css/site.css", "/static/{path}"),
        ("/nowhere", None),
    ],
)
async def test_the_route_template_starlette_matched(
    lines: list[dict[str, Any]], path: str, template: str | None
) -> None:
    await request(wrapped(starlette_app), "GET", path)
    line = the_line(lines)
    assert line.get("http.route") == template
    assert line["url.path"] == path


async def test_the_route_template_litestar_leaves(lines: list[dict[str, Any]]) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["path_template"] = "/items/{item_id:int}"  # as Litestar's router does
        await responding()(scope, receive, send)

    await request(wrapped(app), "GET", "/items/1")
    assert the_line(lines)["http.route"] == "/items/{item_id:int}"


async def test_a_route_object_with_only_a_path(lines: list[dict[str, Any]]) -> None:
    class PlainRoute:
        path = "/plain/{id}"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = PlainRoute()
        await responding()(scope, receive, send)

    await request(wrapped(app), "GET", "/plain/1")
    assert the_line(lines)["http.route"] == "/plain/{id}"


# --------------------------------------------------------------------------------------
# Levels, slow requests, sampling, exclusions


@pytest.mark.parametrize(
    ("status", "options", "level"),
    [
        (200, {}, "info"),
        (302, {}, "info"),
        (404, {}, "warning"),
        (503, {}, "error"),
        (404, {"status_levels": {404: "info"}}, "info"),
        (404, {"status_levels": {"4xx": "error", "404": "debug"}}, "debug"),
        (418, {"status_levels": {"4xx": "error", "404": "debug"}}, "error"),
        (200, {"status_levels": {"2xx": "DEBUG"}}, "debug"),
    ],
)
async def test_levels_by_status(
    lines: list[dict[str, Any]], status: int, options: dict[str, Any], level: str
) -> None:
    await request(wrapped(responding(status), **options))
    assert the_line(lines)["log_level"] == level


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The middleware's clock, moved by hand: durations without real waiting."""
    now = [1000.0]
    monkeypatch.setattr(access_log_module, "_now", lambda: now[0])
    return now


def taking(clock: list[float], seconds: float, status: int = 200) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        clock[0] += seconds
        await responding(status)(scope, receive, send)

    return app


async def test_a_slow_request_is_marked_and_raised(
    lines: list[dict[str, Any]], clock: list[float]
) -> None:
    await request(wrapped(taking(clock, 0.5), slow_threshold=0.5))
    await request(wrapped(taking(clock, 2.0, 500), slow_threshold=0.5))
    await request(wrapped(taking(clock, 0.4), slow_threshold=0.5, slow_level="error"))
    slow, slow_error, fast = access_lines(lines)
    assert (slow["slow"], slow["log_level"], slow["duration_ms"]) == (True, "warning", 500.0)
    assert (slow_error["slow"], slow_error["log_level"]) == (True, "error")
    assert "slow" not in fast and fast["log_level"] == "info"
    assert fast["duration_ms"] == fast["ttfb_ms"] == 400.0


async def test_sampling_drops_only_unremarkable_lines(
    lines: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, clock: list[float]
) -> None:
    options: dict[str, Any] = {"sample_rate": 0.0, "slow_threshold": 1}
    await request(wrapped(responding(200), **options))
    await request(wrapped(responding(404), **options))
    await request(wrapped(responding(500), **options))
    await request(wrapped(taking(clock, 1.5), **options))
    with pytest.raises(ClientDisconnected):
        await request(wrapped(streaming, **options), body=b"abc", disconnect_after=2)
    await websocket(wrapped(echo_ws, **options))
    kept = access_lines(lines)
    assert [line.get("http.response.status_code") for line in kept] == [404, 500, 200, 200]
    assert kept[2]["slow"] is True and kept[3]["disconnected"] is True

    lines.clear()
    draws = iter([0.3, 0.7, 0.3])
    monkeypatch.setattr(access_log_module, "_random", lambda: next(draws))
    for _ in range(2):
        await request(wrapped(responding(), sample_rate=0.5))
    await websocket(wrapped(echo_ws, sample_rate=0.5))
    kept = access_lines(lines)
    assert [line["sample_rate"] for line in kept] == [0.5, 0.5]
    assert kept[1]["event"] == "websocket.connection"


async def test_excluded_paths_are_not_logged(lines: list[dict[str, Any]]) -> None:
    app = wrapped(responding(), exclude_paths="/health, /static/*")
    for path in ("/health", "/static/a.css", "/static/", "/healthz", "/"):
        await request(app, "GET", path)
    await websocket(wrapped(echo_ws, exclude_paths=["/ws"]))
    assert [line["url.path"] for line in access_lines(lines)] == ["/healthz", "/"]


async def test_a_timeout_answered_inside_is_logged_as_a_timeout(
    lines: list[dict[str, Any]],
) -> None:
    async def stuck(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep_forever()

    response = await request(wrapped(TimeoutMiddleware(stuck, total=0.05)))
    assert response.status == 504
    line = the_line(lines)
    assert (line["error.type"], line["http.response.status_code"]) == ("timeout", 504)
    assert line["log_level"] == "error"


async def test_the_timeout_dict_is_handed_down_or_shared(lines: list[dict[str, Any]]) -> None:
    seen: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        info = scope["asgikit.timeout"]
        seen.append(info)
        if scope["path"] == "/late":
            info.update({"error.type": "timeout", "limit": "total", "status": None})
            raise TimeoutError("aborted mid-response")
        await responding(504 if scope["path"] == "/own-504" else 200)(scope, receive, send)

    shared: dict[str, Any] = {}
    await request(wrapped(app), "GET", "/own-504")
    await request(wrapped(app), "GET", "/ok", **{"asgikit.timeout": shared})
    with pytest.raises(TimeoutError):
        await request(wrapped(app), "GET", "/late")
    own, ok, late = access_lines(lines)
    assert "error.type" not in own and own["http.response.status_code"] == 504  # the app's
    assert seen[1] is shared and "error.type" not in ok
    assert late["error.type"] == "timeout"


async def test_an_inner_access_log_shares_the_outer_ones_chain_and_dict(
    lines: list[dict[str, Any]],
) -> None:
    scopes: list[Scope] = []
    chains: list[list[Scope]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)
        chains.append(list(scope["asgikit.scope_chain"]))  # cleared once the request ends
        await responding()(scope, receive, send)

    await request(AccessLogMiddleware(AccessLogMiddleware(app)))
    [scope] = scopes
    # The outer one copied the scope once; the inner one passed that copy on as it was.
    assert [item is scope for item in chains[0]] == [True]
    assert isinstance(scope["asgikit.timeout"], dict)
    assert len(access_lines(lines)) == 2


# --------------------------------------------------------------------------------------
# Redaction, capture, truncation


async def test_sensitive_query_values_are_redacted(lines: list[dict[str, Any]]) -> None:
    await request(
        wrapped(responding(), redact_query_params=["pin", "x_goog_*"]),
        "GET",
        "/search?q=shoes&access_token=abc&SIG=s&API-Key=k&pin=1234&X-Goog-Date=1&pinx=2",
    )
    assert the_line(lines)["url.query"] == (
        "q=shoes&access_token=[REDACTED]&SIG=[REDACTED]&API-Key=[REDACTED]"
        "&pin=[REDACTED]&X-Goog-Date=[REDACTED]&pinx=2"
    )


async def test_the_referer_query_and_fragment_are_redacted(lines: list[dict[str, Any]]) -> None:
    await request(
        wrapped(responding()),
        headers={"referer": "https://idp.example/cb?state=1&code=x#access_token=secret"},
    )
    assert the_line(lines)["http.request.header.referer"] == (
        "https://idp.example/cb?state=1&code=x#access_token=[REDACTED]"
    )


async def test_captured_headers_with_sensitive_ones_redacted(
    lines: list[dict[str, Any]],
) -> None:
    app = responding(headers=[(b"set-cookie", b"a=1"), (b"x-cache", b"hit"), (b"x-cache", b"2")])
    await request(
        wrapped(
            app,
            capture_request_headers=["Authorization", "Accept", "X-Api-Key", "X-Missing"],
            capture_response_headers="set-cookie, x-cache",
            redact_headers=["x-api-key"],
        ),
        headers=[
            (b"authorization", b"Bearer hunter2"),
            (b"accept", b"text/html"),
            (b"x-api-key", b"k-123"),
            (b"cookie", b"session=abc"),
        ],
    )
    line = the_line(lines)
    assert line["http.request.header.authorization"] == "[REDACTED]"
    assert line["http.request.header.accept"] == "text/html"
    assert line["http.request.header.x-api-key"] == "[REDACTED]"
    assert line["http.response.header.set-cookie"] == "[REDACTED]"
    assert line["http.response.header.x-cache"] == "hit, 2"
    assert "http.request.header.x-missing" not in line
    rendered = repr(line)
    for secret in ("hunter2", "k-123", "session=abc", "a=1"):
        assert secret not in rendered


async def test_long_client_values_are_cut_with_a_marker(lines: list[dict[str, Any]]) -> None:
    await request(
        wrapped(responding(), max_field_length=32, capture_request_headers=["x-long"]),
        "GET",
        "/" + "p" * 100 + "?" + "q=" + "v" * 100,
        headers={"user-agent": "u" * 100, "referer": "r" * 100, "x-long": "l" * 100},
    )
    line = the_line(lines)
    assert line["url.path"] == "/" + "p" * 31 + "...[+69 chars]"
    assert line["url.query"] == "q=" + "v" * 30 + "...[+70 chars]"
    for key in ("user_agent.original", "http.request.header.referer", "http.request.header.x-long"):
        assert len(line[key]) <= 32 + len("...[+68 chars]") and line[key].endswith("chars]")


async def test_a_long_method_is_cut_too(lines: list[dict[str, Any]]) -> None:
    await request(wrapped(responding(), max_field_length=16), "X" * 40)
    assert the_line(lines)["http.request.method"] == "X" * 16 + "...[+24 chars]"


SENSITIVE_NAMES = st.sampled_from(
    ["token", "access_token", "Password", "client_secret", "api-key", "X-Amz-Signature", "sig"]
)
# Names and values that are not secrets: any latin-1 text without Z (secrets are Z-marked)
# and, for names, without what would split or escape them.
PLAIN_TEXT = st.text(alphabet=st.characters(codec="latin-1", exclude_characters="Zz"), max_size=12)
PLAIN_NAMES = st.text(
    alphabet=st.characters(codec="latin-1", exclude_characters="Zz&;#=%+"), max_size=12
)


def spelled(name: str, draw_plan: list[bool]) -> str:
    """*name* with some characters percent-encoded, as a client may send it."""
    return "".join(
        f"%{ord(char):02X}" if encode else char
        for char, encode in zip(name, draw_plan + [False] * len(name), strict=False)
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pairs=st.lists(
        st.tuples(
            st.one_of(SENSITIVE_NAMES, PLAIN_NAMES),
            st.lists(st.booleans(), max_size=8),
            PLAIN_TEXT,
        ),
        max_size=6,
    ),
    separators=st.lists(st.sampled_from(["&", ";", "#", "&&"]), min_size=6, max_size=6),
)
def test_no_sensitive_query_value_survives(
    pairs: list[tuple[str, list[bool], str]], separators: list[str]
) -> None:
    redactor = QueryRedactor(DEFAULT_REDACTED_QUERY_PARAMS)
    parts, secrets = [], []
    for i, ((name, plan, plain), separator) in enumerate(zip(pairs, separators, strict=False)):
        sensitive = redactor.is_sensitive(name)
        secret = f"ZZ{i}Q"
        value = secret if sensitive else plain
        if sensitive:
            secrets.append(secret)
        parts.append(f"{spelled(name, plan)}={value}{separator}")
    query = "".join(parts)
    redacted = redactor.redact(query)
    for secret in secrets:
        assert secret not in redacted
    assert redactor.redact_url(f"https://example.com/?{query}").endswith(redacted)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header_names=st.lists(
        st.sampled_from(
            ["authorization", "cookie", "proxy-authorization", "x-token", "accept", "x-a"]
        ),
        max_size=8,
    ),
    query_names=st.lists(SENSITIVE_NAMES, max_size=4),
)
def test_no_redacted_value_reaches_the_output(
    header_names: list[str], query_names: list[str]
) -> None:
    headers = [(name, f"ZZ{i}Q") for i, name in enumerate(header_names)]
    query = [(name, f"ZZq{i}Q") for i, name in enumerate(query_names)]
    stream = io.StringIO()
    asgikit.logging.configure(format="json", stream=stream, stdlib=False)
    try:
        captured = ["authorization", "cookie", "proxy-authorization", "x-token", "accept"]
        app = wrapped(
            responding(headers=[(b"set-cookie", b"ZZsetcookie")]),
            capture_request_headers=captured,
            capture_response_headers=["set-cookie"],
            redact_headers=["x-token"],
        )
        target = "/?" + "&".join(f"{name}={value}" for name, value in query)
        anyio.run(lambda: request(app, "GET", target, headers=headers))
    finally:
        structlog.reset_defaults()
    output = stream.getvalue()
    assert output.count("\n") == 1
    hidden = [value for name, value in headers if name not in ("accept", "x-a")]
    for value in [*hidden, *(value for _, value in query), "ZZsetcookie"]:
        assert value not in output


def test_truncate() -> None:
    assert truncate("abc", 3) == "abc"
    assert truncate("abcd", 3) == "abc...[+1 chars]"


# --------------------------------------------------------------------------------------
# The logger


async def test_a_given_logger_is_used(lines: list[dict[str, Any]]) -> None:
    calls: list[tuple[str, str, dict[str, Any]]] = []

    class Recorder:
        def __getattr__(self, level: str) -> Any:
            return lambda event, **fields: calls.append((level, event, fields))

    await request(wrapped(responding(404), logger=Recorder()))
    [(level, event, fields)] = calls
    assert (level, event, fields["http.response.status_code"]) == ("warning", "http.request", 404)
    assert lines == []


def _recording_config(sink: list[str], *, cache: bool) -> None:
    """structlog set to record each line's event and level into *sink*."""

    def record(logger: Any, method: str, event: dict[str, Any]) -> str:
        sink.append(f"{method} {event['event']}")
        raise structlog.DropEvent

    structlog.configure(processors=[record], cache_logger_on_first_use=cache)


async def test_a_logger_structlog_caches_on_first_use_is_kept_as_the_proxy_keeps_it() -> None:
    first: list[str] = []
    later: list[str] = []
    _recording_config(first, cache=True)
    app = wrapped(responding(404))
    await request(app)
    _recording_config(later, cache=True)  # too late for a proxy that cached its logger
    await request(app)
    await request(wrapped(responding(500)))  # a new middleware takes the new one
    assert first == ["warning http.request", "warning http.request"]
    assert later == ["error http.request"]


async def test_a_cached_wrapper_without_every_level_method_still_logs() -> None:
    seen: list[str] = []

    class InfoToError(structlog.BoundLoggerBase):  # no debug, no critical
        def info(self, event: str, **fields: Any) -> Any:
            return self._proxy_to_logger("info", event, **fields)

        def warning(self, event: str, **fields: Any) -> Any:
            return self._proxy_to_logger("warning", event, **fields)

        def error(self, event: str, **fields: Any) -> Any:
            return self._proxy_to_logger("error", event, **fields)

    _recording_config(seen, cache=True)
    structlog.configure(wrapper_class=InfoToError)
    await request(wrapped(responding(404)))
    await request(wrapped(responding()))
    assert seen == ["warning http.request", "info http.request"]


async def test_a_logger_structlog_does_not_cache_follows_each_reconfiguration() -> None:
    first: list[str] = []
    later: list[str] = []
    _recording_config(first, cache=False)
    app = wrapped(responding(404))
    await request(app)
    _recording_config(later, cache=False)
    await request(app)
    assert first == ["warning http.request"]
    assert later == ["warning http.request"]


async def test_a_failing_logger_never_hides_the_apps_exception(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Broken:
        def __getattr__(self, level: str) -> Any:
            def log(event: str, **fields: Any) -> None:
                raise OSError("disk full")

            return log

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise LookupError("the app's")

    with pytest.raises(LookupError, match="the app's"):
        await request(wrapped(failing, logger=Broken()))
    assert "disk full" in capsys.readouterr().err
    with pytest.raises(OSError, match="disk full"):  # nothing else failed: it is seen
        await request(wrapped(responding(), logger=Broken()))


async def test_the_default_logger_follows_asgikit_logging_configure() -> None:
    stream = io.StringIO()
    asgikit.logging.configure(format="json", stream=stream, stdlib=False)
    try:
        await request(wrapped(responding()), "GET", "/x")
    finally:
        structlog.reset_defaults()
    [line] = stream.getvalue().splitlines()
    assert '"event":"http.request"' in line and '"url.path":"/x"' in line


# --------------------------------------------------------------------------------------
# Options


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"logger": logging.getLogger("x")}, TypeError, "structlog"),
        ({"status_levels": {404: "loud"}}, ValueError, "status_levels"),
        ({"status_levels": {"6xx": "info"}}, ValueError, "status_levels"),
        ({"status_levels": {True: "info"}}, ValueError, "status_levels"),
        ({"status_levels": [("404", "info")]}, TypeError, "status_levels"),
        ({"slow_threshold": 0}, ValueError, "slow_threshold"),
        ({"slow_threshold": "1"}, TypeError, "slow_threshold"),
        ({"slow_threshold": float("inf")}, ValueError, "slow_threshold"),
        ({"slow_level": "verbose"}, ValueError, "slow_level"),
        ({"exclude_paths": ["health"]}, ValueError, "exclude_paths"),
        ({"exclude_paths": ["/a*b"]}, ValueError, "exclude_paths"),
        ({"sample_rate": 1.5}, ValueError, "sample_rate"),
        ({"sample_rate": True}, TypeError, "sample_rate"),
        ({"redact_headers": ["bad header"]}, ValueError, "redact_headers"),
        ({"redact_query_params": ["a*b"]}, ValueError, "a\\*b"),
        ({"redact_query_params": ["*"]}, ValueError, "pattern"),
        ({"capture_request_headers": [1]}, TypeError, "capture_request_headers"),
        ({"capture_response_headers": ["x y"]}, ValueError, "capture_response_headers"),
        ({"max_field_length": 8}, ValueError, "max_field_length"),
        ({"max_field_length": 1.5}, TypeError, "max_field_length"),
    ],
)
def test_bad_options_fail_at_start_up(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        AccessLogMiddleware(responding(), **options)


def test_query_patterns_of_every_shape() -> None:
    redactor = QueryRedactor(["pin", "x_goog_*", "*_code", "*auth*"])
    sensitive = ["PIN", " pin ", "x-goog-date", "sms_code", "OAuthState", "p%69n", "my+auth"]
    plain = ["pins", "goog_x", "code_sms", "aut", "spin"]
    assert all(redactor.is_sensitive(name) for name in sensitive)
    assert not any(redactor.is_sensitive(name) for name in plain)
    assert QueryRedactor([]).redact("token=1") == "token=1"
    assert not QueryRedactor([]).is_sensitive("token")


def test_a_long_query_is_searched_first_and_redacted_alike() -> None:
    redactor = QueryRedactor(DEFAULT_REDACTED_QUERY_PARAMS)
    plain = "&".join(f"p{i}={i}" for i in range(12))
    assert redactor.redact(plain) is plain  # ruled out by the search: nothing split
    assert redactor.redact(plain + "&API-Key=k") == plain + "&API-Key=[REDACTED]"
    assert QueryRedactor([]).redact("token=1;sig=2") == "token=1;sig=2"


def test_a_question_mark_inside_a_referers_fragment_starts_no_query() -> None:
    redactor = QueryRedactor(DEFAULT_REDACTED_QUERY_PARAMS)
    url = "https://app.example/cb#access_token=abc?x=1"
    assert redactor.redact_url(url) == "https://app.example/cb#access_token=[REDACTED]"
    assert redactor.redact_url("https://app.example/p?q=1") == "https://app.example/p?q=1"


async def test_repeated_user_agent_and_referer_fields_log_the_first(
    lines: list[dict[str, Any]],
) -> None:
    await request(
        wrapped(responding()),
        headers=[
            ("referer", "https://a.example/#token=1"),
            ("user-agent", "first/1"),
            ("user-agent", "second/2"),
            ("referer", "https://b.example/"),
        ],
    )
    line = the_line(lines)
    assert line["user_agent.original"] == "first/1"
    assert line["http.request.header.referer"] == "https://a.example/#token=[REDACTED]"


def test_a_one_pair_query_is_redacted_alike_learnt_or_remembered() -> None:
    redactor = QueryRedactor(DEFAULT_REDACTED_QUERY_PARAMS)
    for _ in range(2):  # learnt, then from the name cache
        assert redactor.redact("Access-Token=abc") == "Access-Token=[REDACTED]"
        assert redactor.redact("access_token=") == "access_token="  # nothing to hide
        plain = "utm_source=news"
        assert redactor.redact(plain) is plain
        url = "https://a.example/p?sig=x"
        assert redactor.redact_url(url) == "https://a.example/p?sig=[REDACTED]"
    # Names never seen, beside the remembered ones, get their own answer, not a
    # remembered one's: the same name spelled otherwise, a longer name, another name.
    assert redactor.redact("ACCESS-TOKEN=abc") == "ACCESS-TOKEN=[REDACTED]"
    assert redactor.redact("Sig=x") == "Sig=[REDACTED]"
    for plain in ("signal=x", "utm_sources=x", "utm_medium=x"):
        assert redactor.redact(plain) is plain
    # Remembered and new names mixed in one query, in either order.
    assert redactor.redact("utm_source=a&sig=b&signal=c&Access-Token=d") == (
        "utm_source=a&sig=[REDACTED]&signal=c&Access-Token=[REDACTED]"
    )


def _retained_by_redact(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes allocated by ``asgikit.redact`` and still alive."""
    here = QueryRedactor.__init__.__code__.co_filename
    return sum(
        stat.size for stat in snapshot.statistics("filename") if stat.traceback[0].filename == here
    )


def _distinct_names(redactor: QueryRedactor, start: int, count: int) -> None:
    for i in range(start, start + count):
        # A new name on its own, and a new one beside a sensitive one.
        assert redactor.redact(f"name{i}=x") == f"name{i}=x"
        assert redactor.redact(f"token{i}=x&t%6Fken=y") == f"token{i}=x&t%6Fken=[REDACTED]"


def test_the_redactors_memory_stays_bounded_however_many_names() -> None:
    redactor = QueryRedactor(["token"])
    tracemalloc.start()
    try:
        _distinct_names(redactor, 0, 300)
        first = _retained_by_redact(tracemalloc.take_snapshot())
        _distinct_names(redactor, 300, 6000)
        second = _retained_by_redact(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
    # Twenty times the names, and what the redactor keeps does not grow with them (an
    # unbounded cache of names would hold about twenty times as much).
    assert second < first * 5 + 64 * 1024, (first, second)
    # However many names came, the answers stay right: old, new and repeated ones.
    _distinct_names(redactor, 0, 50)
    assert redactor.redact("a=1&b=&token") == "a=1&b=&token"
    assert redactor.redact("token=1") == "token=[REDACTED]"


async def test_trace_ids_are_logged_without_binding(lines: list[dict[str, Any]]) -> None:
    with tracer.start_as_current_span("server"):
        await request(wrapped(logging_app(), bind_contextvars=False))
    [inside] = [line for line in lines if line["event"] == "inside"]
    assert "trace_id" not in inside
    assert len(the_line(lines)["trace_id"]) == 32


async def test_a_websocket_carries_request_and_trace_ids(lines: list[dict[str, Any]]) -> None:
    app = enforce(RequestIDMiddleware(wrapped(echo_ws), log_key=None))
    with tracer.start_as_current_span("server") as span:
        await websocket(app, frames=["a"])
    line = the_line(lines)
    assert line["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert len(line["request_id"]) == 32
    assert structlog.contextvars.get_contextvars() == {}
    lines.clear()
    with tracer.start_as_current_span("server"):
        await websocket(wrapped(echo_ws, trace_ids=False))
    assert "trace_id" not in the_line(lines)


async def test_a_websocket_failing_after_accept_keeps_its_101(
    lines: list[dict[str, Any]],
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.close", "code": 4000})
        raise RuntimeError(message["type"])

    with pytest.raises(RuntimeError, match=r"websocket\.disconnect"):
        await websocket(wrapped(app), frames=[Disconnect(1001)])
    line = the_line(lines)
    assert (line["http.response.status_code"], line["websocket.close_code"]) == (101, 1001)
    assert line["log_level"] == "error"


def route_scope(route: Any = None, **keys: Any) -> Scope:
    scope: Scope = {"type": "http", "root_path": "", **keys}
    if route is not None:
        scope["route"] = route
    return scope


def test_route_templates_from_odd_scopes() -> None:
    class Path:
        path = "/p/{id}"

    class Nothing:
        pass

    assert route_template(route_scope(Nothing())) is None
    assert route_template(route_scope(Nothing(), path_template="/l/{id}")) == "/l/{id}"
    assert route_template(route_scope(Path(), app_root_path="/app", root_path="/app")) == "/p/{id}"
    assert route_template(route_scope(Path(), app_root_path="/app", root_path="/x")) == "/p/{id}"
    assert route_template(route_scope(Path(), app_root_path=None)) == "/p/{id}"
    assert route_template(route_scope()) is None
    # FastAPI's context for an included router's route: read only for that very route.
    route = Path()

    class Context:
        original_route = route
        starlette_route = None
        path_format = "/prefix/p/{id}"

    assert route_template(route_scope(route, fastapi={"effective_route_context": Context()})) == (
        "/prefix/p/{id}"
    )
    for state in ({"effective_route_context": Context()}, {}, "not a dict"):
        assert route_template(route_scope(Path(), fastapi=state)) == "/p/{id}"
    Context.path_format = ""  # nothing usable: the route's own
    assert route_template(route_scope(route, fastapi={"effective_route_context": Context()})) == (
        "/p/{id}"
    )


async def test_a_websocket_route_template_and_a_cancelled_handshake(
    lines: list[dict[str, Any]],
) -> None:
    async def chat(socket: WebSocket) -> None:
        await socket.accept()
        await socket.close()

    app = Starlette(routes=[WebSocketRoute("/rooms/{room}", chat)])
    await websocket(wrapped(app), "/rooms/7")
    assert the_line(lines)["http.route"] == "/rooms/{room}"

    lines.clear()
    cancel_scope = anyio.CancelScope()

    async def cancelled(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        cancel_scope.cancel()
        await anyio.sleep_forever()

    with cancel_scope:
        await websocket(wrapped(cancelled))
    line = the_line(lines)
    assert "http.response.status_code" not in line and line["log_level"] == "warning"


async def test_an_invalid_current_span_logs_no_ids(lines: list[dict[str, Any]]) -> None:
    with trace.use_span(trace.INVALID_SPAN):
        await request(wrapped(logging_app()))
    assert "trace_id" not in the_line(lines)


async def test_a_route_entry_without_a_template_is_left_out(lines: list[dict[str, Any]]) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = object()  # some framework's own route object
        if scope["type"] == "websocket":
            await echo_ws(scope, receive, send)
        else:
            await responding()(scope, receive, send)

    await request(wrapped(app))
    await websocket(wrapped(app))
    assert all("http.route" not in line for line in access_lines(lines))
