"""What a loaded config file is: ``Config``, its ``[server]`` table and its middleware.

``asgikit.config`` re-exports the public classes; ``asgikit.config.loader`` builds them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeAlias

import msgspec

from asgikit._import_string import ImportString
from asgikit.config.source import ConfigPath, Issue, Source
from asgikit.pipeline import Layer, Pipeline
from asgikit.registry import Resolved
from asgikit.signature import Options, options_of

__all__ = [
    "TOP_KEYS",
    "AppKeys",
    "Config",
    "LogLevel",
    "MiddlewareEntry",
    "ServerConfig",
    "canonical_name",
    "server_table_options",
]

LogLevel: TypeAlias = Literal["critical", "error", "warning", "info", "debug", "trace"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """The ``[server]`` table: how ``asgikit serve`` serves the app (flags override it).

    Any other key is an option of the chosen server itself (a keyword of
    ``uvicorn.Config``, an attribute of hypercorn's ``Config``, a keyword of granian's
    ``Server``), checked against that server's names.

    Args:
        server: The ASGI server: ``"uvicorn"``, ``"hypercorn"`` or ``"granian"``.
        host: The address to listen on: 127.0.0.1 for this machine only, 0.0.0.0 for
            every IPv4 interface.
        port: The TCP port; 0 picks a free one.
        uds: Listen on this Unix domain socket instead of host and port.
        fd: Listen on this inherited file descriptor (a socket a supervisor opened).
        workers: Worker processes; each builds the app from the config file.
        reload: Restart when a Python file or the config file changes (development).
        log_level: The server's log level.
        root_path: The path prefix under which a proxy mounts the app (ASGI
            ``root_path``).
        ssl_certfile: Serve HTTPS with this certificate file (PEM).
        ssl_keyfile: The certificate's private key file (PEM).
        timeout_graceful_shutdown: Seconds the requests in flight get to finish at
            shutdown; by default the server's own (uvicorn: no limit).
        timeout_keep_alive: Seconds an idle keep-alive connection stays open; by default
            the server's own (uvicorn 5, hypercorn 5).
        limit_concurrency: At most this many connections and tasks at once per worker;
            past it, 503 (uvicorn) or back-pressure (granian).
        env_file: Set the environment variables of this file (``NAME=value`` lines)
            that are not already set, before the file's ``${NAME}`` values are read.
            Relative to the config file.
        options: The chosen server's own options (the table's other keys).
    """

    server: Literal["uvicorn", "hypercorn", "granian"] = "uvicorn"
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    uds: str | None = None
    fd: Annotated[int, msgspec.Meta(ge=0)] | None = None
    workers: Annotated[int, msgspec.Meta(ge=1)] = 1
    reload: bool = False
    log_level: LogLevel = "info"
    root_path: str = ""
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    timeout_graceful_shutdown: Annotated[float, msgspec.Meta(gt=0)] | None = None
    timeout_keep_alive: Annotated[float, msgspec.Meta(gt=0)] | None = None
    limit_concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None
    env_file: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


def server_table_options() -> Options:
    """The options of ``[server]`` a file writes as keys of their own (not ``options``)."""
    spec = options_of(ServerConfig, takes_app=False)
    own = {name: option for name, option in spec.options.items() if name != "options"}
    return dataclasses.replace(spec, options=own)


@dataclass(frozen=True, slots=True)
class AppKeys:
    """The top-level keys that say which app to serve.

    Args:
        app: The ASGI app, as an import string ``"package.module:attribute"``.
        factory: ``app`` names a function that takes no arguments and returns the ASGI
            app; it is called once per worker.
        app_dir: The directory to import the app from, relative to the config file. By
            default the current directory, then the config file's directory.
        wsgi: ``app`` is a WSGI app (Flask, Django's WSGI handler): serve it through
            a2wsgi's ``WSGIMiddleware`` (the ``wsgi`` extra), inside the middleware.
    """

    app: ImportString
    factory: bool = False
    app_dir: str | None = None
    wsgi: bool = False


TOP_KEYS: Final = (
    "app",
    "factory",
    "app_dir",
    "wsgi",
    "server",
    "logging",
    "telemetry",
    "middleware",
)
"""Every key a config file may have at the top level, in the order they are listed."""


@dataclass(frozen=True, slots=True)
class MiddlewareEntry:
    """One ``[[middleware]]`` entry, resolved and checked.

    Attributes:
        use: The ``use`` value as written.
        resolved: What it resolved to (name, import string, origin, factory).
        arguments: The keyword arguments the factory gets (import strings imported).
        written: The options as written, with values from the environment shown as
            their ``${VAR}`` reference.
        from_env: The options whose value came (in part) from the environment.
        spec: Every option the factory takes, with its default.
        line: The line of the entry in the file.
    """

    use: str
    resolved: Resolved
    arguments: Mapping[str, Any]
    written: Mapping[str, Any]
    from_env: frozenset[str]
    spec: Options = field(repr=False)
    line: int | None = None


@dataclass(frozen=True)
class Config:
    """A loaded, validated config file.

    Attributes:
        path: The file.
        app: The app's import string.
        factory: ``app`` is a factory to call.
        app_dir: Where to import the app from (None: the current directory, then the
            config file's).
        wsgi: ``app`` is a WSGI app, served through a2wsgi.
        server: The ``[server]`` table.
        middleware: The pipeline, outermost first.
        logging: The ``[logging]`` table's arguments for ``asgikit.logging.configure``.
        warnings: What works but loses something (order, shadowed plug-ins).
    """

    path: Path
    app: str
    factory: bool = False
    app_dir: Path | None = None
    wsgi: bool = False
    server: ServerConfig = field(default_factory=ServerConfig)
    middleware: tuple[MiddlewareEntry, ...] = ()
    logging: Mapping[str, Any] = field(default_factory=dict)
    telemetry: Mapping[str, Any] | None = None
    warnings: tuple[Issue, ...] = ()
    _source: Source | None = field(default=None, repr=False, compare=False)

    @property
    def pipeline(self) -> Pipeline:
        """The middleware as a ``Pipeline``."""
        return Pipeline.from_layers(
            Layer(entry.resolved.factory, entry.arguments, canonical_name(entry.resolved))
            for entry in self.middleware
        )

    def issue(self, path: ConfigPath, message: str) -> Issue:
        """An error at ``path`` in this file (with its line, when known)."""
        source = self._source or Source(str(self.path), {})
        return source.issue(path, message)


def canonical_name(resolved: Resolved) -> str | None:
    """The name the ordering rules know ``resolved`` by, if any."""
    if resolved.origin == "import string":
        return None if ":" in resolved.name else resolved.name
    return resolved.name
