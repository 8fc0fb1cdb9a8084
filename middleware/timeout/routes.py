"""TimeoutMiddleware's pure logic: option validation, the limits, per-path limit sets."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from asgikit.options import number, positive_seconds, string_list
from asgikit.paths import path_pattern

__all__ = ["OVERRIDABLE", "Limit", "Limits", "build_routes", "grace_seconds", "make_limits"]

OVERRIDABLE = frozenset(
    {"total", "first_byte", "request_body_idle", "stream_idle", "stream_total", "status_code"}
)
"""The options a ``routes`` entry may override."""


class Limit(enum.Enum):
    """A limit that can fire; the value is the option that sets it."""

    TOTAL = "total"
    FIRST_BYTE = "first_byte"
    REQUEST_BODY_IDLE = "request_body_idle"
    STREAM_IDLE = "stream_idle"
    STREAM_TOTAL = "stream_total"


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits that apply to one request (seconds; None = no limit)."""

    total: float | None
    first_byte: float | None
    request_body_idle: float | None
    status_code: int
    stream_idle: float | None = None
    stream_total: float | None = None

    @property
    def watched(self) -> bool:
        """Whether a deadline needs a watchdog (``request_body_idle`` alone does not)."""
        return (
            self.total is not None
            or self.first_byte is not None
            or self.stream_idle is not None
            or self.stream_total is not None
        )

    def seconds(self, limit: Limit) -> float | None:
        """The length of ``limit`` in this limits."""
        seconds: float | None = getattr(self, limit.value)
        return seconds


def make_limits(options: Mapping[str, Any], where: str = "") -> Limits | None:
    """Validate ``total``, ``first_byte``, ``request_body_idle``, ``stream_idle``,
    ``stream_total`` and ``status_code``.

    Returns None when no limit is set at all (the middleware then steps aside).
    ``where`` names the routes entry in error messages.
    """
    total = positive_seconds(options["total"], f"total{where}")
    first_byte = positive_seconds(options["first_byte"], f"first_byte{where}")
    idle = positive_seconds(options["request_body_idle"], f"request_body_idle{where}")
    stream_idle = positive_seconds(options["stream_idle"], f"stream_idle{where}")
    stream_total = positive_seconds(options["stream_total"], f"stream_total{where}")
    status = options["status_code"]
    if isinstance(status, bool) or not isinstance(status, int) or not 500 <= status <= 599:
        raise ValueError(f"status_code{where} must be a 5xx status (504 or 503): {status!r}")
    if total is not None and first_byte is not None and first_byte >= total:
        raise ValueError(
            f"first_byte{where} ({first_byte:g} s) must be shorter than total ({total:g} s); "
            "a longer first_byte could never fire"
        )
    if all(limit is None for limit in (total, first_byte, idle, stream_idle, stream_total)):
        return None
    return Limits(total, first_byte, idle, status, stream_idle, stream_total)


def grace_seconds(value: Any) -> float:
    """Validate ``cancel_grace``: a finite number of seconds, zero allowed."""
    return number(value, "cancel_grace", minimum=0)


def build_routes(
    defaults: Mapping[str, Any],
    routes: Mapping[str, Mapping[str, Any]],
    exclude_paths: str | Iterable[str],
) -> list[tuple[str, Limits | None]]:
    """Validate ``routes`` and ``exclude_paths`` into (prefix, limits) pairs.

    A route's limits is the defaults with its overrides applied; an excluded path has no
    limits (None). A prefix may appear once across both.
    """
    if not isinstance(routes, Mapping):
        raise TypeError("routes must be a mapping of path prefix -> {option: value}")
    entries: dict[str, Limits | None] = {}
    for raw in string_list(exclude_paths, "exclude_paths"):
        prefix = path_pattern(raw, "exclude_paths")
        if prefix in entries:
            raise ValueError(f"exclude_paths lists {prefix!r} twice")
        entries[prefix] = None
    for raw, overrides in routes.items():
        prefix = path_pattern(raw, "routes")
        if prefix in entries:
            raise ValueError(f"{prefix!r} is both excluded and in routes, or listed twice")
        if not isinstance(overrides, Mapping):
            raise TypeError(f"routes[{raw!r}] must be a mapping of option -> value")
        unknown = sorted(set(overrides) - OVERRIDABLE)
        if unknown:
            raise ValueError(
                f"routes[{raw!r}] has unknown options {unknown}; allowed: {sorted(OVERRIDABLE)}"
            )
        entries[prefix] = make_limits({**defaults, **overrides}, f" in routes[{raw!r}]")
    return list(entries.items())
