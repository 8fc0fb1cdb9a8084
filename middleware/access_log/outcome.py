"""The access log's helpers: a response's outcome, the context variables reset."""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

from asgikit.observe import Exchange

__all__ = ["http_outcome", "reset_tokens"]

_WARNING, _ERROR = 30, 40


def http_outcome(
    ex: Exchange, error: BaseException | None
) -> tuple[int | None, str | None, int | None]:
    """The status the client got, the error type, and the least level the outcome calls
    for whatever the status (None: the status decides)."""
    status = ex.client_status()
    if error is not None:
        if not isinstance(error, Exception):  # cancelled: shutdown, or an outer deadline
            return status, type(error).__qualname__, _WARNING
        return status, type(error).__qualname__, _ERROR
    if not ex.complete and not ex.disconnected:
        return (500 if status is None else status), "incomplete_response", _ERROR
    return status, None, None


def reset_tokens(tokens: list[tuple[ContextVar[Any], Token[Any]]] | None) -> None:
    if tokens is not None:
        for var, token in reversed(tokens):
            var.reset(token)
