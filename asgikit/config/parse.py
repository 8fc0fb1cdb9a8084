"""Config text to data, and where each key is: TOML and YAML.

tomllib and ``yaml.safe_load`` give values without positions, so the source is scanned
a second time to map a path such as ``middleware[2].allow_origins`` to its line and
column; a syntax error becomes an ``Issue`` at its own line and column.
"""

from __future__ import annotations

import bisect
import importlib
import re
import tomllib
from typing import Any, Final

from asgikit.config.source import ConfigPath, Issue, Positions, Source

__all__ = ["TomlScanner", "parse_toml", "parse_yaml", "toml_positions"]

_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_END: Final = frozenset(",]}\n\r#")


class TomlScanner:
    """Finds the line and column of every key, table and array item of a valid TOML
    document (tomllib has already rejected invalid ones), without re-parsing values."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.found: Positions = {}
        self.line_starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def record(self, path: ConfigPath, index: int) -> None:
        line = bisect.bisect_right(self.line_starts, index)
        self.found.setdefault(path, (line, index - self.line_starts[line - 1] + 1))

    def scan(self) -> Positions:
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


def toml_positions(text: str) -> Positions:
    """Where each key, table and array item of a valid TOML document is."""
    scanner = TomlScanner(text)
    try:
        return scanner.scan()
    except (IndexError, ValueError, tomllib.TOMLDecodeError):  # pragma: no cover - defensive
        return scanner.found  # what was found before the scanner lost its way


_TOML_AT: Final = re.compile(r"^(.*?)\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


def parse_toml(text: str, source: Source) -> Any:
    """The data of a TOML document, its key positions recorded in ``source``; None
    (with an issue) when it is not valid TOML."""
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
    source.positions.update(toml_positions(text))
    return data


def parse_yaml(text: str, source: Source) -> Any:
    """The data of a YAML document, its key positions recorded in ``source``; None
    (with an issue) when it is not valid YAML or PyYAML is not installed."""
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
        source.add(_yaml_issue(source.name, exc))
        return None
    except yaml.YAMLError as exc:
        source.add(Issue(source.name, None, None, "", f"invalid YAML: {exc}"))
        return None
    if node is not None:
        _yaml_positions(yaml, node, (), source.positions)
    return data


def _yaml_issue(name: str, exc: Any) -> Issue:
    mark = exc.problem_mark or exc.context_mark
    problem = " ".join(part for part in (exc.context, exc.problem) if part)
    return Issue(
        name,
        None if mark is None else mark.line + 1,
        None if mark is None else mark.column + 1,
        "",
        f"invalid YAML: {problem}",
    )


def _yaml_positions(yaml: Any, node: Any, path: ConfigPath, positions: Positions) -> None:
    mark = node.start_mark
    positions.setdefault(path, (mark.line + 1, mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        # Keys are scalars: safe_load refuses the others (unhashable).
        for key, value in node.value:
            name: str | int = key.value
            if key.tag == "tag:yaml.org,2002:int" and key.value.isdigit():
                name = int(key.value)
            start = key.start_mark
            positions.setdefault((*path, name), (start.line + 1, start.column + 1))
            _yaml_positions(yaml, value, (*path, name), positions)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _yaml_positions(yaml, item, (*path, index), positions)
