"""uvicorn: the default server, and the one whose option names the common settings use."""

from __future__ import annotations

import contextlib
import inspect
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from asgikit.servers import APP_FACTORY, Launch, imported

PACKAGE: Final = "uvicorn"
RENAMED: Final[dict[str, str]] = {}  # the common settings have uvicorn's names

# Set by asgikit itself: the app, how it is built, and who trusts proxy headers (asgikit's
# proxy_headers middleware, not uvicorn).
_OWNED: Final = frozenset({"self", "app", "factory", "proxy_headers"})
_COMMON: Final = (
    "host",
    "port",
    "uds",
    "fd",
    "workers",
    "reload",
    "log_level",
    "root_path",
    "ssl_certfile",
    "ssl_keyfile",
    "timeout_graceful_shutdown",
    "timeout_keep_alive",
    "limit_concurrency",
)


def _uvicorn() -> Any:
    return imported("uvicorn", PACKAGE)


def own_options() -> frozenset[str]:
    """The keyword arguments of ``uvicorn.run`` that the common settings do not cover."""
    parameters = inspect.signature(_uvicorn().run).parameters
    return frozenset(parameters) - _OWNED - frozenset(_COMMON)


def options(launch: Launch) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` for *launch*."""
    settings = launch.settings
    chosen: dict[str, Any] = {
        name: getattr(settings, name) for name in _COMMON if getattr(settings, name) is not None
    }
    if settings.timeout_keep_alive is not None:
        chosen["timeout_keep_alive"] = max(1, round(settings.timeout_keep_alive))
    if settings.timeout_graceful_shutdown is not None:
        chosen["timeout_graceful_shutdown"] = max(1, round(settings.timeout_graceful_shutdown))
    if not settings.root_path:
        del chosen["root_path"]
    chosen |= {"factory": True, "proxy_headers": False, "lifespan": "auto"}
    if settings.reload:
        chosen["reload_dirs"] = list(launch.watch)
        chosen["reload_includes"] = [Path(path).name for path in launch.watch_files]
    if launch.logs_configured:
        chosen["log_config"] = None  # asgikit.logging already routes uvicorn's loggers
    if launch.logs_access:
        chosen["access_log"] = False  # one access line per request, asgikit's
    return chosen | dict(settings.options)


def run(launch: Launch) -> int:
    """Serve with uvicorn; 0 once it has shut down (after SIGTERM or CTRL+C too)."""
    uvicorn = _uvicorn()
    with _signals_end_cleanly():
        uvicorn.run(APP_FACTORY, **options(launch))
    return 0


@contextlib.contextmanager
def _signals_end_cleanly() -> Iterator[None]:
    """Let a SIGTERM that uvicorn has already handled end the process with status 0.

    A single uvicorn process shuts down gracefully on SIGTERM (requests finish, the
    lifespan shutdown runs, telemetry is flushed), then re-raises the signal with the
    handler it found before it started: the default one would kill the process with
    status 143 before ``atexit`` and ``finally`` run. The handler found here records
    nothing and returns, so the process exits normally.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
