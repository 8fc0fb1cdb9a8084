"""Answers asgikit makes itself (413, 429, 503, a redirect, a refused host), and the
decision each one records.

Several middleware answer a request without the app. They answer the same way:
:func:`answer` sends an http response, or, for a websocket before it is accepted, the
denial response when the server offers the ``websocket.http.response`` extension and a
close otherwise (the server then answers 403). :func:`plain_text` builds the usual body
and headers.

Each answer is a *decision*, named by a short, bounded string (``"shed"``,
``"body_too_large"``, ``"host_refused"``...). An observing middleware outside (the
access log, tracing) puts an empty dict under ``scope[DECISION_KEY]`` and hands it down;
:func:`decide` fills it in, so the log line and the span say which layer answered and
why, under one field name (``asgikit.decision``).
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any, Final

from asgikit.scopes import DECISION_KEY
from asgikit.types import Receive, Scope, Send

__all__ = ["DECISION_FIELD", "DETAILS", "WEBSOCKET_DENIAL", "answer", "decide", "plain_text"]

DECISION_FIELD: Final = "asgikit.decision"
"""The log field and span attribute naming the decision behind an answer asgikit made."""

DETAILS: Final = "asgikit.decision.details"
"""Where :func:`decide` keeps a decision's fields (``{"concurrency.limit": 8}``) in the
holder; the access log adds them to its line, tracing to the span."""

WEBSOCKET_DENIAL: Final = "websocket.http.response"
"""The ASGI extension that lets a websocket be refused with an http response."""

_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")


def plain_text(
    status: int, body: str | None = None, headers: Iterable[tuple[bytes, bytes]] = ()
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of a plain-text answer: *body*, or the status's phrase."""
    if body is None:
        try:
            body = HTTPStatus(status).phrase
        except ValueError:
            body = str(status)
    data = body.encode("utf-8")
    fields = [_TEXT, (b"content-length", str(len(data)).encode("ascii")), *headers]
    return fields, data


def decide(scope: Scope, decision: str, **fields: Any) -> None:
    """Record *decision* (and *fields*) where an outer observer reads it, if one does."""
    holder = scope.get(DECISION_KEY)
    if isinstance(holder, dict):
        holder[DECISION_FIELD] = decision
        if fields:
            holder[DETAILS] = fields


async def answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    close_code: int = 1008,
) -> None:
    """Answer without the app: an http response, or a websocket refusal before accept.

    Args:
        headers: Complete response headers (:func:`plain_text` builds the usual ones).
        close_code: The websocket close code when the server cannot send a denial
            response (1008 policy violation; 1013 try again later for load).
    """
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    message = await receive()
    if message["type"] != "websocket.connect":  # the client is already gone
        return
    if WEBSOCKET_DENIAL in (scope.get("extensions") or {}):
        start = {"type": "websocket.http.response.start", "status": status}
        await send({**start, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:  # closing before accepting: the server answers 403
        await send({"type": "websocket.close", "code": close_code})
