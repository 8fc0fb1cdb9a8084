"""User hooks on observing middleware, called so that they can never break a response.

Tracing's ``request_hook`` and ``response_hook``, its ``metric_attributes`` and the
access log's ``extra_fields`` are the user's code running inside every request. A hook
that raises must change nothing for the client: :class:`Hook` calls it, catches what it
raises (an ``Exception``; cancellation and ``KeyboardInterrupt`` go on), and logs the
failure on the ``asgikit.hooks`` logger at most once per ``period`` seconds per hook,
with how many failures the pause left out, so a hook that fails on every request does
not flood the logs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final, Generic, TypeVar

__all__ = ["LOG_PERIOD", "Hook", "contained", "contained_fields", "hook_option"]

LOG_PERIOD: Final = 60.0
"""Seconds between two reports of the same hook's failures."""

_log = logging.getLogger("asgikit.hooks")

_R = TypeVar("_R")


def hook_option(value: object, option: str) -> Callable[..., Any] | None:
    """Check a hook option: None or a callable (the message starts with *option*)."""
    if value is not None and not callable(value):
        raise TypeError(f"{option}: expected a callable or None, not {value!r}")
    return value


class Hook(Generic[_R]):
    """Call *function* with whatever arguments, containing what it raises.

    Args:
        function: The user's hook, a plain (synchronous) callable.
        name: The option's name, for the log line (``"tracing.request_hook"``).
        period: The least number of seconds between two reports of its failures.
        clock: A monotonic clock in seconds (tests pass their own).
    """

    __slots__ = ("_clock", "_function", "_lock", "_name", "_next", "_period", "_skipped")

    def __init__(
        self,
        function: Callable[..., _R],
        name: str,
        *,
        period: float = LOG_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._function = function
        self._name = name
        self._period = period
        self._clock = clock
        self._next = -1.0  # the first failure is reported at once
        self._skipped = 0
        self._lock = threading.Lock()  # servers may call hooks from several threads

    def __call__(self, *args: Any) -> _R | None:
        """The hook's result, or None when it raised."""
        try:
            return self._function(*args)
        except Exception as exc:
            self._failed(exc)
            return None

    def _failed(self, exc: Exception) -> None:
        now = self._clock()
        with self._lock:
            if now < self._next:
                self._skipped += 1
                return
            skipped, self._skipped = self._skipped, 0
            self._next = now + self._period
        _log.warning(
            "%s raised %s; the request went on without it "
            "(%d more failures since the last report; reported at most every %gs)",
            self._name,
            type(exc).__qualname__,
            skipped,
            self._period,
            exc_info=exc,
        )


def contained(value: object, option: str, owner: str) -> Hook[Any] | None:
    """Check hook option *value* (None or a callable, see :func:`hook_option`) and put it
    behind a :class:`Hook` named ``owner.option``; None when it is None."""
    checked = hook_option(value, option)
    return None if checked is None else Hook(checked, f"{owner}.{option}")


def contained_fields(
    value: object, option: str, owner: str, *, reserved: Collection[str] = ()
) -> Hook[dict[str, Any]] | None:
    """:func:`contained`, for a hook that returns fields (attributes, log fields).

    Its result is checked inside the hook, so a wrong one is contained and reported
    like an exception: a mapping whose keys are all str and none of *reserved*. The
    hook returns a dict of its own, which the caller may keep.
    """
    checked = hook_option(value, option)
    if checked is None:
        return None
    function = checked

    def fields(*args: Any) -> dict[str, Any]:
        result = function(*args)
        if not isinstance(result, Mapping):
            raise TypeError(f"{option} returned {type(result).__name__}, not a mapping")
        extra = dict(result)
        for key in extra:
            if not isinstance(key, str) or key in reserved:
                raise TypeError(f"{option} returned the field name {key!r}")
        return extra

    return Hook(fields, f"{owner}.{option}")
