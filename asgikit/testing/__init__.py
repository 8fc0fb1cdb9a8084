"""In-process ASGI driver for tests.

Build scopes, script what ``receive()`` returns, record everything the app sends, and read
the result back. Unlike an HTTP client over ``httpx.ASGITransport``, the driver keeps the
ASGI messages themselves: body chunks one by one, client disconnects at a chosen point,
extension messages (pathsend, trailers, early hints, zerocopysend), and a ``send`` that
raises ``OSError`` once the client has gone, as real servers do. It runs under asyncio
and trio alike (anyio).

    response = await request(enforce(Middleware(enforce(app))), "GET", "/", body=[b"a", b"b"])
    assert response.status == 200

The driver is split by protocol: ``_testing_scopes`` (scopes and script items),
``_testing_http``, ``_testing_websocket`` and ``_testing_lifespan``; this module is its
public face.
"""

from __future__ import annotations

from asgikit.testing.http import ClientDisconnected, Response, request
from asgikit.testing.lifespan import LifespanFailed, LifespanSession, lifespan, run_lifespan
from asgikit.testing.scopes import (
    ALL_HTTP_EXTENSIONS,
    DISCONNECT,
    Disconnect,
    http_scope,
    lifespan_scope,
    websocket_scope,
)
from asgikit.testing.scopes import HeadersArg as HeadersArg
from asgikit.testing.websocket import WebSocketSession, websocket

__all__ = [
    "ALL_HTTP_EXTENSIONS",
    "DISCONNECT",
    "ClientDisconnected",
    "Disconnect",
    "LifespanFailed",
    "LifespanSession",
    "Response",
    "WebSocketSession",
    "http_scope",
    "lifespan",
    "lifespan_scope",
    "request",
    "run_lifespan",
    "websocket",
    "websocket_scope",
]
