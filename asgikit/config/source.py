"""A config file while it loads: its issues, where each key is, ``${VAR}`` substitution.

``Source`` holds the key positions (found by ``asgikit.config.parse``) so that every
issue names its line and column. Values substituted from the environment are
remembered, so no message ever echoes them, and so are values that are only a
``${NAME:-default}`` fallback (``Source.defaulted``), which the standard variables of
``[telemetry]`` may override.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

__all__ = ["ConfigError", "ConfigPath", "Issue", "Positions", "Source", "by_position", "substitute"]

ConfigPath: TypeAlias = tuple[str | int, ...]
"""Where a value is in the document: keys and list indices."""

Positions: TypeAlias = dict[ConfigPath, tuple[int, int]]
"""The line and column (1-based) of each key, table and array item."""


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


def by_position(issue: Issue) -> tuple[int, int]:
    """A sort key: issues in the order of the file."""
    return (issue.line or 0, issue.column or 0)


class ConfigError(Exception):
    """A config file that cannot be used; ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues: tuple[Issue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


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


class Source:
    """One config file while it loads: key positions, what came from the environment,
    and the issues found so far."""

    def __init__(self, name: str, positions: Positions) -> None:
        self.name = name
        self.positions = positions
        self.secrets: set[str] = set()
        self.substituted: set[ConfigPath] = set()
        self.defaulted: set[ConfigPath] = set()
        """Strings made only of ``${NAME:-default}`` fallbacks (every NAME unset or empty)."""
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


def substitute(value: Any, path: ConfigPath, environ: Mapping[str, str], source: Source) -> Any:
    """``value`` with ``${VAR}`` and ``${VAR:-default}`` replaced in every string."""
    if isinstance(value, dict):
        return {key: substitute(item, (*path, key), environ, source) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, (*path, i), environ, source) for i, item in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value
    substitution = _Substitution(path, environ, source)
    result = substitution.run(value)
    if result is None:
        return value  # reported, and marked as failed
    if substitution.substituted:
        source.substituted.add(path)
        if not substitution.from_env and not substitution.literal:
            source.defaulted.add(path)
    if substitution.from_env:
        if result:
            source.secrets.add(result)
        source.shown[path] = "".join(substitution.shown)
    return result


class _Substitution:
    """One string's ``${...}`` references replaced: the result, and how to show it (with
    each value from the environment as its ``${NAME}``)."""

    def __init__(self, path: ConfigPath, environ: Mapping[str, str], source: Source) -> None:
        self.path = path
        self.environ = environ
        self.source = source
        self.out: list[str] = []
        self.shown: list[str] = []
        self.from_env = False
        self.substituted = False
        self.literal = False  # text written in the file, outside any ${...}

    def add(self, text: str, shown: str | None = None) -> None:
        self.out.append(text)
        self.shown.append(text if shown is None else shown)

    def add_literal(self, text: str, shown: str | None = None) -> None:
        if text:
            self.literal = True
            self.add(text, shown)

    def fail(self, message: str) -> None:
        self.source.error(self.path, message)
        self.source.failed.add(self.path)

    def run(self, text: str) -> str | None:
        """``text`` substituted, or None when a reference in it is wrong (reported)."""
        i = 0
        while (j := text.find("$", i)) >= 0:
            self.add_literal(text[i:j])
            if text.startswith("$${", j):
                self.add_literal("${", "$${")
                i = j + 3
            elif not text.startswith("${", j):
                self.add_literal("$")
                i = j + 1
            else:
                after = self.reference(text, j)
                if after is None:
                    return None
                i = after
        self.add_literal(text[i:])
        return "".join(self.out)

    def reference(self, text: str, start: int) -> int | None:
        """Substitute the ``${...}`` at ``start``; where the text goes on, or None."""
        end = text.find("}", start + 2)
        if end < 0:
            self.fail("unclosed '${': write '$${' for a literal '${'")
            return None
        name, has_default, default = text[start + 2 : end].partition(":-")
        if not _VAR_NAME.fullmatch(name):
            self.fail(
                f"'${{{text[start + 2 : end]}}}' is not a substitution: write '${{NAME}}' or "
                "'${NAME:-default}' (or '$${' for a literal '${')"
            )
            return None
        found = self.environ.get(name)
        if found is not None and not (has_default and not found):
            self.from_env = True
            if found:
                self.source.secrets.add(found)
            self.add(found, f"${{{name}}}")
        elif has_default:
            self.add(default)
        else:
            self.fail(
                f"environment variable {name} is not set (give a default: '${{{name}:-default}}')"
            )
            return None
        self.substituted = True
        return end + 1
