"""TracingMiddleware's hooks: request_hook, response_hook, metric_attributes.

Each is called once, sees what it should (the answers asgikit makes itself included), and
a hook that raises changes nothing for the client: same status, headers and body, the
span still exported, the metric still recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Span

from asgikit.contract import enforce
from asgikit.middleware import (
    BodyLimitMiddleware,
    ConcurrencyLimitMiddleware,
    CORSMiddleware,
    RateLimitMiddleware,
    TimeoutMiddleware,
)
from asgikit.middleware.tracing import STREAM_DURATION, STREAM_TIME_TO_FIRST_BYTE
from asgikit.scopes import derive_scope
from asgikit.testing import request, websocket
from asgikit.types import ASGIApp, Message, Receive, Scope, Send
from tests.middleware.test_tracing import Telemetry, responder

pytestmark = pytest.mark.anyio


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


def broken(*args: Any) -> Any:
    raise RuntimeError("the hook is broken")


async def test_hooks_add_attributes_once(telemetry: Telemetry) -> None:
    calls: list[str] = []

    def on_request(span: Span, scope: Scope) -> None:
        calls.append("request")
        span.set_attribute("tenant", dict(scope["headers"])[b"x-tenant"].decode())

    def on_response(span: Span, message: Message) -> None:
        calls.append("response")
        span.set_attribute("response.kind", message["type"])

    app = telemetry.wrap(
        responder(body=b"hello"), request_hook=on_request, response_hook=on_response
    )
    response = await request(app, "GET", "/", headers={"x-tenant": "acme"})
    assert response.status == 200
    assert calls == ["request", "response"]
    attributes = telemetry.span().attributes or {}
    assert attributes["tenant"] == "acme"
    assert attributes["response.kind"] == "http.response.start"


async def test_raising_hooks_change_nothing_for_the_client(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    headers = [(b"content-type", b"text/plain"), (b"x-app", b"1")]
    plain = await request(enforce(responder(201, b"body", headers)), "GET", "/")
    app = telemetry.wrap(
        responder(201, b"body", headers),
        request_hook=broken,
        response_hook=broken,
        metric_attributes=broken,
        traceresponse=True,
    )
    with caplog.at_level(logging.WARNING, logger="asgikit.hooks"):
        traced = await request(app, "GET", "/")
    assert (traced.status, traced.body) == (plain.status, plain.body)
    assert traced.headers[: len(headers)] == plain.headers
    assert [name for name, _ in traced.headers][-1] == b"traceresponse"  # still added
    assert telemetry.span().attributes["http.response.status_code"] == 201  # type: ignore[index]
    assert telemetry.duration().count == 1
    reported = {r.getMessage().split(" raised")[0] for r in caplog.records}
    assert reported == {
        "TracingMiddleware.request_hook",
        "TracingMiddleware.response_hook",
        "TracingMiddleware.metric_attributes",
    }


async def test_metric_attributes_reach_the_duration_but_never_replace_ours(
    telemetry: Telemetry,
) -> None:
    seen: list[Scope] = []

    def tenant(scope: Scope) -> Mapping[str, Any]:
        seen.append(scope)
        return {"tenant": scope.get("tenant", "none"), "http.request.method": "FORGED"}

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        # A layer inside adds to its own copy: the hook sees the innermost scope.
        await responder()(derive_scope(scope, {"tenant": "acme"}), receive, send)

    app = telemetry.wrap(inner, metric_attributes=tenant)
    await request(app, "GET", "/")
    assert len(seen) == 1
    point = telemetry.duration()
    assert point.attributes["tenant"] == "acme"
    assert point.attributes["http.request.method"] == "GET"
    assert "tenant" not in (telemetry.span().attributes or {})  # metrics only


async def test_metric_attributes_that_are_no_mapping_are_contained(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    app = telemetry.wrap(responder(), metric_attributes=lambda scope: ["tenant"])
    with caplog.at_level(logging.WARNING, logger="asgikit.hooks"):
        assert (await request(app, "GET", "/")).status == 200
    assert "tenant" not in telemetry.duration().attributes
    assert "not a mapping" in caplog.text


async def test_hooks_are_not_called_for_a_span_that_does_not_record() -> None:
    unsampled = Telemetry(sampler=ALWAYS_OFF)
    calls: list[str] = []
    app = unsampled.wrap(
        responder(),
        request_hook=lambda span, scope: calls.append("request"),
        response_hook=lambda span, message: calls.append("response"),
        metric_attributes=lambda scope: {"metric": "yes"},
    )
    await request(app, "GET", "/")
    assert calls == []
    assert unsampled.duration().attributes["metric"] == "yes"  # metrics are not sampled


async def test_request_hook_on_a_websocket(telemetry: Telemetry) -> None:
    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})

    def on_request(span: Span, scope: Scope) -> None:
        span.set_attribute("scope.type", scope["type"])

    app = telemetry.wrap(echo, request_hook=on_request)
    await websocket(app, "/ws")
    assert (telemetry.span().attributes or {})["scope.type"] == "websocket"
    app = telemetry.wrap(echo, request_hook=broken)
    session = await websocket(app, "/ws")
    assert session.close_code == 1000


@pytest.mark.parametrize("option", ["request_hook", "response_hook", "metric_attributes"])
def test_a_hook_must_be_callable(option: str) -> None:
    with pytest.raises(TypeError, match=f"^{option}: expected a callable"):
        Telemetry().wrap(responder(), **{option: "not callable"})


def _answers() -> dict[int, tuple[ASGIApp, dict[str, Any]]]:
    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(5)

    app = enforce(responder())
    return {
        429: (RateLimitMiddleware(app, rate="1/hour"), {}),
        504: (TimeoutMiddleware(enforce(slow), total=0.05), {}),
        403: (
            CORSMiddleware(app, allow_origins=["https://ok.example"]),
            {
                "method": "OPTIONS",
                "headers": {
                    "origin": "https://evil.example",
                    "access-control-request-method": "GET",
                },
            },
        ),
        413: (
            BodyLimitMiddleware(app, max_body_size=4),
            {"method": "POST", "body": b"0123456789", "headers": {"content-length": "10"}},
        ),
    }


@pytest.mark.parametrize("status", [429, 504, 403, 413])
async def test_answers_asgikit_makes_go_through_the_hooks(
    status: int, telemetry: Telemetry
) -> None:
    inner, how = _answers()[status]
    seen: list[int] = []
    app = telemetry.wrap(inner, response_hook=lambda span, message: seen.append(message["status"]))
    method = how.pop("method", "GET")
    if status == 429:  # the one request the rate allows
        assert (await request(app, method, "/", **how)).status == 200
        seen.clear()
        telemetry.exporter.clear()
    response = await request(app, method, "/", **how)
    assert response.status == status
    assert seen == [status]
    assert (telemetry.span().attributes or {}).get("asgikit.decision") is not None


async def test_a_shed_request_goes_through_the_hooks(telemetry: Telemetry) -> None:
    release = anyio.Event()

    async def held(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()
        await responder()(scope, receive, send)

    seen: list[int] = []
    limited = ConcurrencyLimitMiddleware(enforce(held), max_concurrency=1, queue_size=0)
    app = telemetry.wrap(
        limited, response_hook=lambda span, message: seen.append(message["status"])
    )
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await request(app, "GET", "/")).status)

    async with anyio.create_task_group() as group:
        group.start_soon(one)
        await anyio.sleep(0.05)
        statuses.append((await request(app, "GET", "/")).status)
        release.set()
    assert sorted(statuses) == [200, 503]
    assert sorted(seen) == [200, 503]


async def test_metric_attributes_reach_the_websocket_stream_points(telemetry: Telemetry) -> None:
    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        scope = derive_scope(scope, {"tenant": "acme"})  # a layer inside: its own copy
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})

    def tenant(scope: Scope) -> Mapping[str, Any]:
        return {"tenant": scope.get("tenant", "none"), "http.request.method": "FORGED"}

    await websocket(telemetry.wrap(inner, metric_attributes=tenant), "/ws")
    for name in (STREAM_DURATION, STREAM_TIME_TO_FIRST_BYTE):
        [point] = telemetry.points(name)
        assert point.attributes["tenant"] == "acme"
        assert point.attributes["http.request.method"] == "GET"  # ours win


async def answer_ws(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    if scope["path"] == "/refuse":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": 1000})


@pytest.mark.parametrize(
    ("path", "answered"), [("/ws", "websocket.accept"), ("/refuse", "websocket.close")]
)
async def test_response_hook_sees_a_websocket_handshake_answer(
    telemetry: Telemetry, path: str, answered: str
) -> None:
    seen: list[str] = []
    app = telemetry.wrap(answer_ws, response_hook=lambda span, m: seen.append(m["type"]))
    await websocket(app, path)
    assert seen == [answered]  # once: the close after an accept is no answer
    session = await websocket(telemetry.wrap(answer_ws, response_hook=broken), path)
    assert session.close_code == (1000 if path == "/ws" else 1008)  # contained


DENIALS = {"websocket.http.response": {}}


async def test_asgikit_websocket_refusals_go_through_response_hook(telemetry: Telemetry) -> None:
    seen: list[Any] = []
    cors = CORSMiddleware(
        enforce(answer_ws), allow_origins=["https://ok.example"], check_websocket_origin=True
    )
    app = telemetry.wrap(cors, response_hook=lambda span, m: seen.append((m["type"], m["status"])))
    session = await websocket(
        app, "/ws", headers={"origin": "https://evil.example"}, extensions=DENIALS
    )
    denial = session.denial
    assert denial is not None and denial.status == 403
    assert seen == [("websocket.http.response.start", 403)]
