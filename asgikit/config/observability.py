"""The ``[logging]`` and ``[telemetry]`` tables: the options they take, and applying them.

A ``[logging]`` table holds the arguments of ``asgikit.logging.configure`` and a
``[telemetry]`` table those of ``asgikit.telemetry.configure``; both are read from the
functions' signatures, and the modules are imported only when needed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from collections.abc import Callable
from typing import Any, Final

import anyio.to_thread

from asgikit.config.model import Config
from asgikit.signature import Options, options_of
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "SERVER_ACCESS_LOGGERS",
    "claim_console",
    "configure_logging",
    "configure_telemetry",
    "logging_options",
    "logs_access",
    "shut_down_after_lifespan",
    "silence_server_access_logs",
    "telemetry_options",
]

_log = logging.getLogger("asgikit.telemetry")

SERVER_ACCESS_LOGGERS: Final = (
    "uvicorn.access",
    "hypercorn.access",
    "granian.access",
    "gunicorn.access",
)
"""The stdlib loggers through which servers write an access line of their own."""

_SHUTDOWN_ANSWERS: Final = frozenset({"lifespan.shutdown.complete", "lifespan.shutdown.failed"})
_ACCESS_LOG: Final = "asgikit.middleware.access_log.AccessLogMiddleware"  # by name: no import


@functools.cache
def _logging_module_exists() -> bool:
    return importlib.util.find_spec("asgikit.logging") is not None


def logging_options() -> Options | None:
    """The options of ``asgikit.logging.configure``, or None when there is no such module."""
    if not _logging_module_exists():
        return None
    configure = getattr(importlib.import_module("asgikit.logging"), "configure", None)
    if not callable(configure):
        return None
    return options_of(configure, takes_app=False)


def telemetry_options() -> Options:
    """The options of ``asgikit.telemetry.configure`` a ``[telemetry]`` table can set."""
    from asgikit.telemetry import configure  # the OpenTelemetry SDK loads on use

    return options_of(configure, takes_app=False)


def configure_telemetry(config: Config) -> Any:
    """Call ``asgikit.telemetry.configure(**config.telemetry)`` when the file has a
    ``[telemetry]`` table; its ``Telemetry`` (to shut down at exit), or None.

    A value that is only a ``${NAME:-default}`` fallback gives way to its standard
    ``OTEL_*`` variable when that is set (``asgikit.telemetry.precedence``).
    """
    if config.telemetry is None:
        return None
    from asgikit.telemetry import configure
    from asgikit.telemetry.precedence import prefer_variables

    source = config._source  # what the loader knew: which values were fallbacks
    defaulted = (
        {path[1:] for path in source.defaulted if path[:1] == ("telemetry",)}
        if source is not None
        else set()
    )
    return configure(**prefer_variables(config.telemetry, defaulted))


def configure_logging(config: Config) -> bool:
    """Call ``asgikit.logging.configure(**config.logging)`` if asgikit has that module.

    Returns:
        Whether logging was configured (otherwise structlog keeps its defaults).
    """
    if logging_options() is None or config.logging.get("configure", True) is False:
        return False  # [logging] configure = false: the app's own set-up stays
    module = importlib.import_module("asgikit.logging")
    module.configure(**config.logging)
    return True


def logs_access(config: Config) -> bool:
    """Whether the pipeline has asgikit's access log (by name or import string)."""
    for entry in config.middleware:
        factory = entry.resolved.factory
        named = f"{getattr(factory, '__module__', '')}.{getattr(factory, '__qualname__', '')}"
        if entry.resolved.name == "access_log" or named == _ACCESS_LOG:
            return True
    return False


class _WebSocketLines(logging.Filter):
    """uvicorn's websocket access lines, which it writes through ``uvicorn.error`` (its
    access-log flag does not cover them), and the websockets library's "connection open"
    and "connection closed", which uvicorn has it write there too."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg in _UVICORN_WEBSOCKET_LINES)


_UVICORN_WEBSOCKET_LINES: Final = frozenset(
    {
        '%s - "WebSocket %s" [accepted]',
        '%s - "WebSocket %s" 403',
        '%s - "WebSocket %s" %d',
        "connection open",
        "connection closed",
        "connection rejected (%d %s)",
        "HTTP response sent (%d %s)",
    }
)
_WEBSOCKET_LINES: Final = _WebSocketLines()


def silence_server_access_logs() -> None:
    """Drop the servers' own access lines: asgikit's access log writes one per request.

    For a server started by hand (``uvicorn --factory asgikit:app_from_env``), whose
    access-log flag asgikit cannot set: the loggers it writes them through are disabled,
    and uvicorn's websocket lines (written through ``uvicorn.error``) are filtered out.
    """
    for name in SERVER_ACCESS_LOGGERS:
        logging.getLogger(name).disabled = True
    logging.getLogger("uvicorn.error").addFilter(_WEBSOCKET_LINES)  # once, however often


def claim_console() -> None:
    """Once the app is built: asgikit's logging handler is again the only one writing
    to stdout and stderr (``asgikit.logging.claim_console``).

    Frameworks may set logging up when their app is created (Litestar's default
    ``logging_config`` puts a handler of its own on the root logger, Django's
    ``DEFAULT_LOGGING`` one on ``django``): without this, every line they route would
    be written twice. Does nothing unless asgikit configured ``logging``.
    """
    if _logging_module_exists():
        claim = getattr(importlib.import_module("asgikit.logging"), "claim_console", None)
        if callable(claim):
            claim()


def shut_down_after_lifespan(app: ASGIApp, shutdown: Callable[[], object]) -> ASGIApp:
    """*app*, calling *shutdown* when its lifespan shutdown is over, before the server
    hears so.

    That is the last moment a worker is sure to have: servers finish the requests in
    flight, run the lifespan shutdown, then exit, some by re-raising the signal that
    stopped them, so that ``atexit`` handlers and ``finally`` blocks never run. The
    spans and metrics still buffered are exported here, in a worker thread (the
    exporters block). Every lifespan message passes through unchanged.
    """

    async def with_shutdown(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def send_after_shutdown(message: Message) -> None:
            if message["type"] in _SHUTDOWN_ANSWERS:
                try:
                    await anyio.to_thread.run_sync(shutdown)
                except Exception:  # the server still hears the shutdown's end (L1)
                    _log.exception("telemetry.shutdown_failed")
            await send(message)

        await app(scope, receive, send_after_shutdown)

    return with_shutdown
