"""A client's ``/login%0A`` reaches Starlette's ``/login`` route (its patterns end in
``$``): the rules of every middleware with path rules must cover it too."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgikit.contract import enforce
from asgikit.middleware import BodyLimitMiddleware, RateLimitMiddleware
from asgikit.testing import request

pytestmark = pytest.mark.anyio


async def login(request: Request) -> PlainTextResponse:
    return PlainTextResponse("no", status_code=401)


APP = Starlette(routes=[Route("/login", login, methods=["POST"])])


@pytest.mark.parametrize("rule", [{"path": "/login"}, {"route": "/login"}])
async def test_a_newline_does_not_get_round_a_rate_limit_rule(rule: dict[str, str]) -> None:
    limited = RateLimitMiddleware(enforce(APP), rules=[{**rule, "rate": "2/minute"}])
    app = enforce(limited)
    statuses = [(await request(app, "POST", "/login\n")).status for _ in range(4)]
    assert statuses == [401, 401, 429, 429]


async def test_a_newline_does_not_get_round_a_body_limit_rule() -> None:
    app = enforce(BodyLimitMiddleware(enforce(APP), rules=[{"path": "/login", "max_body_size": 4}]))
    headers = {"content-length": "10"}
    response = await request(app, "POST", "/login\n", headers=headers, body=b"0123456789")
    assert response.status == 413
