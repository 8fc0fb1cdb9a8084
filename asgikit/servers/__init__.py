"""The ASGI servers ``asgikit serve`` runs: uvicorn, hypercorn and granian.

Each one takes the ``[server]`` table's common settings (``host``, ``port``, ``uds``,
``root_path``, ...: uvicorn's names) in its own terms, and the table's other keys as
its own options, checked against the names that server itself accepts. Every server
process builds the app from the config file through ``asgikit.config:app_from_env``
(named by ``$ASGIKIT_CONFIG``), after the fork: logging, telemetry and any connection
the middleware open belong to the worker that uses them.

A server module here is imported only when it is chosen, and imports its server only
when asked for that server's option names or to run it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeAlias, cast

__all__ = [
    "APP_FACTORY",
    "SERVERS",
    "Launch",
    "ServerError",
    "ServerName",
    "ServerSettings",
    "imported",
    "own_options",
    "renamed",
    "run",
]

ServerName: TypeAlias = Literal["uvicorn", "hypercorn", "granian"]
SERVERS: Final[tuple[ServerName, ...]] = ("uvicorn", "hypercorn", "granian")

APP_FACTORY: Final = "asgikit.config:app_from_env"
"""What every server process imports and calls to build the app."""


class ServerError(Exception):
    """The chosen server cannot do what the settings ask, or is not installed."""


class ServerSettings(Protocol):
    """The common settings (``asgikit.config.ServerConfig`` has them), read only."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def uds(self) -> str | None: ...

    @property
    def fd(self) -> int | None: ...

    @property
    def workers(self) -> int: ...

    @property
    def reload(self) -> bool: ...

    @property
    def log_level(self) -> str: ...

    @property
    def root_path(self) -> str: ...

    @property
    def ssl_certfile(self) -> str | None: ...

    @property
    def ssl_keyfile(self) -> str | None: ...

    @property
    def timeout_graceful_shutdown(self) -> float | None: ...

    @property
    def timeout_keep_alive(self) -> float | None: ...

    @property
    def limit_concurrency(self) -> int | None: ...

    @property
    def options(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Launch:
    """Everything a server module needs to run the configured app."""

    settings: ServerSettings
    logs_configured: bool
    """asgikit configured logging: the server's loggers are left to it."""
    logs_access: bool
    """asgikit's access log is in the pipeline: the server writes no access lines."""
    watch: tuple[str, ...] = ()
    """With ``reload``: the directories whose Python files restart the server."""
    watch_files: tuple[str, ...] = ()
    """With ``reload``: other file names (the config file) that restart it too."""


class _ServerModule(Protocol):
    PACKAGE: str

    RENAMED: Mapping[str, str]

    def own_options(self) -> frozenset[str]: ...

    def run(self, launch: Launch) -> int: ...


def _module(name: str) -> _ServerModule:
    # *name* is one of SERVERS: the config's Literal and the flag's choices check it.
    return cast(_ServerModule, importlib.import_module(f"asgikit.servers.{name}"))


def imported(module: str, package: str) -> Any:
    """Module *module* of server *package*.

    Raises:
        ServerError: The server is not installed, naming what to install.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        extra = " (or pip install 'asgikit[server]')" if package == "uvicorn" else ""
        raise ServerError(
            f"serving with {package} needs it installed: pip install {package}{extra}"
        ) from None


def own_options(name: str) -> frozenset[str]:
    """The option names server *name* takes beyond the common settings.

    Raises:
        ServerError: No such server, or it is not installed.
    """
    return _module(name).own_options()


def renamed(name: str) -> Mapping[str, str]:
    """Server *name*'s own names for common settings, each with the common name.

    Raises:
        ServerError: No such server.
    """
    return _module(name).RENAMED


def run(name: str, launch: Launch) -> int:
    """Serve with server *name* until it is stopped; the exit status (0: stopped cleanly).

    Raises:
        ServerError: The server is not installed, or cannot honour a setting.
    """
    return _module(name).run(launch)


def unsupported(server: str, settings: ServerSettings, names: tuple[str, ...]) -> None:
    """Refuse the common settings among *names* that were set and *server* cannot honour.

    Raises:
        ServerError: Naming the first such setting.
    """
    for name in names:
        if getattr(settings, name) is not None:
            raise ServerError(
                f"{server} has no equivalent of {name}: leave it out, or serve with uvicorn"
            )
