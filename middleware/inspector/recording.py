"""DevInspectorMiddleware's option checks and what it keeps of a request while it runs."""

from __future__ import annotations

import os
import sqlite3
import traceback
from pathlib import Path
from typing import Any

from asgikit import WORKERS_ENV
from asgikit.observe import route_of
from asgikit.redact import truncate
from asgikit.scopes import PEER_KEY, REQUEST_ID_KEY
from asgikit.types import Scope, Send

from .records import MAX_TRACEBACK
from .shared import SharedStore, shared_path

__all__ = [
    "check_path",
    "check_provider",
    "error_of",
    "facts",
    "open_shared",
    "redirect",
    "worker_count",
    "workers_notice",
]


def worker_count() -> int:
    """How many worker processes ``asgikit serve --workers N`` started (it says so in
    ``ASGIKIT_WORKERS``); 1 when it did not say."""
    workers = os.environ.get(WORKERS_ENV, "")
    return int(workers) if workers.isdecimal() and int(workers) > 1 else 1


def workers_notice(workers: int, shared: Path | None) -> str:
    """What the page says when it is one of several worker processes: that it shows
    them all (through *shared*), or that each keeps its own requests."""
    if workers < 2:
        return ""
    if shared is not None:
        return (
            f"This page shows the requests of all {workers} worker processes, written to "
            f"{shared} (deleted when the server stops); each row says which worker (pid)."
        )
    return (
        f"This page shows the requests of one worker process (pid {os.getpid()}) of "
        f"{workers}: each keeps its own, and a request is answered by any of them. Serve "
        "with one worker to see every request here."
    )


def open_shared(workers: int, max_rows: int) -> SharedStore | None:
    """The store the *workers* (two or more) share, if it can be opened."""
    try:
        path = shared_path(os.getppid())  # the serve process: every worker's parent
        return None if path is None else SharedStore(path, max_rows)
    except (OSError, sqlite3.Error):
        return None


def check_path(path: object) -> None:
    """The ``path`` option: ``/name/``, ASCII."""
    if not isinstance(path, str):
        raise TypeError(f"path must be a str, not {path!r}")
    if not (path.startswith("/") and path.endswith("/") and len(path) > 2 and path.isascii()):
        raise ValueError(f"path must start and end with '/', like '/_asgikit/', not {path!r}")


def check_provider(tracer_provider: object) -> None:
    """The ``tracer_provider`` option: None or an SDK provider."""
    if tracer_provider is not None and not callable(
        getattr(tracer_provider, "add_span_processor", None)
    ):
        raise TypeError(
            "tracer_provider: expected an OpenTelemetry SDK TracerProvider "
            f"(with add_span_processor), not {tracer_provider!r}"
        )


def error_of(exc: BaseException, limit: int) -> tuple[str, str, str]:
    """(type, message, traceback) of *exc*, the traceback's end kept."""
    text = "".join(traceback.format_exception(exc))
    if len(text) > MAX_TRACEBACK:
        text = f"...[{len(text) - MAX_TRACEBACK} chars]\n" + text[-MAX_TRACEBACK:]
    return type(exc).__qualname__, truncate(str(exc), limit), text


def facts(scope: Scope) -> dict[str, Any]:
    """What the page shows of the scope, read after the app ran (the route is known)."""
    kept = {
        "method": scope.get("method", "GET"),  # a websocket's handshake is a GET
        "path": scope["path"],
        "query_string": scope.get("query_string", b""),
        "http_version": scope.get("http_version", "1.1"),
        "scheme": scope.get("scheme", "http"),
        "client": scope.get("client"),
        "server": scope.get("server"),
        "headers": scope.get("headers", ()),
        REQUEST_ID_KEY: scope.get(REQUEST_ID_KEY),
        PEER_KEY: scope.get(PEER_KEY),
    }
    route = route_of(scope)
    if route is not None:
        kept["path_template"] = route
    return kept


async def redirect(send: Send, location: str) -> None:
    """A 308 to *location*."""
    await send(
        {
            "type": "http.response.start",
            "status": 308,
            "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})
