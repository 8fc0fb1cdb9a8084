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

import bisect
import difflib
import functools
import importlib
import importlib.util
import os
import re
import sys
import tomllib
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeAlias, Union

import msgspec

from asgikit.pipeline import Layer, Pipeline, PipelineWarning, order_problems
from asgikit.registry import (
    ENTRY_POINT_GROUP,
    IMPORT_STRING_PATTERN,
    ImportString,
    Option,
    Options,
    Registry,
    RegistryError,
    Resolved,
    import_object,
    options_of,
    subscript,
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
    "import_app",
    "json_schema",
    "load_config",
    "logging_options",
]

CONFIG_ENV: Final = "ASGIKIT_CONFIG"
"""The environment variable ``app_from_env`` reads the config file's path from."""

DEFAULT_CONFIG: Final = "asgikit.toml"
"""The config file used when none is named."""

ConfigPath: TypeAlias = tuple[str | int, ...]
"""Where a value is in the document: ``("middleware", 2, "allow_origins")``."""

LogLevel: TypeAlias = Literal["critical", "error", "warning", "info", "debug", "trace"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem (or warning) in a config file.

    Attributes:
        file: The file's path as given.
        line: 1-based line of the key at fault (of the nearest enclosing key or table
            when the value itself has no line of its own); None when unknown.
        column: 1-based column, with ``line``.
        path: Where the value is in the document, ``middleware[2].allow_origins``.
        message: What is wrong, what was expected, and a "did you mean" when one is close.
        severity: ``"error"`` or ``"warning"``.
    """

    file: str
    line: int | None
    column: int | None
    path: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        what = f"{self.path}: {self.message}" if self.path else self.message
        return f"{where}: {self.severity}: {what}"


class ConfigError(Exception):
    """A config file that cannot be used; ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues: tuple[Issue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


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
    """

    app: ImportString
    factory: bool = False
    app_dir: str | None = None


_TOP_KEYS: Final = ("app", "factory", "app_dir", "server", "logging", "middleware")


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
        server: The ``[server]`` table.
        middleware: The pipeline, outermost first.
        logging: The ``[logging]`` table's arguments for ``asgikit.logging.configure``.
        warnings: What works but loses something (order, shadowed plug-ins).
    """

    path: Path
    app: str
    factory: bool = False
    app_dir: Path | None = None
    server: ServerConfig = field(default_factory=ServerConfig)
    middleware: tuple[MiddlewareEntry, ...] = ()
    logging: Mapping[str, Any] = field(default_factory=dict)
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
# Where each key is: tomllib and yaml.safe_load give values without positions.

_Positions: TypeAlias = dict[ConfigPath, tuple[int, int]]
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_END: Final = frozenset(",]}\n\r#")


class _TomlScanner:
    """Finds the line and column of every key, table and array item of a valid TOML
    document (tomllib has already rejected invalid ones), without re-parsing values."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.found: _Positions = {}
        self.line_starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def record(self, path: ConfigPath, index: int) -> None:
        line = bisect.bisect_right(self.line_starts, index)
        self.found.setdefault(path, (line, index - self.line_starts[line - 1] + 1))

    def scan(self) -> _Positions:
        text = self.text
        table: ConfigPath = ()
        arrays: dict[ConfigPath, int] = {}
        while True:
            self.skip(newlines=True)
            if self.i >= len(text):
                return self.found
            start = self.i
            if text.startswith("[[", start):
                self.i += 2
                keys = self.keys()
                self.i += 2
                path = (*self.resolve(keys[:-1], arrays), keys[-1])
                index = arrays.get(path, 0)
                arrays[path] = index + 1
                table = (*path, index)
                self.record(path, start)
            elif text[start] == "[":
                self.i += 1
                keys = self.keys()
                self.i += 1
                table = self.resolve(keys, arrays)
            else:
                self.pair(table)
                continue
            self.record(table, start)

    @staticmethod
    def resolve(keys: list[str], arrays: dict[ConfigPath, int]) -> ConfigPath:
        """A header's path, with the current index of each array of tables it passes."""
        path: ConfigPath = ()
        for key in keys:
            path = (*path, key)
            if path in arrays:
                path = (*path, arrays[path] - 1)
        return path

    def skip(self, *, newlines: bool) -> None:
        text = self.text
        while self.i < len(text):
            char = text[self.i]
            if char in " \t" or (newlines and char in "\r\n"):
                self.i += 1
            elif char == "#":
                end = text.find("\n", self.i)
                self.i = len(text) if end < 0 else end
            else:
                return

    def keys(self) -> list[str]:
        keys = []
        while True:
            self.skip(newlines=False)
            char = self.text[self.i]
            if char in "\"'":
                raw = self.string()
                keys.append(tomllib.loads(f"k = {raw}")["k"] if char == '"' else raw[1:-1])
            else:
                match = _BARE_KEY.match(self.text, self.i)
                if match is None:  # pragma: no cover - tomllib accepted the document
                    raise ValueError(f"unexpected {char!r}")
                keys.append(match.group())
                self.i = match.end()
            self.skip(newlines=False)
            if self.text[self.i] != ".":
                return keys
            self.i += 1

    def pair(self, table: ConfigPath) -> None:
        start = self.i
        path = table
        for key in self.keys():
            path = (*path, key)
            self.record(path, start)
        self.i += 1  # "="
        self.skip(newlines=False)
        self.value(path)

    def value(self, path: ConfigPath) -> None:
        text = self.text
        char = text[self.i]
        if char == "[":
            self.i += 1
            index = 0
            while True:
                self.skip(newlines=True)
                if text[self.i] == "]":
                    self.i += 1
                    return
                self.record((*path, index), self.i)
                self.value((*path, index))
                self.skip(newlines=True)
                if text[self.i] == ",":
                    self.i += 1
                    index += 1
        elif char == "{":
            self.i += 1
            while True:
                self.skip(newlines=True)
                if text[self.i] == "}":
                    self.i += 1
                    return
                if text[self.i] == ",":
                    self.i += 1
                    continue
                self.pair(path)
        elif char in "\"'":
            self.string()
        else:
            while self.i < len(text) and text[self.i] not in _SCALAR_END:
                self.i += 1

    def string(self) -> str:
        text = self.text
        start = self.i
        quote = text[start]
        triple = text.startswith(quote * 3, start)
        i = start + (3 if triple else 1)
        while True:
            if quote == '"' and text[i] == "\\":
                i += 2
            elif triple and text.startswith(quote * 3, i):
                end = i + 3
                while end < len(text) and text[end] == quote and end - i < 5:
                    end += 1
                break
            elif not triple and text[i] == quote:
                end = i + 1
                break
            else:
                i += 1
        self.i = end
        return text[start:end]


def _toml_positions(text: str) -> _Positions:
    scanner = _TomlScanner(text)
    try:
        return scanner.scan()
    except (IndexError, ValueError, tomllib.TOMLDecodeError):  # pragma: no cover - defensive
        return scanner.found  # what was found before the scanner lost its way


_TOML_AT: Final = re.compile(r"^(.*?)\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


def _parse_toml(text: str, source: _Source) -> Any:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_AT.match(str(exc))
        message, line, column = (str(exc), None, None) if match is None else match.groups()
        if match is not None and line is None:
            line, column = str(text.count("\n") + 1), "1"
        source.add(
            Issue(
                source.name,
                None if line is None else int(line),
                None if column is None else int(column),
                "",
                f"invalid TOML: {message[:1].lower()}{message[1:]}",
            )
        )
        return None
    source.positions.update(_toml_positions(text))
    return data


def _parse_yaml(text: str, source: _Source) -> Any:
    try:
        yaml: Any = importlib.import_module("yaml")
    except ModuleNotFoundError:
        source.add(
            Issue(source.name, None, None, "", "YAML needs PyYAML: pip install 'asgikit[yaml]'")
        )
        return None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
        loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        source.add(
            Issue(
                source.name,
                None if mark is None else mark.line + 1,
                None if mark is None else mark.column + 1,
                "",
                f"invalid YAML: {problem}",
            )
        )
        return None
    except yaml.YAMLError as exc:
        source.add(Issue(source.name, None, None, "", f"invalid YAML: {exc}"))
        return None

    def walk(node: Any, path: ConfigPath) -> None:
        mark = node.start_mark
        source.positions.setdefault(path, (mark.line + 1, mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            # Keys are scalars: safe_load refuses the others (unhashable).
            for key, value in node.value:
                name: str | int = key.value
                if key.tag == "tag:yaml.org,2002:int" and key.value.isdigit():
                    name = int(key.value)
                start = key.start_mark
                source.positions.setdefault((*path, name), (start.line + 1, start.column + 1))
                walk(value, (*path, name))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    if node is not None:
        walk(node, ())
    return data


# --------------------------------------------------------------------------------------
# The file as loaded: positions, substitutions, issues.


def _render_path(path: ConfigPath) -> str:
    rendered = ""
    for part in path:
        if isinstance(part, int):
            rendered += f"[{part}]"
        elif part.isidentifier():
            rendered += f".{part}" if rendered else part
        else:
            rendered += f"[{part!r}]"
    return rendered


class _Source:
    """One config file while it loads: key positions, what came from the environment,
    and the issues found so far."""

    def __init__(self, name: str, positions: _Positions) -> None:
        self.name = name
        self.positions = positions
        self.secrets: set[str] = set()
        self.substituted: set[ConfigPath] = set()
        self.shown: dict[ConfigPath, str] = {}
        self.issues: list[Issue] = []
        self.warnings: list[Issue] = []
        self.failed: set[ConfigPath] = set()

    def where(self, path: ConfigPath) -> tuple[int | None, int | None]:
        while path not in self.positions:
            if not path:
                return None, None
            path = path[:-1]
        return self.positions[path]

    def scrub(self, text: str) -> str:
        """``text`` without any value that came from the environment."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
            text = text.replace(repr(secret)[1:-1], "***")
        return text

    def issue(
        self, path: ConfigPath, message: str, severity: Literal["error", "warning"] = "error"
    ) -> Issue:
        line, column = self.where(path)
        return Issue(self.name, line, column, _render_path(path), self.scrub(message), severity)

    def add(self, issue: Issue) -> None:
        self.issues.append(issue)

    def error(self, path: ConfigPath, message: str) -> None:
        self.issues.append(self.issue(path, message))

    def warn(self, path: ConfigPath, message: str) -> None:
        self.warnings.append(self.issue(path, message, "warning"))

    def broken(self, path: ConfigPath) -> bool:
        """A substitution failed at or under ``path`` (and was reported)."""
        return any(failed[: len(path)] == path for failed in self.failed)

    def from_env(self, path: ConfigPath) -> bool:
        return any(shown[: len(path)] == path for shown in self.shown)

    def written(self, value: Any, path: ConfigPath) -> Any:
        """``value`` with each string from the environment shown as its reference."""
        if path in self.shown:
            return self.shown[path]
        if isinstance(value, dict):
            return {key: self.written(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [self.written(item, (*path, index)) for index, item in enumerate(value)]
        return value


_VAR_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _substitute(value: Any, path: ConfigPath, environ: Mapping[str, str], source: _Source) -> Any:
    """``value`` with ``${VAR}`` and ``${VAR:-default}`` replaced in every string."""
    if isinstance(value, dict):
        return {
            key: _substitute(item, (*path, key), environ, source) for key, item in value.items()
        }
    if isinstance(value, list):
        return [_substitute(item, (*path, i), environ, source) for i, item in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value
    text = value
    out: list[str] = []
    shown: list[str] = []
    from_env = substituted = False
    i = 0
    while (j := text.find("$", i)) >= 0:
        out.append(text[i:j])
        shown.append(text[i:j])
        if text.startswith("$${", j):
            out.append("${")
            shown.append("$${")
            i = j + 3
            continue
        if not text.startswith("${", j):
            out.append("$")
            shown.append("$")
            i = j + 1
            continue
        end = text.find("}", j + 2)
        if end < 0:
            source.error(path, "unclosed '${': write '$${' for a literal '${'")
            source.failed.add(path)
            return value
        name, has_default, default = text[j + 2 : end].partition(":-")
        if not _VAR_NAME.fullmatch(name):
            source.error(
                path,
                f"'${{{text[j + 2 : end]}}}' is not a substitution: write '${{NAME}}' or "
                "'${NAME:-default}' (or '$${' for a literal '${')",
            )
            source.failed.add(path)
            return value
        found = environ.get(name)
        if found is None or (has_default and not found):
            if not has_default:
                source.error(
                    path,
                    f"environment variable {name} is not set (give a default: "
                    f"'${{{name}:-default}}')",
                )
                source.failed.add(path)
                return value
            out.append(default)
            shown.append(default)
        else:
            from_env = True
            if found:
                source.secrets.add(found)
            out.append(found)
            shown.append(f"${{{name}}}")
        substituted = True
        i = end + 1
    out.append(text[i:])
    shown.append(text[i:])
    result = "".join(out)
    if substituted:
        source.substituted.add(path)
    if from_env:
        if result:
            source.secrets.add(result)
        source.shown[path] = "".join(shown)
    return result


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
        scalars = {key: data[key] for key in ("app", "factory", "app_dir") if key in data}
        app = self.arguments((), scalars, options_of(_App, takes_app=False), "the config")
        server_table = self.table("server", data)
        server = None
        if server_table is not None:
            arguments = self.arguments(
                ("server",), server_table, options_of(ServerConfig, takes_app=False), "[server]"
            )
            server = None if arguments is None else ServerConfig(**arguments)
        logging_arguments = self.logging(data)
        entries = self.middleware(data.get("middleware", []))
        if source.issues or app is None or server is None or logging_arguments is None:
            return None
        app_dir = app.get("app_dir")
        return Config(
            path=Path(source.name),
            app=app["app"],
            factory=app.get("factory", False),
            app_dir=None if app_dir is None else (self.base / app_dir).resolve(),
            server=server,
            middleware=tuple(entries),
            logging=logging_arguments,
            warnings=tuple(sorted(source.warnings, key=_by_position)),
            _source=source,
        )

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
    if config.factory and call_factory:
        app = app()
        if not callable(app):
            raise ConfigError(
                [config.issue(("factory",), f"the factory returned {_kind(app)}, not an ASGI app")]
            )
    return app


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
    asgikit has it.
    """
    config = load_config(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    configure_logging(config)
    return build(config)


# --------------------------------------------------------------------------------------
# JSON Schema


_IMPORT_ENTRY: Final = "middleware.import-string"
_SUBSTITUTION: Final = "substitution"


def _takes_any_string(node: Mapping[str, Any]) -> bool:
    if node.get("type") == "string" and "pattern" not in node:
        return True
    return any(_takes_any_string(member) for member in node.get("anyOf", ()))


def _scalar(node: Mapping[str, Any]) -> bool:
    if "anyOf" in node:
        return all(_scalar(member) for member in node["anyOf"])
    return "enum" in node or node.get("type") in ("integer", "number", "boolean", "null", "string")


def _allow_substitutions(definition: dict[str, Any]) -> None:
    """Let each scalar option that takes no plain string take a ``${NAME}`` string too,
    as loading does (a substituted string is converted to the option's type)."""
    for name, node in definition.get("properties", {}).items():
        if name == "use" or not _scalar(node) or _takes_any_string(node):
            continue
        kept = {key: node[key] for key in ("description", "default") if key in node}
        choice = {key: value for key, value in node.items() if key not in kept}
        definition["properties"][name] = {
            **kept,
            "anyOf": [choice, {"$ref": f"#/$defs/{_SUBSTITUTION}"}],
        }


def json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """A JSON Schema of the config file, for editors and validators (draft-07: the
    draft editors' language servers support best).

    Each middleware entry is one of the available built-ins or installed plug-ins
    (told apart by ``use``), or an import string with any options.

    Args:
        registry: The names to cover; the built-ins and installed plug-ins by default.
    """
    registry = registry or Registry()
    entries: list[Any] = []
    specs: dict[str, Options] = {}
    unavailable = []
    for name in registry.names():
        try:
            spec = options_of(registry.resolve(name).factory)
        except RegistryError:
            unavailable.append(name)
            continue
        entries.append(spec.struct(name))
        specs[f"middleware.{name}"] = spec
    specs["server"] = options_of(ServerConfig, takes_app=False)
    server = msgspec.defstruct(
        "server", specs["server"].fields(), kw_only=True, forbid_unknown_fields=True
    )
    specs["asgikit"] = options_of(_App, takes_app=False)
    fields = [
        *specs["asgikit"].fields(),
        (
            "server",
            subscript(Annotated, server, msgspec.Meta(description=_doc_summary(ServerConfig))),
            msgspec.field(default_factory=dict),
        ),
    ]
    logging_spec = logging_options()
    if logging_spec is not None:
        specs["logging"] = logging_spec
        logging = msgspec.defstruct(
            "logging",
            logging_spec.fields(),
            kw_only=True,
            forbid_unknown_fields=not logging_spec.extra,
        )
        description = "Arguments of asgikit.logging.configure: " + logging_spec.summary
        fields.append(
            (
                "logging",
                subscript(Annotated, logging, msgspec.Meta(description=description)),
                msgspec.field(default_factory=dict),
            )
        )
    items: Any = subscript(Union, *entries) if entries else dict[str, Any]
    fields.append(
        (
            "middleware",
            subscript(
                Annotated,
                subscript(list, items),
                msgspec.Meta(description="The middleware, outermost first."),
            ),
            msgspec.field(default_factory=list),
        )
    )
    document = msgspec.defstruct("asgikit", fields, kw_only=True, forbid_unknown_fields=True)
    schema = msgspec.json.schema(document)
    definitions: dict[str, Any] = schema["$defs"]
    for name, spec in specs.items():
        definition = definitions[name]
        for option, default in spec.defaults().items():
            definition["properties"][option]["default"] = default
        if spec.summary and name.startswith("middleware."):
            definition["description"] = spec.summary
    root: dict[str, Any] = definitions.pop("asgikit")
    choices = root["properties"]["middleware"]["items"]
    alternatives = choices.get("anyOf", [choices])
    definitions[_IMPORT_ENTRY] = {
        "title": "a middleware by import string",
        "type": "object",
        "properties": {
            "use": {
                "type": "string",
                "pattern": IMPORT_STRING_PATTERN,
                "description": "the middleware's import string, 'package.module:Class'",
            }
        },
        "required": ["use"],
    }
    root["properties"]["middleware"]["items"] = {
        "anyOf": [*alternatives, {"$ref": f"#/$defs/{_IMPORT_ENTRY}"}]
    }
    definitions[_SUBSTITUTION] = {
        "type": "string",
        "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
        "description": "a value from the environment: ${NAME} or ${NAME:-default}",
    }
    for definition in [root, *definitions.values()]:
        _allow_substitutions(definition)
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "asgikit config file",
        "description": (
            "An app by import string, how to serve it, and the middleware around it, "
            "outermost first."
        ),
        **{key: value for key, value in root.items() if key != "title"},
        "$defs": definitions,
        "x-unavailable": unavailable,
        "x-entry-point-group": ENTRY_POINT_GROUP,
    }


def _doc_summary(obj: object) -> str:
    return (obj.__doc__ or "").split("\n\n", 1)[0].replace("\n", " ").strip()
