"""Config files as text: where each key is, and ``${VAR}`` substitution.

tomllib and yaml give values without positions, so the source is scanned a second time
to map a path such as ``middleware[2].allow_origins`` to its line and column. Values
substituted from the environment are remembered, so no message ever echoes them.
"""

from __future__ import annotations

import bisect
import importlib
import importlib.util
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

ConfigPath: TypeAlias = tuple[str | int, ...]
"""Where a value is in the document: keys and list indices."""


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
