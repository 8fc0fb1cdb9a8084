"""Request ids beyond the process: ``asgikit.request_id.current()`` inside a request, and
the httpx and aiohttp hooks that forward the id and the W3C trace context to the
services this one calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import set_span_in_context

import asgikit.request_id
from asgikit.contract import enforce
from asgikit.middleware import RequestIDMiddleware
from asgikit.propagation import (
    aiohttp_trace_config,
    httpx_async_request_hook,
    httpx_request_hook,
    outgoing_headers,
)
from asgikit.testing import request, websocket
from asgikit.types import Receive, Scope, Send

httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.anyio

TRACER = TracerProvider().get_tracer("test")


@pytest.fixture
def traced() -> Iterator[str]:
    """A recording span current while the test runs; its traceparent."""
    span = TRACER.start_span("client")
    token = otel_context.attach(set_span_in_context(span))
    context = span.get_span_context()
    yield f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    otel_context.detach(token)
    span.end()


def echo_headers(request: Any) -> Any:
    return httpx.Response(200, json=dict(request.headers.items()))


async def test_current_is_the_request_id_inside_the_request_only() -> None:
    seen: list[tuple[str | None, str]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((asgikit.request_id.current(), asgikit.request_id.current_header()))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = enforce(RequestIDMiddleware(enforce(app), header_name="x-correlation-id"))
    await request(wrapped, "GET", "/", headers={"x-correlation-id": "abc-1"})
    assert seen == [("abc-1", "x-correlation-id")]
    assert asgikit.request_id.current() is None
    assert asgikit.request_id.current_header() == "x-request-id"
    wrapped = enforce(RequestIDMiddleware(enforce(app), log_key=None))
    await request(wrapped, "GET", "/")
    assert seen[1][0] is not None and seen[1][1] == "x-request-id"


async def test_several_inbound_names_the_first_listed_wins() -> None:
    ids: list[str | None] = []
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ids.append(asgikit.request_id.current())
        scopes.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    names = ["X-Request-ID", "x-correlation-id", "x-amzn-trace-id", "x-request-id"]
    wrapped = enforce(RequestIDMiddleware(enforce(app), header_name=names))
    both = {"x-correlation-id": "corr-1", "x-request-id": "req-1"}
    response = await request(wrapped, "GET", "/", headers=both)
    assert ids[-1] == "req-1"
    assert response.headers == [(b"x-request-id", b"req-1")]  # echoed under the first
    response = await request(wrapped, "GET", "/", headers={"x-amzn-trace-id": "Root=1-a"})
    assert ids[-1] == "Root=1-a"
    response = await request(wrapped, "GET", "/", headers={"x-correlation-id": "bad\x01"})
    assert ids[-1] != "bad\x01" and ids[-1] is not None  # invalid: a new one
    assert scopes[-1]["asgikit.request_id.rejected"] == "bad\\x01"
    await request(wrapped, "GET", "/")
    assert len(set(ids)) == 4


async def test_several_names_for_a_websocket() -> None:
    ids: list[str | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ids.append(asgikit.request_id.current())
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})

    wrapped = enforce(RequestIDMiddleware(enforce(app), header_name=["a-id", "b-id"]))
    await websocket(wrapped, "/ws", headers={"b-id": "ws-1"})
    assert ids == ["ws-1"]


@pytest.mark.parametrize("value", [[], "", ["ok", ""], ["bad name"], 42, [42]])
def test_header_name_is_checked(value: Any) -> None:
    with pytest.raises((TypeError, ValueError), match=r"^header_name"):
        RequestIDMiddleware(enforce(lambda s, r, w: None), header_name=value)


def test_outgoing_headers_outside_a_request_and_a_trace() -> None:
    assert outgoing_headers() == {}


def test_outgoing_headers_carry_the_id_and_the_trace(traced: str) -> None:
    token = asgikit.request_id.request_id_var.set(("rid-7", "x-correlation-id"))
    try:
        assert outgoing_headers() == {"traceparent": traced, "x-correlation-id": "rid-7"}
    finally:
        asgikit.request_id.request_id_var.reset(token)


def with_id(request_id: str) -> Any:
    return asgikit.request_id.request_id_var.set((request_id, "x-request-id"))


def test_httpx_sync_hook(traced: str) -> None:
    token = with_id("rid-1")
    try:
        transport = httpx.MockTransport(echo_headers)
        hooks = {"request": [httpx_request_hook]}
        with httpx.Client(transport=transport, event_hooks=hooks) as client:
            sent = client.get("http://b.test/").json()
            kept = client.get("http://b.test/", headers={"X-Request-ID": "own"}).json()
    finally:
        asgikit.request_id.request_id_var.reset(token)
    assert sent["x-request-id"] == "rid-1"
    assert sent["traceparent"] == traced
    assert kept["x-request-id"] == "own"  # the caller's header is left as it is


async def test_httpx_async_hook(traced: str) -> None:
    token = with_id("rid-2")
    try:
        transport = httpx.MockTransport(echo_headers)
        hooks = {"request": [httpx_async_request_hook]}
        async with httpx.AsyncClient(transport=transport, event_hooks=hooks) as client:
            sent = (await client.get("http://b.test/")).json()
    finally:
        asgikit.request_id.request_id_var.reset(token)
    assert (sent["x-request-id"], sent["traceparent"]) == ("rid-2", traced)


def test_aiohttp_trace_config(traced: str) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    from aiohttp import web

    async def main() -> dict[str, str]:
        async def handler(request: Any) -> Any:
            return web.json_response(dict(request.headers))

        application = web.Application()
        application.router.add_get("/", handler)
        runner = web.AppRunner(application)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        token = with_id("rid-3")
        try:
            configs = [aiohttp_trace_config()]
            async with (
                aiohttp.ClientSession(trace_configs=configs) as session,
                session.get(f"http://127.0.0.1:{port}/") as answer,
            ):
                seen: dict[str, str] = await answer.json()
                return seen
        finally:
            asgikit.request_id.request_id_var.reset(token)
            await runner.cleanup()

    # aiohttp runs on asyncio only; the span is current in this thread's context.
    sent = asyncio.run(main())
    assert sent["X-Request-ID"] == "rid-3" or sent.get("x-request-id") == "rid-3"
    assert sent.get("Traceparent", sent.get("traceparent")) == traced
