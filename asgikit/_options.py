"""Validation helpers for middleware options (start-up time only, never per request)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = ["mask_passwords", "string_list"]

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
