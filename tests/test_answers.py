"""asgikit.answers: the answers middleware make themselves, and the decisions they record."""

from __future__ import annotations

from typing import Any

import pytest

from asgikit.answers import DECISION_FIELD, DETAILS, answer, decide, plain_text
from asgikit.contract import enforce
from asgikit.scopes import DECISION_KEY
from asgikit.testing import http_scope, request, websocket, websocket_scope
from asgikit.types import Receive, Scope, Send

pytestmark = pytest.mark.anyio


def answering(status: int, **options: Any) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        fields, body = plain_text(status, headers=[(b"retry-after", b"3")])
        await answer(scope, receive, send, status, fields, body, **options)

    return enforce(app)


async def test_an_http_answer_is_plain_text_with_the_phrase() -> None:
    response = await request(answering(503))
    assert (response.status, response.text) == (503, "Service Unavailable")
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert response.header("content-length") == "19"
    assert response.header("retry-after") == "3"


def test_a_status_without_a_phrase_says_its_number_and_a_body_can_be_given() -> None:
    assert plain_text(599)[1] == b"599"
    assert plain_text(400, "Invalid host header")[1] == b"Invalid host header"


async def test_a_websocket_is_refused_with_a_response_when_the_server_can() -> None:
    session = await websocket(answering(429), extensions={"websocket.http.response": {}})
    assert session.denial is not None and session.denial.status == 429


async def test_a_websocket_is_closed_before_accept_otherwise() -> None:
    session = await websocket(answering(503, close_code=1013))
    assert session.close_code == 1013 and not session.accepted


async def test_a_websocket_client_that_left_gets_nothing() -> None:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.disconnect", "code": 1006}

    async def send(message: Any) -> None:
        sent.append(message)

    await answer(websocket_scope(), receive, send, 503, *plain_text(503))
    assert sent == []


def test_decide_fills_the_holder_an_outer_observer_handed_down() -> None:
    holder: dict[str, Any] = {}
    scope = http_scope()
    decide(scope, "shed")  # nobody listens: nothing happens, nothing raises
    scope[DECISION_KEY] = holder
    decide(scope, "shed", **{"concurrency.limit": 4})
    assert holder == {DECISION_FIELD: "shed", DETAILS: {"concurrency.limit": 4}}
