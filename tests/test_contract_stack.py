"""asgikit's own canonical stack, with a strict contract checker around every layer, keeps
every rule of the contract: the checkers must not flag what asgikit itself does (its
scope chain, shared by every copy of the scope like ``state``, is not a mutation)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest

from asgikit.contract import enforce
from asgikit.middleware.access_log import AccessLogMiddleware
from asgikit.middleware.compression import CompressionMiddleware
from asgikit.middleware.cors import CORSMiddleware
from asgikit.middleware.proxy_headers import ProxyHeadersMiddleware
from asgikit.middleware.rate_limit import RateLimitMiddleware
from asgikit.middleware.request_id import RequestIDMiddleware
from asgikit.middleware.timeout import TimeoutMiddleware
from asgikit.middleware.tracing import TracingMiddleware
from asgikit.testing import request, websocket
from asgikit.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.anyio

BODY = b"a body long enough to be compressed. " * 40

# Outermost first, in the canonical order (docs/architecture.md).
LAYERS: list[Callable[[ASGIApp], ASGIApp]] = [
    lambda app: ProxyHeadersMiddleware(app, trusted_proxies=["127.0.0.1"]),
    RequestIDMiddleware,
    AccessLogMiddleware,
    TracingMiddleware,
    lambda app: CORSMiddleware(app, allow_origins=["https://app.example.com"]),
    lambda app: RateLimitMiddleware(app, rate="1000/minute"),
    lambda app: TimeoutMiddleware(app, total=5.0),
    CompressionMiddleware,
]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message.get("text", "")})
        await send({"type": "websocket.close", "code": 1000})
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/error":
        raise RuntimeError("the app failed")
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY[:600], "more_body": True})
    await send({"type": "http.response.body", "body": BODY[600:]})


def checked_stack() -> ASGIApp:
    """Every layer between two strict checkers."""
    stack: ASGIApp = enforce(app, strict=True)
    for layer in reversed(LAYERS):
        stack = enforce(layer(stack), strict=True)
    return stack


async def test_the_canonical_stack_checked_at_every_layer_keeps_every_rule() -> None:
    stack = checked_stack()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a W rule would warn: strict turns it into a raise
        headers = [("accept-encoding", "gzip"), ("origin", "https://app.example.com")]
        response = await request(stack, "POST", "/items", headers=headers, body=[b"a", b"b"])
        assert response.status == 200
        assert response.header("content-encoding") == "gzip"
        failed = await request(stack, "GET", "/error", raise_app_exceptions=False)
        # the app's own error reaches the server (which answers 500), no violation instead
        assert type(failed.exception) is RuntimeError
        session = await websocket(stack, "/ws", frames=["hello"])
        assert session.sent == ["hello"]
