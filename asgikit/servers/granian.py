"""granian: a Rust HTTP server with its own worker processes."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Final

from asgikit.servers import APP_FACTORY, Launch, imported, unsupported

PACKAGE: Final = "granian"
RENAMED: Final = {
    "address": "host",
    "reload_paths": "reload",
    "ssl_cert": "ssl_certfile",
    "ssl_key": "ssl_keyfile",
    "url_path_prefix": "root_path",
    "workers_kill_timeout": "timeout_graceful_shutdown",
    "backpressure": "limit_concurrency",
}

# Set by asgikit from the common settings, or by asgikit itself.
_OWNED: Final = frozenset(
    {"self", "target", "interface", "factory", "port", "uds", "workers", "reload", "log_level"}
    | RENAMED.keys()
)

# granian's own loggers, handed to the root logger (where asgikit.logging writes) with
# no handler of their own: "_granian" is the name its Rust core logs under.
_ROUTED: Final = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {
        "_granian": {"handlers": [], "propagate": True},
        "granian.access": {"handlers": [], "propagate": True},
    },
}


def _server_class() -> Any:
    return imported("granian.server", PACKAGE).Server


def own_options() -> frozenset[str]:
    """The keyword arguments of granian's ``Server`` not covered otherwise."""
    return frozenset(inspect.signature(_server_class()).parameters) - _OWNED


def options(launch: Launch) -> dict[str, Any]:
    """The keyword arguments of granian's ``Server`` for *launch*."""
    settings = launch.settings
    unsupported(PACKAGE, settings, ("fd", "timeout_keep_alive"))
    chosen: dict[str, Any] = {
        "target": APP_FACTORY,
        "factory": True,
        "interface": "asgi",  # with the lifespan protocol, where telemetry is flushed
        "address": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "reload": settings.reload,
        "log_level": settings.log_level if settings.log_level != "trace" else "debug",
        "log_access": False,
    }
    if settings.uds is not None:
        chosen["uds"] = Path(settings.uds)
    if settings.reload:
        chosen["reload_paths"] = [Path(path) for path in (*launch.watch, *launch.watch_files)]
    if settings.ssl_certfile is not None:
        chosen["ssl_cert"] = Path(settings.ssl_certfile)
    if settings.ssl_keyfile is not None:
        chosen["ssl_key"] = Path(settings.ssl_keyfile)
    if settings.root_path:
        chosen["url_path_prefix"] = settings.root_path
    if settings.timeout_graceful_shutdown is not None:
        chosen["workers_kill_timeout"] = max(1, round(settings.timeout_graceful_shutdown))
    if settings.limit_concurrency is not None:
        chosen["backpressure"] = settings.limit_concurrency
    if launch.logs_configured:
        chosen["log_dictconfig"] = _ROUTED
    return chosen | dict(settings.options)


def run(launch: Launch) -> int:  # pragma: no cover - in the served process (e2e)
    """Serve with granian; 0 once SIGTERM or CTRL+C stopped it."""
    _server_class()(**options(launch)).serve()
    return 0
