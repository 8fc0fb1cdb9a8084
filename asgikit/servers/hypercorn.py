"""hypercorn: HTTP/1, HTTP/2 and (with aioquic) HTTP/3, on asyncio, uvloop or trio."""

from __future__ import annotations

import inspect
import logging
from typing import Any, Final

from asgikit.servers import APP_FACTORY, Launch, ServerError, imported, unsupported

PACKAGE: Final = "hypercorn"
RENAMED: Final = {
    "bind": "host",
    "use_reloader": "reload",
    "loglevel": "log_level",
    "certfile": "ssl_certfile",
    "keyfile": "ssl_keyfile",
    "graceful_timeout": "timeout_graceful_shutdown",
    "keep_alive_timeout": "timeout_keep_alive",
}

# Set by asgikit from the common settings, or by asgikit itself (the app's path).
_OWNED: Final = frozenset({"application_path", "workers", "root_path", *RENAMED})


def _config_class() -> Any:
    return imported("hypercorn.config", PACKAGE).Config


def own_options() -> frozenset[str]:
    """The settable attributes of ``hypercorn.config.Config`` not covered otherwise."""
    config = _config_class()
    names = set()
    for name in dir(config):
        attribute = inspect.getattr_static(config, name)
        if name.startswith("_") or isinstance(attribute, classmethod | staticmethod):
            continue
        if isinstance(attribute, property) and attribute.fset is None:
            continue  # derived, such as ssl_enabled
        if inspect.isfunction(attribute):
            continue
        names.add(name)
    return frozenset(names) - _OWNED


def _bind(launch: Launch) -> str:
    settings = launch.settings
    if settings.uds is not None:
        return f"unix:{settings.uds}"
    if settings.fd is not None:
        return f"fd://{settings.fd}"
    host = settings.host
    return f"[{host}]:{settings.port}" if ":" in host else f"{host}:{settings.port}"


def config(launch: Launch) -> Any:
    """The ``hypercorn.config.Config`` for *launch*."""
    settings = launch.settings
    unsupported(PACKAGE, settings, ("limit_concurrency",))
    if settings.reload:
        raise ServerError(
            "hypercorn's reloader watches only the modules already imported (not the "
            "config file, nor an app that failed to import) and builds the app in its "
            "supervisor too: serve with uvicorn or granian for --reload"
        )
    chosen = _config_class()()
    chosen.application_path = APP_FACTORY + "()"  # hypercorn calls what the path names
    chosen.bind = [_bind(launch)]
    chosen.workers = settings.workers
    # hypercorn knows no "trace": its most detailed level is DEBUG.
    chosen.loglevel = "DEBUG" if settings.log_level == "trace" else settings.log_level.upper()
    chosen.root_path = settings.root_path
    if settings.ssl_certfile is not None:
        chosen.certfile = settings.ssl_certfile
        chosen.keyfile = settings.ssl_keyfile
    if settings.timeout_graceful_shutdown is not None:
        chosen.graceful_timeout = settings.timeout_graceful_shutdown
    if settings.timeout_keep_alive is not None:
        chosen.keep_alive_timeout = settings.timeout_keep_alive
    if launch.logs_configured:
        # The logger itself (which pickles by name into the workers), not "-": hypercorn
        # would give it a stream handler of its own, and every line would come twice.
        chosen.errorlog = logging.getLogger("hypercorn.error")
    for name, value in settings.options.items():
        setattr(chosen, name, value)
    return chosen


def run(launch: Launch) -> int:  # pragma: no cover - in the served process (e2e)
    """Serve with hypercorn; its exit status (0 once SIGTERM or CTRL+C stopped it)."""
    status: int = imported("hypercorn.run", PACKAGE).run(config(launch))
    return status
