"""One path vocabulary: what ``exclude_paths`` and path rules mean in every middleware.

A *path pattern* is a request path starting with ``/``:

- ``/health`` covers ``/health`` and everything below it on segment boundaries
  (``/health/live``), never ``/healthz``. A trailing slash makes no difference
  (``/health/`` is ``/health``), and ``/`` covers every path.
- ``/static*`` (a ``*`` at the very end, nowhere else) covers every path that starts
  with the text before it: ``/static``, ``/static/app.js`` and ``/staticfiles`` alike.

Patterns match ``scope["path"]``: decoded, without the query, and without the
``root_path`` the app is mounted under (the ASGI spec's ``path`` is the full path; a
pattern is written as the client sends it). :class:`PathMatcher` answers "is this path
covered?", :class:`PathTable` "which entry covers it?" (the longest pattern wins).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar
from urllib.parse import quote, quote_from_bytes

from asgikit.options import string_list
from asgikit.types import Scope

__all__ = [
    "SELECTOR_FIELDS",
    "PathMatcher",
    "PathTable",
    "RuleTable",
    "Selector",
    "compile_route",
    "location_path",
    "methods_option",
    "path_pattern",
    "selector",
]

SELECTOR_FIELDS: Final = frozenset({"path", "route", "methods"})
"""The fields of a rule (rate limit, body limit, concurrency limit) that say which
requests it covers; the other fields say what it does."""

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PARAM: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")
# Starlette's convertors: what each placeholder matches within a path.
_CONVERTORS: Final = {
    "str": "[^/]+",
    "int": "[0-9]+",
    "float": r"[0-9]+(?:\.[0-9]+)?",
    "uuid": "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "path": ".*",
}

# What a Location may carry unescaped: RFC 3986 pchar (and "%", already escaped octets).
_PATH_SAFE: Final = "/%:@!$&'()*+,;="
_QUERY_SAFE: Final = _PATH_SAFE + "?"

_T = TypeVar("_T")


def path_pattern(value: object, option: str) -> str:
    """*value* checked as a path pattern and normalised (no trailing slash).

    Raises:
        ValueError: *value* is not a str starting with ``/``, or has a ``*`` that is not
            its last character.
    """
    if not isinstance(value, str) or not value.startswith("/") or "*" in value[:-1]:
        raise ValueError(
            f"{option}: expected a path starting with '/' (covering the path and everything "
            "below it), with an optional '*' at its end (covering every path that starts "
            f"with the text before it), got {value!r}"
        )
    if value.endswith("*"):
        return value
    return value.rstrip("/") or "/"


def _covers(pattern: str, path: str) -> bool:
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    return pattern == "/" or path == pattern or path.startswith(pattern + "/")


class PathMatcher:
    """Whether a request path is covered by any of a list of path patterns.

    Args:
        patterns: Path patterns (see the module docstring), as a list or a
            comma-separated str.
        option: The option's name, for error messages.

    A matcher with no patterns is false (``if matcher:``): a middleware keeps None
    instead, and tests ``is not None`` per request (``__bool__`` is a Python call).
    """

    __slots__ = ("_exact", "_prefixes", "patterns")

    def __init__(self, patterns: str | Iterable[str], option: str = "exclude_paths") -> None:
        entries = string_list(patterns, option)
        self.patterns: tuple[str, ...] = tuple(path_pattern(entry, option) for entry in entries)
        """The normalised patterns, in the order given."""
        exact: set[str] = set()
        prefixes: list[str] = []
        for pattern in self.patterns:
            if pattern.endswith("*"):
                prefixes.append(pattern[:-1])
            elif pattern == "/":
                prefixes.append("/")
            else:
                exact.add(pattern)
                prefixes.append(pattern + "/")
        # One set lookup and one str.startswith over a tuple: both run in C.
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __call__(self, path: str) -> bool:
        """True when *path* is covered by one of the patterns."""
        if path in self._exact or path.startswith(self._prefixes):
            return True
        # Starlette routes "/login\n" (a client's "/login%0A") to "/login": its patterns
        # end in "$", which matches before a final newline. Tested only on a miss.
        return path.endswith("\n") and self(path[:-1])

    def __repr__(self) -> str:
        return f"PathMatcher({list(self.patterns)!r})"


class PathTable(Generic[_T]):
    """Entries keyed by path pattern; a path finds the entry of the longest pattern
    covering it, or the default.

    Args:
        entries: ``(pattern, value)`` pairs; patterns are checked and normalised, and
            may appear once.
        default: What a path no pattern covers finds.
        option: The option's name, for error messages.
    """

    __slots__ = ("_default", "_entries")

    def __init__(
        self, entries: Iterable[tuple[str, _T]], default: _T, option: str = "routes"
    ) -> None:
        seen: dict[str, _T] = {}
        for raw, value in entries:
            pattern = path_pattern(raw, option)
            if pattern in seen:
                raise ValueError(f"{option}: {pattern!r} is listed twice")
            seen[pattern] = value
        self._default = default
        # Longest first: the first pattern that covers a path is the longest.
        self._entries = sorted(seen.items(), key=lambda item: len(item[0]), reverse=True)

    def match(self, path: str) -> _T:
        """The value of the longest pattern covering *path*, else the default."""
        if path.endswith("\n"):  # routed as the path without it (PathMatcher says why)
            path = path[:-1]
        for pattern, value in self._entries:
            if _covers(pattern, path):
                return value
        return self._default


def location_path(scope: Scope) -> str:
    """The request's path and query as sent, escaped for a ``Location`` header (a
    redirect to the same resource on another scheme or host)."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        path = quote_from_bytes(raw, safe=_PATH_SAFE)
    else:  # no raw_path: the decoded path, every "%" in it a literal one
        path = quote(scope["path"], safe=_PATH_SAFE.replace("%", ""))
    query = scope.get("query_string") or b""
    return f"{path}?{quote_from_bytes(query, safe=_QUERY_SAFE)}" if query else path


def compile_route(template: str, where: str = "route") -> re.Pattern[str]:
    """A pattern matching the paths of a route template (Starlette's placeholder syntax:
    ``{name}``, ``{name:int}``, ``{name:path}``...), compiled once.

    Raises:
        ValueError: The template does not start with ``/``, names an unknown convertor,
            or has a malformed placeholder; the message starts with *where*.
    """
    if not template.startswith("/"):
        raise ValueError(f"{where}: expected a template starting with '/', got {template!r}")
    parts: list[str] = []
    position = 0
    for placeholder in _PARAM.finditer(template):
        parts.append(re.escape(template[position : placeholder.start()]))
        convertor = placeholder.group(2) or "str"
        if convertor not in _CONVERTORS:
            known = ", ".join(_CONVERTORS)
            raise ValueError(f"{where}: unknown convertor {convertor!r} (known: {known})")
        parts.append(_CONVERTORS[convertor])
        position = placeholder.end()
    rest = template[position:]
    if "{" in rest or "}" in rest:
        raise ValueError(f"{where}: malformed placeholder in {template!r}")
    parts.append(re.escape(rest))
    # An optional final newline: Starlette's "$" lets "/login\n" reach "/login".
    return re.compile("".join(parts) + "\n?")


def methods_option(value: object, where: str) -> frozenset[str] | None:
    """A rule's ``methods``: uppercase tokens, ``GET`` bringing ``HEAD`` (frameworks answer
    HEAD with the GET handler); None for any method."""
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f"{where}: expected a list of methods, got {value!r}")
    methods = set()
    for method in value:
        if not isinstance(method, str) or not _TOKEN.fullmatch(method):
            raise ValueError(f"{where}: {method!r} is not an HTTP method")
        methods.add(method.upper())
    if not methods:
        raise ValueError(f"{where}: an empty list would match nothing; leave it out instead")
    if "GET" in methods:
        methods.add("HEAD")
    return frozenset(methods)


@dataclass(frozen=True, slots=True)
class Selector:
    """Which requests a rule covers (see :func:`selector`).

    Attributes:
        matches: Truthy for a path the rule covers; None for every path.
        methods: The methods it covers; None for every method.
        specificity: How specific it is: the length of its path, or the literal
            characters of its route (placeholders left out, so ``/upload/large`` is
            more specific than ``/upload/{name}``), then whether it names methods.
            Rules are tried most specific first.
    """

    matches: Callable[[str], object] | None
    methods: frozenset[str] | None
    specificity: tuple[int, bool]

    def __call__(self, path: str, method: str) -> bool:
        """Whether the rule covers a request for *path* with *method*."""
        if self.methods is not None and method not in self.methods:
            return False
        return self.matches is None or bool(self.matches(path))


def selector(spec: Mapping[str, object], where: str) -> Selector:
    """The requests a rule covers, from its ``path`` (a path pattern, as in
    ``exclude_paths``) or ``route`` (a template such as ``/users/{id}``; matched against
    the whole path), and ``methods``. Neither path nor route: every path.

    Raises:
        ValueError, TypeError: A field is malformed, or both ``path`` and ``route`` are
            given; the message starts with *where* and the field.
    """
    path, route = spec.get("path"), spec.get("route")
    methods = methods_option(spec.get("methods"), f"{where}.methods")
    if path is not None and route is not None:
        raise ValueError(f"{where}: give 'path' (a prefix) or 'route' (a template), not both")
    if route is not None:
        if not isinstance(route, str):
            raise ValueError(f"{where}.route: expected a template such as '/users/{{id}}'")
        pattern = compile_route(route, f"{where}.route")
        literal = len(_PARAM.sub("", route))
        return Selector(pattern.fullmatch, methods, (literal, methods is not None))
    if path is None:
        return Selector(None, methods, (0, methods is not None))
    normalised = path_pattern(path, f"{where}.path")
    matches = None if normalised == "/" else PathMatcher([normalised], f"{where}.path")
    return Selector(matches, methods, (len(normalised), methods is not None))


class RuleTable(Generic[_T]):
    """Values keyed by :class:`Selector`; a request finds the value of the most specific
    selector covering it (ties: the first given), or the default.

    Args:
        entries: ``(selector, value)`` pairs.
        default: What a request no selector covers finds.
    """

    __slots__ = ("_by_method", "_default")

    def __init__(self, entries: Iterable[tuple[Selector, _T]], default: _T) -> None:
        ordered = sorted(entries, key=lambda entry: entry[0].specificity, reverse=True)
        self._default = default
        # The candidates per method some selector names ("" for any other), computed once.
        named = {method for entry in ordered for method in (entry[0].methods or ())}
        self._by_method: dict[str, tuple[tuple[Callable[[str], object] | None, _T], ...]] = {
            method: tuple(
                (entry[0].matches, entry[1])
                for entry in ordered
                if entry[0].methods is None or method in entry[0].methods
            )
            for method in (*named, "")
        }

    def match(self, path: str, method: str) -> _T:
        """The value for a request for *path* with *method*."""
        candidates = self._by_method.get(method)
        if candidates is None:
            candidates = self._by_method[""]
        for matches, value in candidates:
            if matches is None or matches(path):
                return value
        return self._default
