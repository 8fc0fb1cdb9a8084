"""TimeoutMiddleware's pure logic: option validation, per-path policies, prefix matching."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["OVERRIDABLE", "Policy", "RouteTable", "build_routes", "make_policy"]

OVERRIDABLE = frozenset({"total", "first_byte", "request_body_idle", "status_code"})
"""The options a ``routes`` entry may override."""


@dataclass(frozen=True, slots=True)
class Policy:
    """The limits that apply to one request (seconds; None = no limit)."""

    total: float | None
    first_byte: float | None
    request_body_idle: float | None
    status_code: int

    @property
    def watched(self) -> bool:
        """Whether a deadline needs a watchdog (``request_body_idle`` alone does not)."""
        return self.total is not None or self.first_byte is not None


def _seconds(name: str, value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}{where} must be a number of seconds or None, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}{where} must be a positive, finite number of seconds: {value!r}")
    return float(value)


def make_policy(options: Mapping[str, Any], where: str = "") -> Policy | None:
    """Validate ``total``, ``first_byte``, ``request_body_idle`` and ``status_code``.

    Returns None when no limit is set at all (the middleware then steps aside).
    ``where`` names the routes entry in error messages.
    """
    total = _seconds("total", options["total"], where)
    first_byte = _seconds("first_byte", options["first_byte"], where)
    idle = _seconds("request_body_idle", options["request_body_idle"], where)
    status = options["status_code"]
    if isinstance(status, bool) or not isinstance(status, int) or not 500 <= status <= 599:
        raise ValueError(f"status_code{where} must be a 5xx status (504 or 503): {status!r}")
    if total is not None and first_byte is not None and first_byte >= total:
        raise ValueError(
            f"first_byte{where} ({first_byte:g} s) must be shorter than total ({total:g} s); "
            "a longer first_byte could never fire"
        )
    if total is None and first_byte is None and idle is None:
        return None
    return Policy(total, first_byte, idle, status)


def _normalize_prefix(prefix: object, option: str) -> str:
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        raise ValueError(f"{option} entries must be paths starting with '/': {prefix!r}")
    return prefix.rstrip("/") or "/"


class RouteTable:
    """Longest-prefix matching of request paths to policies, on whole path segments.

    A prefix ``/reports`` matches ``/reports`` and ``/reports/2024``, never ``/reportsX``;
    a trailing slash in the configuration makes no difference; ``/`` matches every path.
    """

    __slots__ = ("_default", "_entries")

    def __init__(
        self, default: Policy | None, entries: Iterable[tuple[str, Policy | None]]
    ) -> None:
        self._default = default
        # (prefix, prefix + "/", policy), longest first: the first match is the longest.
        self._entries = sorted(
            ((p, p if p == "/" else p + "/", policy) for p, policy in entries),
            key=lambda entry: len(entry[0]),
            reverse=True,
        )

    def match(self, path: str) -> Policy | None:
        for prefix, below, policy in self._entries:
            if path == prefix or path.startswith(below):
                return policy
        return self._default


def build_routes(
    defaults: Mapping[str, Any],
    routes: Mapping[str, Mapping[str, Any]],
    exclude_paths: Iterable[str],
) -> list[tuple[str, Policy | None]]:
    """Validate ``routes`` and ``exclude_paths`` into (prefix, policy) pairs.

    A route's policy is the defaults with its overrides applied; an excluded path has no
    policy (None). A prefix may appear once across both.
    """
    if isinstance(exclude_paths, str | bytes):
        raise TypeError("exclude_paths must be a collection of paths, not a single str")
    if not isinstance(routes, Mapping):
        raise TypeError("routes must be a mapping of path prefix -> {option: value}")
    entries: dict[str, Policy | None] = {}
    for raw in exclude_paths:
        prefix = _normalize_prefix(raw, "exclude_paths")
        if prefix in entries:
            raise ValueError(f"exclude_paths lists {prefix!r} twice")
        entries[prefix] = None
    for raw, overrides in routes.items():
        prefix = _normalize_prefix(raw, "routes")
        if prefix in entries:
            raise ValueError(f"{prefix!r} is both excluded and in routes, or listed twice")
        if not isinstance(overrides, Mapping):
            raise TypeError(f"routes[{raw!r}] must be a mapping of option -> value")
        unknown = sorted(set(overrides) - OVERRIDABLE)
        if unknown:
            raise ValueError(
                f"routes[{raw!r}] has unknown options {unknown}; allowed: {sorted(OVERRIDABLE)}"
            )
        entries[prefix] = make_policy({**defaults, **overrides}, f" in routes[{raw!r}]")
    return list(entries.items())
