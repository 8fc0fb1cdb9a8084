"""RequestIDMiddleware: validation, generation, scope, structlog binding, echo."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgikit.contract import enforce
from asgikit.middleware import RequestIDMiddleware
from asgikit.middleware.request_id import (
    REJECTED_SCOPE_KEY,
    SCOPE_KEY,
    default_validator,
    uuid7_hex,
)
from asgikit.testing import lifespan, request, run_lifespan, websocket, websocket_scope
from asgikit.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.anyio

seen: list[dict[str, Any]] = []


def recording_app(headers: list[tuple[bytes, bytes]] | None = None) -> ASGIApp:
    """Records the id in the scope and structlog's context while handling the request."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append(
            {
                "id": scope.get(SCOPE_KEY),
                "rejected": scope.get(REJECTED_SCOPE_KEY),
                "log": structlog.contextvars.get_contextvars().get("request_id"),
            }
        )
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept", "headers": []})
            await send({"type": "websocket.close"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers or []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def wrapped(app: ASGIApp | None = None, **options: Any) -> ASGIApp:
    return enforce(RequestIDMiddleware(enforce(app or recording_app()), **options))


@pytest.fixture(autouse=True)
def _clean() -> None:
    seen.clear()
    structlog.contextvars.clear_contextvars()


async def test_generates_a_uuid7_and_echoes_it_once() -> None:
    response = await request(wrapped())
    [record] = seen
    assert uuid.UUID(record["id"]).version == 7
    assert response.header_values("x-request-id") == [record["id"]]
    assert record["log"] == record["id"]


async def test_each_request_gets_its_own_id() -> None:
    for _ in range(3):
        await request(wrapped())
    ids = [r["id"] for r in seen]
    assert len(set(ids)) == 3


@pytest.mark.parametrize(
    "incoming",
    [
        "f3a1c0de9b8e4c2d8a6b5e4f3a2b1c0d",  # nginx $request_id
        "0b2d6c2e-4a8b-4f7e-9c1d-2e3f4a5b6c7d",  # UUID
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",  # ULID
        "Root=1-5759e988-bd862e3fe1be46a994272793",  # AWS X-Amzn-Trace-Id style
        "a" * 128,
    ],
)
async def test_accepts_valid_incoming_ids(incoming: str) -> None:
    response = await request(wrapped(), headers={"x-request-id": incoming})
    assert seen[0]["id"] == incoming
    assert response.header("x-request-id") == incoming
    assert seen[0]["rejected"] is None


@pytest.mark.parametrize(
    "incoming",
    [
        b"",
        b"a" * 129,
        b"has space",
        b"evil\r\nset-cookie: x=1",
        b"caf\xc3\xa9",
        b"<script>",
        b"a\x00b",
    ],
)
async def test_rejects_invalid_incoming_ids_and_keeps_them_escaped(incoming: bytes) -> None:
    response = await request(wrapped(), headers=[(b"x-request-id", incoming)])
    record = seen[0]
    assert record["id"] != incoming.decode("latin-1")
    assert uuid.UUID(record["id"]).version == 7
    assert response.header("x-request-id") == record["id"]
    rejected = record["rejected"]
    assert isinstance(rejected, str) and rejected.isprintable() and len(rejected) <= 67
    assert "\r" not in rejected and "\n" not in rejected


async def test_untrusted_incoming_is_ignored() -> None:
    await request(wrapped(trust_incoming=False), headers={"x-request-id": "abc"})
    assert seen[0]["id"] != "abc" and seen[0]["rejected"] is None


async def test_custom_header_generator_and_validator() -> None:
    counter = iter(range(100))
    response = await request(
        wrapped(
            header_name="X-Correlation-ID",
            generator=lambda: f"req-{next(counter)}",
            validator=lambda value: value.startswith(b"trusted-"),
        ),
        headers={"x-correlation-id": "other-1"},
    )
    assert seen[0]["id"] == "req-0"
    assert response.header("x-correlation-id") == "req-0"
    await request(
        wrapped(header_name="X-Correlation-ID"), headers={"x-correlation-id": "trusted-1"}
    )
    assert seen[1]["id"] == "trusted-1"


async def test_a_generator_returning_an_unsafe_id_falls_back() -> None:
    response = await request(wrapped(generator=lambda: "bad\r\nid"))
    assert uuid.UUID(seen[0]["id"]).version == 7
    assert "\r" not in (response.header("x-request-id") or "\r")


async def test_the_apps_own_header_wins() -> None:
    app = recording_app(headers=[(b"x-request-id", b"from-app")])
    response = await request(wrapped(app))
    assert response.header_values("x-request-id") == ["from-app"]


async def test_response_header_can_be_turned_off() -> None:
    response = await request(wrapped(response_header=False))
    assert response.header("x-request-id") is None
    assert seen[0]["id"]


async def test_log_binding_can_be_turned_off() -> None:
    await request(wrapped(log_key=None))
    assert seen[0]["log"] is None and seen[0]["id"]


async def test_custom_log_key() -> None:
    captured: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        captured.update(structlog.contextvars.get_contextvars())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    await request(wrapped(app, log_key="rid"))
    assert set(captured) == {"rid"}


async def test_log_context_is_reset_after_success_error_and_cancellation() -> None:
    structlog.contextvars.bind_contextvars(request_id="outer")

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    async def sleeping(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(10)

    await request(wrapped())
    assert structlog.contextvars.get_contextvars() == {"request_id": "outer"}
    with pytest.raises(RuntimeError, match="boom"):
        await request(wrapped(failing))
    assert structlog.contextvars.get_contextvars() == {"request_id": "outer"}
    with anyio.move_on_after(0.02):
        await request(wrapped(sleeping))
    assert structlog.contextvars.get_contextvars() == {"request_id": "outer"}


async def test_app_logs_carry_the_id() -> None:
    lines: list[dict[str, Any]] = []

    def capture(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        lines.append(dict(event))
        raise structlog.DropEvent

    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            structlog.get_logger().info("inside")
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body"})

        response = await request(wrapped(app))
    finally:
        structlog.reset_defaults()
    assert lines == [{"event": "inside", "request_id": response.header("x-request-id")}]


async def test_exceptions_propagate_and_ids_reach_outer_error_responses() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route

    async def boom(_: Any) -> Any:
        raise RuntimeError("boom")

    starlette_app = Starlette(routes=[Route("/", boom)])
    response = await request(wrapped(starlette_app, log_key=None), raise_app_exceptions=False)
    # Starlette's ServerErrorMiddleware sends the 500 inside our send wrapper, then re-raises.
    assert isinstance(response.exception, RuntimeError)
    assert response.status == 500
    assert response.header("x-request-id")


async def test_streaming_and_request_body_pass_through() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
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

    response = await request(wrapped(app), body=[b"ab", b"c"])
    assert response.chunks == [b"a", b"b", b"c", b""]
    assert response.header("x-request-id")


async def test_websocket_gets_an_id_and_accept_header_from_spec_2_1() -> None:
    session = await websocket(wrapped(), headers={"x-request-id": "ws-1"})
    assert seen[0]["id"] == "ws-1"
    accept = session.messages[0]
    assert (b"x-request-id", b"ws-1") in accept["headers"]


async def test_websocket_accept_headers_not_added_before_spec_2_1() -> None:
    scope = websocket_scope(asgi={"version": "3.0", "spec_version": "2.0"})
    session = await websocket(wrapped(), scope=scope)
    assert session.accepted
    assert session.messages[0]["headers"] == []
    assert seen[0]["id"]


async def test_lifespan_passes_through() -> None:
    session = await run_lifespan(wrapped())
    assert [m["type"] for m in session.messages] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert seen == []


async def test_state_is_shared_with_requests() -> None:
    app = wrapped()
    async with lifespan(app) as session:
        await request(app, state=session.state)
    assert seen[0]["id"]


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("header_name", "bad header", ValueError),
        ("header_name", "", ValueError),
        ("generator", "uuid", TypeError),
        ("validator", None, TypeError),
        ("log_key", "not an identifier", ValueError),
    ],
)
def test_bad_options_fail_at_start_up(option: str, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=option):
        RequestIDMiddleware(recording_app(), **{option: value})


def test_uuid7_hex_is_a_time_ordered_uuid7() -> None:
    ids = [uuid7_hex() for _ in range(50)]
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and parsed.hex == value
    prefixes = [value[:12] for value in ids]  # the 48-bit millisecond timestamp
    assert prefixes == sorted(prefixes)
    assert len(set(ids)) == len(ids)


@given(st.binary(max_size=300))
def test_default_validator_accepts_only_the_safe_set(value: bytes) -> None:
    allowed = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:+/=-")
    expected = 1 <= len(value) <= 128 and set(value) <= allowed
    assert default_validator(value) is expected


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_any_incoming_bytes_give_a_safe_id(value: bytes) -> None:
    async def main() -> None:
        seen.clear()
        response = await request(wrapped(), headers=[(b"x-request-id", value)])
        echoed = response.header("x-request-id")
        assert echoed == seen[0]["id"]
        assert default_validator(echoed.encode("latin-1"))
        if default_validator(value):
            assert echoed == value.decode("ascii")

    anyio.run(main)


async def test_a_generator_returning_a_non_str_falls_back() -> None:
    response = await request(wrapped(generator=lambda: 42))  # type: ignore[arg-type,return-value]
    assert uuid.UUID(response.header("x-request-id") or "").version == 7


async def test_a_malformed_spec_version_gets_no_accept_header() -> None:
    scope = websocket_scope(asgi={"version": "3.0", "spec_version": "two"})
    session = await websocket(wrapped(), scope=scope)
    assert session.messages[0]["headers"] == []
