"""The JSON the inspector's page reads: its shape, the access log's redaction, the spans."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode

from asgikit.middleware.inspector.records import MAX_HEADERS
from asgikit.redact import ALWAYS_REDACTED_HEADERS, REDACTED
from asgikit.types import Receive, Scope, Send

from .test_inspector import (  # the fixture: autouse here too
    _log_hooks_released,  # noqa: F401
    detail,
    get,
    hello,
    inspector,
    listed,
)

pytestmark = pytest.mark.anyio

SUMMARY_KEYS = {
    "id",
    "time",
    "method",
    "path",
    "route",
    "status",
    "duration_ms",
    "size",
    "request_id",
    "error",
    "trace_id",
    "kind",
    "received",
    "logs",
    "log_level",
}
DETAIL_KEYS = SUMMARY_KEYS | {
    "fields",
    "request_headers",
    "response_headers",
    "exception",
    "tracing",
    "spans",
    "log_lines",
    "logs_dropped",
    "curl",
}
SPAN_KEYS = {
    "name",
    "span_id",
    "parent_id",
    "kind",
    "start_ms",
    "duration_ms",
    "status",
    "status_description",
    "scope",
    "attributes",
    "events",
}


def traced_app(provider: TracerProvider) -> Any:
    tracer = provider.get_tracer("shop", "1.0")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        with tracer.start_as_current_span("handler") as handler:
            handler.set_attribute("app.user", "ada")
            handler.set_attribute("app.tags", ["a", "b"])
            handler.set_attribute("app.long", "y" * 500)
            with tracer.start_as_current_span("db.query") as query:
                query.add_event("rows", {"count": 3})
                query.set_status(Status(StatusCode.ERROR, "slow disk"))
            await hello(scope, receive, send)

    return app


async def test_summary_and_detail_shapes() -> None:
    provider = TracerProvider()
    app, _ = inspector(traced_app(provider), tracer_provider=provider, max_field_length=100)
    await get(app, "/items?page=2", headers={"user-agent": "probe/1"})
    [row] = await listed(app)
    assert set(row) == SUMMARY_KEYS
    assert isinstance(row["time"], float) and isinstance(row["duration_ms"], float)
    assert row["trace_id"] is not None and len(row["trace_id"]) == 32
    found = await detail(app, 1)
    assert set(found) == DETAIL_KEYS
    assert {key: found[key] for key in SUMMARY_KEYS} == row
    assert found["tracing"] is True and found["exception"] is None
    assert found["fields"]["url.query"] == "page=2"
    assert found["fields"]["user_agent.original"] == "probe/1"
    assert found["fields"]["trace_id"] == row["trace_id"]
    handler, query = found["spans"]
    assert set(handler) == SPAN_KEYS == set(query)
    assert query["parent_id"] == handler["span_id"] == found["fields"]["span_id"]
    assert handler["parent_id"] is None and handler["scope"] == "shop"
    assert handler["kind"] == "INTERNAL" and handler["status"] == "UNSET"
    assert handler["attributes"]["app.user"] == "ada"
    assert handler["attributes"]["app.tags"] == ["a", "b"]
    assert handler["attributes"]["app.long"] == "y" * 100 + "...[+400 chars]"
    assert query["status"] == "ERROR" and query["status_description"] == "slow disk"
    [event] = query["events"]
    assert event["name"] == "rows" and event["attributes"] == {"count": 3}
    assert 0 <= handler["start_ms"] <= query["start_ms"] <= event["offset_ms"]
    assert query["start_ms"] + query["duration_ms"] <= handler["start_ms"] + handler["duration_ms"]
    assert handler["duration_ms"] <= found["duration_ms"]


async def test_headers_are_redacted_as_in_the_access_log() -> None:
    app, _ = inspector(redact_headers=["X-Api-Key"], redact_query_params=["session"])
    secrets = {name: "s3cret" for name in ALWAYS_REDACTED_HEADERS if name != "set-cookie"}
    await get(
        app,
        "/login?session=abc&password=hunter2&next=/home",
        headers={
            **secrets,
            "x-api-key": "k3y",
            "referer": "http://127.0.0.1:8000/start?access_token=t0k&q=1",
            "accept": "text/html",
        },
    )
    found = await detail(app, 1)
    request_headers = dict(found["request_headers"])
    for name in secrets:
        assert request_headers[name] == REDACTED
    assert request_headers["x-api-key"] == REDACTED
    assert request_headers["accept"] == "text/html"
    assert request_headers["referer"] == f"http://127.0.0.1:8000/start?access_token={REDACTED}&q=1"
    assert dict(found["response_headers"])["set-cookie"] == REDACTED
    assert found["fields"]["url.query"] == f"session={REDACTED}&password={REDACTED}&next=/home"
    text = str(found)
    for secret in ("s3cret", "k3y", "t0k", "hunter2", "sid="):
        assert secret not in text


async def test_long_and_many_headers_are_bounded() -> None:
    app, _ = inspector(max_field_length=32)
    many = [(f"x-h{i}", "v") for i in range(MAX_HEADERS + 20)]
    await get(app, "/" + "p" * 100, headers=[("x-long", "z" * 200), *many])
    found = await detail(app, 1)
    shown = found["request_headers"]
    assert len(shown) == MAX_HEADERS + 1
    assert shown[-1] == ["...", "[+22 headers]"]  # host, x-long and 120 more: 122 in all
    assert dict(shown)["x-long"] == "z" * 32 + "...[+168 chars]"
    assert found["path"] == "/" + "p" * 31 + "...[+69 chars]"


async def test_an_outer_span_gets_a_negative_offset_and_other_requests_spans_are_left_out() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("outer")
    app, _ = inspector(traced_app(provider), tracer_provider=provider)
    # One trace, two requests (a client propagating its trace id): each request shows
    # only the spans that overlap it.
    with tracer.start_as_current_span("client") as client:
        await get(app, "/first")
        await get(app, "/second")
    first, second = await detail(app, 1), await detail(app, 2)
    assert first["trace_id"] == second["trace_id"] == f"{client.get_span_context().trace_id:032x}"
    first_ids = {s["span_id"] for s in first["spans"] if s["name"] != "client"}
    second_ids = {s["span_id"] for s in second["spans"] if s["name"] != "client"}
    assert len(first_ids) == len(second_ids) == 2 and not first_ids & second_ids
    [outer] = [s for s in first["spans"] if s["name"] == "client"]
    assert outer["start_ms"] < 0  # it began before the request reached the inspector


async def test_the_tracing_middleware_server_span_is_the_waterfall_root() -> None:
    tracing = pytest.importorskip("asgikit.middleware.tracing")
    from opentelemetry.sdk.metrics import MeterProvider

    provider = TracerProvider()
    traced = tracing.TracingMiddleware(
        traced_app(provider), tracer_provider=provider, meter_provider=MeterProvider()
    )
    app, _ = inspector(traced, tracer_provider=provider)
    await get(app, "/items")
    spans = (await detail(app, 1))["spans"]
    by_id = {s["span_id"]: s for s in spans}
    [server] = [s for s in spans if s["kind"] == "SERVER"]
    assert server["parent_id"] is None and server["scope"] == "asgikit"
    handler = next(s for s in spans if s["name"] == "handler")
    assert by_id[handler["parent_id"]] is server
