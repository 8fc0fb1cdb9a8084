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

from collections.abc import Iterable
from typing import Final, Generic, TypeVar
from urllib.parse import quote, quote_from_bytes

from asgikit.options import string_list
from asgikit.types import Scope

__all__ = ["PathMatcher", "PathTable", "location_path", "path_pattern"]

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
        return path in self._exact or path.startswith(self._prefixes)

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
