"""Config files: TOML (or YAML) to a validated ``Config``, and ``build`` to an ASGI app.

Loading does everything that can fail before the first request: it parses the file,
substitutes ``${VAR}`` / ``${VAR:-default}`` from the environment, resolves every
``use`` through the registry, checks each option against the middleware's typed
signature with msgspec, imports import strings, and instantiates each middleware once
around a placeholder app so its own ``__init__`` checks run. Every problem is collected
and raised at once as a ``ConfigError``, each with the file, line and column of the key
(the source is scanned a second time to find them: tomllib gives no positions). Values
that came from the environment are never echoed in a message.
"""

from __future__ import annotations

import atexit
import difflib
import functools
import importlib
import importlib.util
import os
import re
import sys
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeAlias, Union

import msgspec

from asgikit._config_source import (
    ConfigError,
    ConfigPath,
    Issue,
    _parse_toml,
    _parse_yaml,
    _Source,
    _substitute,
)
from asgikit.pipeline import Layer, Pipeline, PipelineWarning, order_problems
from asgikit.registry import (
    ImportString,
    Option,
    Options,
    Registry,
    RegistryError,
    Resolved,
    import_object,
    options_of,
)
from asgikit.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
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

"""Where a value is in the document: ``("middleware", 2, "allow_origins")``."""

LogLevel: TypeAlias = Literal["critical", "error", "warning", "info", "debug", "trace"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The ``[server]`` table: how ``asgikit serve`` serves the app (flags override it).

    Args:
        host: The address to listen on: 127.0.0.1 for this machine only, 0.0.0.0 for
            every IPv4 interface.
        port: The TCP port; 0 picks a free one.
        workers: Worker processes; each builds the app from the config file.
        reload: Restart when a Python file or the config file changes (development).
        log_level: The server's log level.
    """

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    workers: Annotated[int, msgspec.Meta(ge=1)] = 1
    reload: bool = False
    log_level: LogLevel = "info"


@dataclass(frozen=True, slots=True)
class _App:
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


_TOP_KEYS: Final = (
    "app",
    "factory",
    "app_dir",
    "wsgi",
    "server",
    "logging",
    "telemetry",
    "middleware",
)


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
    _source: _Source | None = field(default=None, repr=False, compare=False)

    @property
    def pipeline(self) -> Pipeline:
        """The middleware as a ``Pipeline``."""
        return Pipeline.from_layers(
            Layer(entry.resolved.factory, entry.arguments, _canonical_name(entry.resolved))
            for entry in self.middleware
        )

    def issue(self, path: ConfigPath, message: str) -> Issue:
        """An error at ``path`` in this file (with its line, when known)."""
        source = self._source or _Source(str(self.path), {})
        return source.issue(path, message)


def _canonical_name(resolved: Resolved) -> str | None:
    if resolved.origin == "import string":
        return None if ":" in resolved.name else resolved.name
    return resolved.name


# --------------------------------------------------------------------------------------
# Checking values against options


def _suggest(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of {', '.join(candidates)}" if candidates else ""


def _literal_strings(tp: Any) -> list[str]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return [arg for arg in args if isinstance(arg, str)]
    if origin is Annotated:
        return _literal_strings(args[0])
    if origin is Union or origin is types.UnionType:
        return [choice for arg in args for choice in _literal_strings(arg)]
    return []


_MSGSPEC_AT: Final = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.DOTALL)
_MSGSPEC_STEP: Final = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]")


def _msgspec_error(exc: msgspec.ValidationError) -> tuple[str, ConfigPath]:
    """msgspec's message without its ``- at `$...``` suffix, and that suffix as a path."""
    match = _MSGSPEC_AT.match(str(exc))
    assert match is not None
    message, where = match.group(1), match.group(2) or ""
    steps = tuple(
        step.group(1) if step.group(1) else int(step.group(2))
        for step in _MSGSPEC_STEP.finditer(where)
    )
    return message[:1].lower() + message[1:], steps


class _Failed:
    pass


_FAILED: Final = _Failed()


class _Loader:
    def __init__(self, source: _Source, base: Path, registry: Registry) -> None:
        self.source = source
        self.base = base
        self.registry = registry

    def convert(self, path: ConfigPath, value: Any, option: Option) -> Any:
        """``value`` decoded as ``option`` takes it, or ``_FAILED`` (with an issue)."""
        if self.source.broken(path):
            return _FAILED  # already reported: a substitution that failed
        lax = any(done[: len(path)] == path for done in self.source.substituted)
        try:
            decoded = msgspec.convert(value, option.type, strict=not lax)
        except msgspec.ValidationError as exc:
            message, where = _msgspec_error(exc)
            choices = _literal_strings(option.type)
            if choices and isinstance(value, str) and not where:
                message = f"expected one of {', '.join(map(repr, choices))}"
                close = difflib.get_close_matches(value, choices, n=1)
                if close:
                    message += f"; did you mean {close[0]!r}?"
            elif option.type == ImportString and isinstance(value, str):
                message = "expected an import string 'package.module:attribute'"
                if ":" not in value and "." in value:
                    module, _, attr = value.rpartition(".")
                    message += f"; did you mean {module + ':' + attr!r}?"
            self.source.error((*path, *where), message)
            return _FAILED
        if option.convert is None:
            return decoded
        try:
            return option.convert(decoded)
        except RegistryError as exc:
            self.source.error(path, str(exc))
            return _FAILED

    def arguments(
        self, path: ConfigPath, table: Mapping[str, Any], spec: Options, what: str
    ) -> dict[str, Any] | None:
        """The keyword arguments ``table`` gives, or None when any is wrong."""
        arguments: dict[str, Any] = {}
        ok = True
        names = list(spec.options)
        for key, value in table.items():
            option = spec.options.get(key)
            if option is None:
                if key in spec.code_only:
                    self.source.error(
                        (*path, key),
                        f"{what} takes {key!r} as a Python object (such as a provider or a "
                        "logger): pass it in code, a config file cannot",
                    )
                    ok = False
                    continue
                if spec.extra:
                    arguments[key] = value
                    continue
                self.source.error(
                    (*path, key), f"{what} has no option {key!r}" + _suggest(key, names)
                )
                ok = False
                continue
            converted = self.convert((*path, key), value, option)
            if converted is _FAILED:
                ok = False
            else:
                arguments[key] = converted
        for option in spec.options.values():
            if option.required and option.name not in table:
                about = f": {option.description.replace('``', '')}" if option.description else ""
                self.source.error(path, f"missing {option.name!r}, required by {what}{about}")
                ok = False
        return arguments if ok else None

    def table(self, key: str, data: Mapping[str, Any]) -> Mapping[str, Any] | None:
        value = data.get(key, {})
        if isinstance(value, dict):
            return value
        self.source.error((key,), f"expected a table, got {_kind(value)}")
        return None

    def document(self, data: Any) -> Config | None:
        source = self.source
        if not isinstance(data, dict):
            source.error((), f"expected a table of keys at the top level, got {_kind(data)}")
            return None
        for key in data:
            if key not in _TOP_KEYS:
                source.error((key,), f"unknown key {key!r}" + _suggest(str(key), _TOP_KEYS))
        scalars = {key: data[key] for key in ("app", "factory", "app_dir", "wsgi") if key in data}
        app = self.arguments((), scalars, options_of(_App, takes_app=False), "the config")
        server_table = self.table("server", data)
        server = None
        if server_table is not None:
            arguments = self.arguments(
                ("server",), server_table, options_of(ServerConfig, takes_app=False), "[server]"
            )
            server = None if arguments is None else ServerConfig(**arguments)
        logging_arguments = self.logging(data)
        telemetry_arguments = self.telemetry(data)
        entries = self.middleware(data.get("middleware", []))
        if source.issues or app is None or server is None or logging_arguments is None:
            return None
        app_dir = app.get("app_dir")
        return Config(
            path=Path(source.name),
            app=app["app"],
            factory=app.get("factory", False),
            app_dir=None if app_dir is None else (self.base / app_dir).resolve(),
            wsgi=app.get("wsgi", False),
            server=server,
            middleware=tuple(entries),
            logging=logging_arguments,
            telemetry=telemetry_arguments,
            warnings=tuple(sorted(source.warnings, key=_by_position)),
            _source=source,
        )

    def telemetry(self, data: Mapping[str, Any]) -> dict[str, Any] | None:
        if "telemetry" not in data:
            return None
        table = self.table("telemetry", data)
        if table is None:
            return None
        arguments = self.arguments(("telemetry",), table, telemetry_options(), "[telemetry]")
        if arguments is None:
            return None
        if arguments.get("set_global") is False:
            self.source.error(
                ("telemetry", "set_global"),
                "set_global = false leaves the providers to code: the middleware of a "
                "config file use the global ones, so they would make no spans or metrics",
            )
        for key in ("traces", "metrics"):
            extra = _EXPORTER_EXTRAS.get(arguments.get(key, ""))
            if extra is not None and importlib.util.find_spec(extra[0]) is None:
                self.source.error(
                    ("telemetry", key),
                    f"{key} = {arguments[key]!r} needs the {extra[1]} extra: "
                    f"pip install 'asgikit[{extra[1]}]'",
                )
        return arguments

    def logging(self, data: Mapping[str, Any]) -> dict[str, Any] | None:
        if "logging" not in data:
            return {}
        table = self.table("logging", data)
        if table is None:
            return None
        spec = logging_options()
        if spec is None:
            self.source.error(
                ("logging",),
                "[logging] configures asgikit.logging, which is not available in this "
                "version of asgikit",
            )
            return None
        return self.arguments(("logging",), table, spec, "[logging]")

    def middleware(self, value: Any) -> list[MiddlewareEntry]:
        if not isinstance(value, list):
            self.source.error(
                ("middleware",),
                f"expected an array of tables ([[middleware]] entries), got {_kind(value)}",
            )
            return []
        entries = []
        for index, raw in enumerate(value):
            entry = self.entry(("middleware", index), raw)
            if entry is not None:
                entries.append(entry)
        if len(entries) == len(value):
            self.order(entries)
        return entries

    def entry(self, path: ConfigPath, raw: Any) -> MiddlewareEntry | None:
        source = self.source
        if not isinstance(raw, dict):
            source.error(path, f"expected a table with 'use' and options, got {_kind(raw)}")
            return None
        use = raw.get("use")
        if source.broken((*path, "use")):
            return None
        if not isinstance(use, str):
            if use is None:
                source.error(
                    path,
                    "missing 'use': a built-in name such as 'request_id', a plug-in's name "
                    "or an import string 'package.module:Class'",
                )
            else:
                source.error((*path, "use"), f"expected a name or import string, got {_kind(use)}")
            return None
        try:
            resolved = self.registry.resolve(use)
            spec = options_of(resolved.factory)
        except RegistryError as exc:
            source.error((*path, "use"), str(exc))
            return None
        if resolved.origin == "built-in":
            shadowing = self.registry.shadowing(use)
            if shadowing is not None:
                source.warn((*path, "use"), shadowing)
        options = {key: value for key, value in raw.items() if key != "use"}
        arguments = self.arguments(path, options, spec, resolved.name)
        if arguments is None:
            return None
        try:
            resolved.factory(_placeholder_app, **arguments)
        except Exception as exc:
            text = str(exc) or type(exc).__name__
            at = path
            for key in arguments:
                if re.match(rf"{re.escape(key)}\b", text):
                    at = (*path, key)
                    break
            kind = "" if isinstance(exc, ValueError | TypeError) else f"{type(exc).__name__}: "
            source.error(at, f"{resolved.name} rejects its options: {kind}{text}")
            return None
        return MiddlewareEntry(
            use=use,
            resolved=resolved,
            arguments=arguments,
            written={key: source.written(value, (*path, key)) for key, value in options.items()},
            from_env=frozenset(key for key in options if source.from_env((*path, key))),
            spec=spec,
            line=source.where(path)[0],
        )

    def order(self, entries: Sequence[MiddlewareEntry]) -> None:
        names = [_canonical_name(entry.resolved) for entry in entries]
        for problem in order_problems(names):
            self.source.warn(
                ("middleware", problem.inner),
                f"{problem.message}; list it after {names[problem.outer]} "
                f"(middleware[{problem.outer}]), as in the canonical order",
            )


def _kind(value: object) -> str:
    return {
        dict: "a table",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)


async def _placeholder_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("asgikit: the placeholder app only stands in while options are checked")


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


_EXPORTER_EXTRAS: Final = {
    "otlp": ("opentelemetry.exporter.otlp.proto.http", "otlp"),
    "prometheus": ("opentelemetry.exporter.prometheus", "prometheus"),
}


def telemetry_options() -> Options:
    """The options of ``asgikit.telemetry.configure`` a ``[telemetry]`` table can set."""
    from asgikit.telemetry import configure  # the OpenTelemetry SDK loads on use

    return options_of(configure, takes_app=False)


def configure_telemetry(config: Config) -> Any:
    """Call ``asgikit.telemetry.configure(**config.telemetry)`` when the file has a
    ``[telemetry]`` table; its ``Telemetry`` (to shut down at exit), or None."""
    if config.telemetry is None:
        return None
    from asgikit.telemetry import configure

    return configure(**config.telemetry)


def configure_logging(config: Config) -> bool:
    """Call ``asgikit.logging.configure(**config.logging)`` if asgikit has that module.

    Returns:
        Whether logging was configured (otherwise structlog keeps its defaults).
    """
    if logging_options() is None:
        return False
    module = importlib.import_module("asgikit.logging")
    module.configure(**config.logging)
    return True


# --------------------------------------------------------------------------------------
# Public API


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
    source = _Source(name, {})
    suffix = file.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(
            [Issue(name, None, None, "", "a config file ends in .toml, .yaml or .yml")]
        )
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Issue(name, None, None, "", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Issue(name, None, None, "", f"cannot read the file: {exc}")]) from None
    data = _parse_toml(text, source) if suffix == ".toml" else _parse_yaml(text, source)
    if source.issues:
        raise ConfigError(source.issues)
    data = _substitute(data, (), os.environ if environ is None else environ, source)
    config = _Loader(source, file.parent, registry or Registry()).document(data)
    if config is None:
        raise ConfigError(sorted(source.issues, key=_by_position))
    return config


def _by_position(issue: Issue) -> tuple[int, int]:
    return (issue.line or 0, issue.column or 0)


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
    if not callable(app):
        raise ConfigError(
            [config.issue(("app",), f"{config.app!r} is {_kind(app)}, not an ASGI app or factory")]
        )
    wrap = _wsgi_wrapper(config) if config.wsgi else None
    return ready_app(config, app, wrap) if call_factory else app


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
                [config.issue(("factory",), f"the factory returned {_kind(app)}, not an ASGI app")]
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


def app_from_env() -> ASGIApp:
    """An app factory for any server: builds the config file ``$ASGIKIT_CONFIG``.

    ``uvicorn --factory asgikit:app_from_env`` (or hypercorn, granian) serves the
    configured app; each worker builds its own. The file defaults to ``asgikit.toml``
    in the current directory. Logging is configured through ``asgikit.logging`` when
    asgikit has it, and OpenTelemetry through ``asgikit.telemetry`` when the file has a
    ``[telemetry]`` table (in each worker, after the fork; shut down at exit).
    """
    config = load_config(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    configure_logging(config)
    telemetry = configure_telemetry(config)
    if telemetry is not None:
        atexit.register(telemetry.shutdown)
    return build(config)


def json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The JSON Schema of config files (see ``asgikit._schema``)."""
    from asgikit._schema import json_schema as build_schema  # the schema code loads on use

    return build_schema(registry)
