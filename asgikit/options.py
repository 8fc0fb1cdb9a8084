"""Checks for middleware options, shared by every middleware (start-up only, never per
request): each raises ``TypeError`` or ``ValueError`` with a message that starts with the
option's name."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Sized
from typing import Any, Final, TypeVar

__all__ = [
    "bounded_int",
    "flag",
    "mask_passwords",
    "number",
    "positive_seconds",
    "renamed",
    "string_list",
]

_URL_PASSWORD: Final = re.compile(r"(?<=://)([^:/@\s]*):([^@/\s]+)@")


def mask_passwords(text: str) -> str:
    """*text* with the password of every URL in it (``scheme://user:pw@``) as ``***``:
    what is shown of an option in an error or by ``asgikit check``."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


def string_list(value: str | Iterable[str], option: str) -> list[str]:
    """Read an option given as a comma-separated str or an iterable of str.

    Entries are stripped. A str drops its empty entries (``"a, b,"`` gives ``["a", "b"]``);
    an iterable keeps them, for the caller to reject as the mistake they are.

    Args:
        value: The option's value.
        option: The option's name, for error messages.

    Raises:
        TypeError: The value is neither, or an entry is not a str.
    """
    if isinstance(value, str):
        return [entry.strip() for entry in value.split(",") if entry.strip()]
    if not isinstance(value, Iterable):
        raise TypeError(f"{option} must be a str or an iterable of str, not {value!r}")
    items = []
    for entry in value:
        if not isinstance(entry, str):
            raise TypeError(f"{option} entries must be str, not {entry!r}")
        items.append(entry.strip())
    return items


def positive_seconds(value: Any, option: str) -> float | None:
    """A positive, finite number of seconds, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{option}: expected a number of seconds or None, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{option}: expected a positive, finite number of seconds, got {value!r}")
    return float(value)


def number(
    value: object,
    option: str,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
) -> float:
    """A finite number (an int or a float, not a bool) within the bounds given.

    Args:
        value: The option's value.
        option: The option's name, for error messages.
        minimum: The least value allowed.
        above: The value must be greater than this.
        maximum: The greatest value allowed.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{option}: expected a number, got {value!r}")
    if (
        not math.isfinite(value)
        or (minimum is not None and value < minimum)
        or (above is not None and value <= above)
        or (maximum is not None and value > maximum)
    ):
        bounds = [
            f"{word} {bound:g}"
            for word, bound in (("at least", minimum), ("above", above), ("at most", maximum))
            if bound is not None
        ]
        wanted = "a number " + " and ".join(bounds) if bounds else "a finite number"
        raise ValueError(f"{option}: expected {wanted}, got {value!r}")
    return float(value)


def flag(value: object, option: str) -> bool:
    """A bool option, checked: ``1`` or ``"yes"`` are mistakes, not true."""
    if not isinstance(value, bool):
        raise TypeError(f"{option}: expected true or false, got {value!r}")
    return value


def bounded_int(value: object, option: str, minimum: int, maximum: int | None = None) -> int:
    """An int option within ``minimum`` and ``maximum`` (inclusive; None: no maximum)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option}: expected an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise ValueError(f"{option}: expected an integer of at least {minimum}{upper}, got {value}")
    return value


_T = TypeVar("_T")


def renamed(old: str, old_value: _T | None, new: str, new_value: _T, default: _T) -> _T:
    """The value of an option that has a new name, from whichever name was given.

    A value under the *old* name warns (``DeprecationWarning`` naming the new one) and
    is used; giving both names is an error. The new name counts as given when its value
    is neither the default nor empty (``exclude_paths=[]`` beside ``exempt`` is no
    conflict: both say "nothing" or only one says something).

    Raises:
        TypeError: Both names were given.
    """
    if old_value is None:
        return new_value
    if new_value != default and not (isinstance(new_value, Sized) and len(new_value) == 0):
        # Given, and not as an empty list beside a default of () (the same: nothing).
        raise TypeError(f"{old} is the deprecated name of {new}: give {new} only")
    warnings.warn(
        f"{old} is deprecated, use {new} (the same meaning); {old} will be removed",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value
