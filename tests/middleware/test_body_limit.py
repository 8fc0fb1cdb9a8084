"""BodyLimitMiddleware over http: Content-Length checked before the app, the body counted
as the app reads it, the 413 and what the app sees, the options."""

from __future__ import annotations

from typing import Any

import pytest

from asgikit.answers import DECISION_FIELD, DETAILS
from asgikit.contract import enforce
from asgikit.middleware.body_limit import DEFAULT_MAX_BODY_SIZE, BodyLimitMiddleware, BodyTooLarge
from asgikit.scopes import DECISION_KEY
from asgikit.testing import DISCONNECT, http_scope, lifespan, request
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

CHUNK = 64 * 1024
MiB = 1024 * 1024


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body (returns quietly on a disconnect), answers with it."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    length = str(len(body)).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]}
    )
    await send({"type": "http.response.body", "body": body})


def wrapped(app: ASGIApp = echo, **options: Any) -> ASGIApp:
    return enforce(BodyLimitMiddleware(enforce(app), **options))


def spy(app: ASGIApp, calls: list[Scope]) -> ASGIApp:
    async def spying(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope)
        await app(scope, receive, send)

    return spying


def received_bytes(messages: list[Message]) -> int:
    return sum(len(m.get("body", b"")) for m in messages if m["type"] == "http.request")


# --------------------------------------------------------------------------------------
# Content-Length, before the app


async def test_a_content_length_over_the_limit_is_answered_413_and_the_app_never_runs() -> None:
    calls: list[Scope] = []
    app = wrapped(spy(echo, calls), max_body_size=10)
    response = await request(app, "POST", "/", headers={"content-length": "11"}, body=b"x" * 11)
    assert response.status == 413
    assert response.body == b"Content Too Large"
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert response.header("content-length") == "17"
    assert calls == []
    assert response.received == []  # not a byte of the body was read


async def test_a_body_of_exactly_the_limit_passes() -> None:
    app = wrapped(max_body_size=10)
    response = await request(app, "POST", "/", headers={"content-length": "10"}, body=b"x" * 10)
    assert (response.status, response.body) == (200, b"x" * 10)
    chunked = await request(app, "POST", "/", body=[b"x" * 4, b"x" * 6])
    assert (chunked.status, chunked.body) == (200, b"x" * 10)


async def test_the_default_limit_is_10_mib() -> None:
    assert 10 * MiB == DEFAULT_MAX_BODY_SIZE
    app = wrapped()
    over = await request(app, "POST", "/", headers={"content-length": str(10 * MiB + 1)})
    assert over.status == 413
    at = await request(app, "POST", "/", body=[b"x" * MiB] * 10)
    assert (at.status, len(at.body)) == (200, 10 * MiB)


@pytest.mark.parametrize(
    "values",
    [["abc"], ["-1"], ["+5"], ["5 5"], ["1, 2"], ["5", "6"], [""], ["0x10"], ["\u0665".encode()]],
)
async def test_a_content_length_that_does_not_parse_is_answered_400(
    values: list[str | bytes],
) -> None:
    calls: list[Scope] = []
    headers = [("content-length", value) for value in values]
    response = await request(wrapped(spy(echo, calls)), "POST", "/", headers=headers)
    assert (response.status, response.body) == (400, b"Invalid Content-Length")
    assert calls == []


@pytest.mark.parametrize("values", [["5, 5"], ["5", "5"], ["0005"], ["5,\t5"]])
async def test_repeated_equal_content_lengths_and_leading_zeros_are_accepted(
    values: list[str],
) -> None:
    headers = [("content-length", value) for value in values]
    response = await request(wrapped(max_body_size=5), "POST", "/", headers=headers, body=b"12345")
    assert (response.status, response.body) == (200, b"12345")


async def test_a_content_length_of_many_digits_is_too_large_not_invalid() -> None:
    response = await request(wrapped(), "POST", "/", headers={"content-length": "9" * 5000})
    assert response.status == 413
    zeros = await request(wrapped(), "POST", "/", headers={"content-length": "0" * 40})
    assert zeros.status == 200


async def test_the_decision_is_recorded_for_an_outer_observer() -> None:
    holder: dict[str, Any] = {}
    scope = http_scope("POST", "/", headers={"content-length": "11"})
    scope[DECISION_KEY] = holder
    await request(wrapped(max_body_size=10), scope=scope)
    assert holder == {
        DECISION_FIELD: "body_too_large",
        DETAILS: {"body_limit.reason": "content_length", "body_limit.length": 11},
    }
    bad: dict[str, Any] = {}
    scope = http_scope("POST", "/", headers={"content-length": "x"})
    scope[DECISION_KEY] = bad
    await request(wrapped(), scope=scope)
    assert bad == {DECISION_FIELD: "bad_request", DETAILS: {"body_limit.reason": "content_length"}}


# --------------------------------------------------------------------------------------
# The body counted as it arrives


async def test_a_client_that_lies_about_its_content_length_is_stopped_at_the_limit() -> None:
    seen: list[int] = []

    async def reader(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            seen.append(len(message.get("body", b"")))
            if message["type"] == "http.disconnect":
                return

    holder: dict[str, Any] = {}
    body = [b"x" * CHUNK] * 160  # 10 MiB, announced as 10 bytes
    scope = http_scope("POST", "/", headers={"content-length": "10"})
    scope[DECISION_KEY] = holder
    response = await request(wrapped(reader, max_body_size=MiB), body=body, scope=scope)
    assert (response.status, response.body) == (413, b"Content Too Large")
    # Read from the client: up to the chunk that passed the limit, not one more.
    assert received_bytes(response.received) == MiB + CHUNK
    assert sum(seen) == MiB  # the app got what fit, then a disconnect
    assert holder[DECISION_FIELD] == "body_too_large"
    assert holder[DETAILS] == {"body_limit.reason": "body", "body_limit.received": MiB + CHUNK}


async def test_a_body_without_content_length_over_the_limit_gets_413() -> None:
    calls: list[Scope] = []
    response = await request(
        wrapped(spy(echo, calls), max_body_size=100), "POST", "/", body=[b"x" * 60, b"x" * 60]
    )
    assert (response.status, response.body) == (413, b"Content Too Large")
    assert len(calls) == 1  # the app ran: nothing said the body was too large before


async def test_the_app_reads_a_disconnect_in_place_of_the_chunk_that_passed_the_limit() -> None:
    messages: list[Message] = []

    async def reader(scope: Scope, receive: Receive, send: Send) -> None:
        messages.append(await receive())
        messages.append(await receive())

    await request(wrapped(reader, max_body_size=5), "POST", "/", body=[b"123", b"456", b"7"])
    assert messages == [
        {"type": "http.request", "body": b"123", "more_body": True},
        {"type": "http.disconnect"},
    ]


async def test_every_later_receive_is_a_disconnect_too() -> None:
    later: list[Message] = []

    async def reader(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # the disconnect in place of the body
        later.append(await receive())

    app = BodyLimitMiddleware(reader, max_body_size=1)
    response = await request(app, "POST", "/", body=[b"12", b"3"])
    assert later == [{"type": "http.disconnect"}]
    assert received_bytes(response.received) == 2


async def test_what_the_app_sends_after_the_413_is_dropped() -> None:
    async def answers_anyway(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"boom"})

    response = await request(wrapped(answers_anyway, max_body_size=1), "POST", "/", body=b"12")
    assert (response.status, response.body) == (413, b"Content Too Large")
    assert response.message_types == ["http.response.start", "http.response.body"]


async def test_an_app_that_raises_after_the_disconnect_has_its_exception_propagate() -> None:
    class Gone(Exception):
        pass

    async def raises(scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] == "http.disconnect":
            raise Gone

    response = await request(
        wrapped(raises, max_body_size=1), "POST", "/", body=b"12", raise_app_exceptions=False
    )
    assert isinstance(response.exception, Gone)
    assert (response.status, response.body) == (413, b"Content Too Large")


async def test_a_started_response_the_app_finishes_anyway_is_left_alone() -> None:
    async def streams(scope: Scope, receive: Receive, send: Send) -> None:
        # It ignores the disconnect, and ends its response: that end goes through.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive())["type"] == "http.request":
            await send({"type": "http.response.body", "body": b"got", "more_body": True})
        await send({"type": "http.response.body", "body": b"end"})

    response = await request(wrapped(streams, max_body_size=5), "POST", "/", body=[b"1234", b"56"])
    assert response.status == 200
    assert response.body == b"gotend"  # the app's own end, nothing after it
    assert response.complete


async def echo_until_gone(scope: Scope, receive: Receive, send: Send) -> None:
    """Streams the body back; returns on a disconnect, as it should, the response
    unfinished (there is no one to finish it for)."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        await send({"type": "http.response.body", "body": message["body"], "more_body": True})
        if not message.get("more_body", False):
            await send({"type": "http.response.body", "body": b""})
            return


async def test_a_started_response_left_unfinished_is_aborted_with_body_too_large() -> None:
    scope = http_scope("POST", "/")
    scope[DECISION_KEY] = {}
    response = await request(
        wrapped(echo_until_gone, max_body_size=5),
        body=[b"1234", b"56"],
        scope=scope,
        raise_app_exceptions=False,
    )
    # Before: the app returned with the response unfinished, and the contract checker
    # outside raised; now the server is told to abort the connection.
    assert isinstance(response.exception, BodyTooLarge)
    assert (response.exception.reason, response.exception.received) == ("body", 6)
    assert (response.status, response.body, response.complete) == (200, b"1234", False)
    assert scope[DECISION_KEY][DECISION_FIELD] == "body_too_large"


async def test_a_response_within_the_limit_is_not_aborted() -> None:
    response = await request(wrapped(echo_until_gone, max_body_size=6), body=[b"1234", b"56"])
    assert (response.status, response.body, response.complete) == (200, b"123456", True)


async def test_a_response_already_complete_gets_nothing_more() -> None:
    async def answers_first(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"accepted"})
        assert (await receive())["type"] == "http.disconnect"

    response = await request(wrapped(answers_first, max_body_size=1), "POST", "/", body=b"12")
    assert (response.status, response.body) == (202, b"accepted")


async def test_the_413_is_skipped_when_the_client_has_gone_meanwhile() -> None:
    sent: list[Message] = []
    body = iter([{"type": "http.request", "body": b"12", "more_body": True}])

    async def receive() -> Message:
        return next(body)

    async def send(message: Message) -> None:
        sent.append(message)
        raise OSError("the client left")

    seen: list[Message] = []

    async def reader(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())

    await BodyLimitMiddleware(reader, max_body_size=1)(http_scope("POST", "/"), receive, send)
    assert seen == [{"type": "http.disconnect"}]
    assert [m["type"] for m in sent] == ["http.response.start"]


async def test_a_real_disconnect_and_other_messages_pass_through() -> None:
    seen: list[Message] = []

    async def reader(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())
        seen.append(await receive())

    await request(wrapped(reader, max_body_size=10), "POST", "/", body=[b"12", DISCONNECT])
    assert seen == [
        {"type": "http.request", "body": b"12", "more_body": True},
        {"type": "http.disconnect"},
    ]


async def test_no_limit_passes_any_body() -> None:
    response = await request(wrapped(max_body_size=None), "POST", "/", body=[b"x" * MiB] * 12)
    assert (response.status, len(response.body)) == (200, 12 * MiB)


async def test_a_limit_of_zero_allows_only_an_empty_body() -> None:
    app = wrapped(max_body_size=0)
    assert (await request(app, "GET", "/")).status == 200
    assert (await request(app, "POST", "/", body=b"x")).status == 413


async def test_lifespan_passes_through() -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            events.append(message["type"])
            kind = message["type"].replace("lifespan.", "")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return

    async with lifespan(wrapped(app)):
        pass
    assert events == ["lifespan.startup", "lifespan.shutdown"]


# --------------------------------------------------------------------------------------
# Options


@pytest.mark.parametrize(
    ("options", "error", "start"),
    [
        ({"max_body_size": -1}, ValueError, "max_body_size"),
        ({"max_body_size": "10"}, TypeError, "max_body_size"),
        ({"max_body_size": True}, TypeError, "max_body_size"),
        ({"max_decompressed_size": -1}, ValueError, "max_decompressed_size"),
        ({"max_websocket_message_size": 1.5}, TypeError, "max_websocket_message_size"),
        ({"decompress": "yes"}, TypeError, "decompress"),
        ({"exclude_paths": ["health"]}, ValueError, "exclude_paths"),
    ],
)
def test_bad_options_fail_at_start_up(
    options: dict[str, Any], error: type[Exception], start: str
) -> None:
    with pytest.raises(error) as raised:
        BodyLimitMiddleware(echo, **options)
    assert str(raised.value).startswith(start)


def test_max_body_size_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        BodyLimitMiddleware(echo, 10)  # type: ignore[misc]
