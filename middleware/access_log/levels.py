"""Levels of access lines: level names, and the level of each status."""

from __future__ import annotations

from collections.abc import Mapping

from asgikit.logging import LEVELS

__all__ = ["level_number", "status_level_table"]


def level_number(value: object, option: str) -> int:
    """A level name (``"warning"``, any case) as its number."""
    number = LEVELS.get(value.lower()) if isinstance(value, str) else None
    if number is None:
        raise ValueError(f"{option}: {value!r} is not a level name ({', '.join(LEVELS)})")
    return number


def status_level_table(overrides: Mapping[int | str, str]) -> tuple[int, ...]:
    """Level numbers indexed by status (0-599): 1xx-3xx info, 4xx warning, 5xx error.

    Keys of *overrides* are a status (``404`` or ``"404"``) or a class (``"4xx"``);
    a status entry wins over its class.
    """
    by_class = {1: 20, 2: 20, 3: 20, 4: 30, 5: 40}
    by_status: dict[int, int] = {}
    if not isinstance(overrides, Mapping):
        raise TypeError(f"status_levels must be a mapping, not {overrides!r}")
    for key, name in overrides.items():
        number = level_number(name, f"status_levels[{key!r}]")
        text = str(key).lower() if not isinstance(key, bool) else ""
        if len(text) == 3 and text[0] in "12345" and text[1:] == "xx":
            by_class[int(text[0])] = number
        elif text.isdigit() and 100 <= int(text) <= 599:
            by_status[int(text)] = number
        else:
            raise ValueError(
                f"status_levels key {key!r} is neither a status (100-599) nor a class ('4xx')"
            )
    table = [by_class[5]] * 100  # below 100: not a status a server accepts
    for status in range(100, 600):
        table.append(by_status.get(status, by_class[status // 100]))
    return tuple(table)
