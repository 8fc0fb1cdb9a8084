"""Config files: TOML (or YAML) to a validated ``Config``, and ``build`` to an ASGI app.

Loading does everything that can fail before the first request: it parses the file,
substitutes ``${VAR}`` / ``${VAR:-default}`` from the environment, resolves every
``use`` through the registry, checks each option against the middleware's typed
signature with msgspec, imports import strings, and instantiates each middleware once
around a placeholder app so its own ``__init__`` checks run. Every problem is collected
and raised at once as a ``ConfigError``, each with the file, line and column of the key
(the source is scanned a second time to find them: tomllib gives no positions). Values
that came from the environment are never echoed in a message.

The pieces live beside this module: ``parse`` (text to data, with positions),
``source`` (issues, substitution), ``loader`` and ``option_check`` (checking), ``model``
(the classes), ``observability`` (the ``[logging]`` and ``[telemetry]`` tables),
``schema`` (the JSON Schema). This module loads and builds.
"""

from __future__ import annotations

import atexit
import os
import sys
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from asgikit.config.loader import Loader
from asgikit.config.model import Config, MiddlewareEntry, ServerConfig
from asgikit.config.observability import (
    claim_console,
    configure_logging,
    configure_telemetry,
    logging_options,
    logs_access,
    shut_down_after_lifespan,
    silence_server_access_logs,
    telemetry_options,
)
from asgikit.config.option_check import kind_of
from asgikit.config.parse import parse_toml, parse_yaml
from asgikit.config.reloading import error_app
from asgikit.config.source import ConfigError, Issue, Source, by_position, substitute
from asgikit.pipeline import PipelineWarning
from asgikit.registry import Registry, RegistryError, import_object
from asgikit.types import ASGIApp

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "RELOAD_ENV",
    "Config",
    "ConfigError",
    "Issue",
    "MiddlewareEntry",
    "ServerConfig",
    "app_from_env",
    "build",
    "configure_logging",
    "configure_telemetry",
    "import_app",
    "json_schema",
    "load_config",
    "logging_options",
    "ready_app",
    "telemetry_options",
]

CONFIG_ENV: Final = "ASGIKIT_CONFIG"
"""The environment variable ``app_from_env`` reads the config file's path from."""

DEFAULT_CONFIG: Final = "asgikit.toml"
"""The config file used when none is named."""

RELOAD_ENV: Final = "ASGIKIT_RELOAD"
"""Set by ``asgikit serve --reload``: ``app_from_env`` then serves a broken config file
or app as an error page, so that the reloader keeps watching, instead of failing."""


# --------------------------------------------------------------------------------------
# Loading


def load_config(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    registry: Registry | None = None,
) -> Config:
    """Read, substitute and validate a config file (``.toml``, or ``.yaml``/``.yml``).

    Args:
        path: The file.
        environ: Where ``${VAR}`` values come from; ``os.environ`` by default.
        registry: Where ``use`` names are looked up; built-ins and installed plug-ins by
            default.

    Raises:
        ConfigError: Every problem found, each with its line and column.
    """
    name = os.fspath(path)
    file = Path(name)
    source = Source(name, {})
    suffix = file.suffix.lower()
    text = _read(file, name, suffix)
    data = parse_toml(text, source) if suffix == ".toml" else parse_yaml(text, source)
    if source.issues:
        raise ConfigError(source.issues)
    data = substitute(data, (), os.environ if environ is None else environ, source)
    config = Loader(source, file.parent, registry or Registry()).document(data)
    if config is None:
        raise ConfigError(sorted(source.issues, key=by_position))
    return config


def _read(file: Path, name: str, suffix: str) -> str:
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(
            [Issue(name, None, None, "", "a config file ends in .toml, .yaml or .yml")]
        )
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Issue(name, None, None, "", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Issue(name, None, None, "", f"cannot read the file: {exc}")]) from None


def json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The JSON Schema of config files (see ``asgikit.config.schema``)."""
    from asgikit.config.schema import json_schema as build_schema  # the schema code loads on use

    return build_schema(registry)


# --------------------------------------------------------------------------------------
# Building


def _app_dirs(config: Config) -> list[str]:
    if config.app_dir is not None:
        return [str(config.app_dir)]
    return [os.getcwd(), str(config.path.resolve().parent)]


def import_app(config: Config, *, call_factory: bool = True) -> Any:
    """Import the config's app, as uvicorn would (``--app-dir``, ``--factory``).

    The app directory (``app_dir``; by default the current directory, then the config
    file's) is put in front of ``sys.path``.

    Raises:
        ConfigError: The module or attribute does not exist, or is not callable. An
            error raised by the app's own module or factory propagates unchanged.
    """
    for directory in reversed(_app_dirs(config)):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    try:
        app = import_object(config.app)
    except RegistryError as exc:
        raise ConfigError([config.issue(("app",), str(exc))]) from None
    except Exception as exc:  # the module itself failed: one line, with where it failed
        module = config.app.partition(":")[0]
        message = f"importing {module} failed: {_last_frame(exc)}"
        raise ConfigError([config.issue(("app",), message)]) from exc
    if not callable(app):
        raise ConfigError(
            [
                config.issue(
                    ("app",), f"{config.app!r} is {kind_of(app)}, not an ASGI app or factory"
                )
            ]
        )
    wrap = _wsgi_wrapper(config) if config.wsgi else None
    return ready_app(config, app, wrap) if call_factory else app


def _last_frame(exc: BaseException) -> str:
    """``Type: message (file, line N)``: the error and the last frame it passed through."""
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}, line {exc.lineno})"
    elif frames := traceback.extract_tb(exc.__traceback__):
        where = f" ({frames[-1].filename}, line {frames[-1].lineno})"
    text = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    first = text.splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}{where}" if first else f"{type(exc).__name__}{where}"


def ready_app(config: Config, imported: Any, wsgi: Any = None) -> Any:
    """The app ``import_app(config, call_factory=False)`` returned, made ready to wrap.

    Calls it when it is a factory; serves it through a2wsgi when ``wsgi = true``.

    Raises:
        ConfigError: The factory returned something else than an app, or ``wsgi = true``
            and a2wsgi is not installed.
    """
    app = imported
    if config.factory:
        app = app()
        if not callable(app):
            raise ConfigError(
                [
                    config.issue(
                        ("factory",), f"the factory returned {kind_of(app)}, not an ASGI app"
                    )
                ]
            )
    if config.wsgi:
        app = (wsgi or _wsgi_wrapper(config))(app)
    return app


def _wsgi_wrapper(config: Config) -> Any:
    try:
        from a2wsgi import WSGIMiddleware
    except ImportError:
        raise ConfigError(
            [
                config.issue(
                    ("wsgi",),
                    "wsgi = true serves the app through a2wsgi, which is not installed: "
                    "pip install 'asgikit[wsgi]'",
                )
            ]
        ) from None
    return WSGIMiddleware


def build(config: Config | str | os.PathLike[str]) -> ASGIApp:
    """The app of a config file, wrapped in its middleware.

    Emits each of the config's warnings as a ``PipelineWarning``.

    Args:
        config: A loaded ``Config``, or the path of a config file.

    Raises:
        ConfigError: The file does not load, or its app cannot be imported.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    app: ASGIApp = import_app(config)
    for issue in config.warnings:
        warnings.warn(str(issue), PipelineWarning, stacklevel=2)
    return config.pipeline._apply(app)


# --------------------------------------------------------------------------------------
# Serving from the environment


def app_from_env() -> ASGIApp:
    """An app factory for any server: builds the config file ``$ASGIKIT_CONFIG``.

    ``uvicorn --factory asgikit:app_from_env`` (or hypercorn, granian) serves the
    configured app; each worker builds its own. The file defaults to ``asgikit.toml``
    in the current directory. Logging is configured through ``asgikit.logging`` when
    asgikit has it, and OpenTelemetry through ``asgikit.telemetry`` when the file has a
    ``[telemetry]`` table (in each worker, after the fork; flushed and shut down when
    the lifespan shutdown is over, or at exit for a server that runs none). With
    asgikit's access log in the pipeline, the server's own access lines are dropped.

    With ``$ASGIKIT_RELOAD`` set (``asgikit serve --reload``), a config file or app that
    fails to load is printed and served as a 500 page instead of raising, so that the
    server keeps running and the reloader keeps watching.
    """
    if not os.environ.get(RELOAD_ENV):
        return _app_from_env()
    try:
        return _app_from_env()
    except ConfigError as exc:
        text = "\n".join(str(issue) for issue in exc.issues)
    except Exception as exc:  # the app's factory or a middleware failed
        text = "".join(traceback.format_exception(exc))
    print(text, file=sys.stderr, flush=True)
    return error_app(text)


def _app_from_env() -> ASGIApp:
    config = load_config(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    configure_logging(config)
    if logs_access(config):  # one access line per request, not the server's too
        silence_server_access_logs()
    telemetry = configure_telemetry(config)
    if telemetry is not None:
        atexit.register(telemetry.shutdown)  # a server that runs no lifespan, a failed build
    app = build(config)
    claim_console()  # a framework may have set logging up while its app was created
    if telemetry is None:
        return app
    return shut_down_after_lifespan(app, telemetry.shutdown)
