"""What TimeoutMiddleware says itself: its answer at a deadline, and the log lines of the
apps that did not unwind in time (``Abandonments``)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Protocol

import anyio
import structlog

from asgikit.answers import plain_text
from asgikit.types import Message, Scope

from .routes import Limit

__all__ = ["Abandonments", "answer_messages"]

_log = structlog.get_logger("asgikit.timeout")


def answer_messages(status: int, http_version: str) -> tuple[Message, Message]:
    """The middleware's own response: the status's phrase as plain text."""
    close = status == 408 and http_version in ("1.0", "1.1")
    # A client that stalls an upload does not get to reuse the connection. Not on HTTP/2
    # and 3, where connection-specific fields are malformed.
    try:
        text = HTTPStatus(status).phrase
    except ValueError:  # a status_code without a phrase (599)
        text = "Timeout"
    headers, body = plain_text(status, text, [(b"connection", b"close")] if close else ())
    start = {"type": "http.response.start", "status": status, "headers": headers}
    return start, {"type": "http.response.body", "body": body}


class Abandoned(Protocol):
    """What the log lines read of a request (``clock.RequestClock`` has it)."""

    abandoned: bool
    info: dict[str, Any]
    scope: Scope
    start_time: float


class Abandonments:
    """The apps that did not unwind within ``cancel_grace`` after a deadline: counted,
    logged when abandoned and again when they return."""

    __slots__ = ("cancel_grace", "count", "running")

    def __init__(self, cancel_grace: float) -> None:
        self.cancel_grace = cancel_grace
        self.count = 0
        self.running = 0

    def abandon(self, clock: Abandoned, limit: Limit) -> None:
        clock.abandoned = True
        clock.info["abandoned"] = True
        self.count += 1
        self.running += 1
        _log.warning(
            "abandoned after deadline",
            limit=limit.value,
            method=clock.scope.get("method"),
            path=clock.scope.get("path"),
            cancel_grace=self.cancel_grace,
            abandoned_running=self.running,
        )

    def returned(self, clock: Abandoned) -> None:
        self.running -= 1
        _log.info(
            "abandoned request returned",
            method=clock.scope.get("method"),
            path=clock.scope.get("path"),
            duration=round(anyio.current_time() - clock.start_time, 6),
            abandoned_running=self.running,
        )
