"""The current request's id, for code that runs inside the request (and its clients).

``RequestIDMiddleware`` sets it while the app runs; :func:`current` reads it anywhere
below, in the same task or a task started from it (a ``ContextVar``). The header it
travels in goes with it, so that a client hook (``asgikit.propagation``) forwards the id
under the name this service was configured with.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Final

__all__ = ["DEFAULT_HEADER", "current", "current_header", "request_id_var"]

DEFAULT_HEADER: Final = "x-request-id"
"""The header a request id travels in unless ``header_name`` says otherwise."""

request_id_var: Final[ContextVar[tuple[str, str] | None]] = ContextVar(
    "asgikit.request_id", default=None
)
"""``(request id, header name)`` while a request runs under RequestIDMiddleware."""


def current() -> str | None:
    """The id of the request being handled, or None outside one (or without the
    middleware)."""
    value = request_id_var.get()
    return None if value is None else value[0]


def current_header() -> str:
    """The header name the current request's id travels in (``x-request-id`` outside
    a request)."""
    value = request_id_var.get()
    return DEFAULT_HEADER if value is None else value[1]
