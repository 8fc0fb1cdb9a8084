"""Reading an env file: ``NAME=value`` lines, as Docker Compose and python-dotenv write them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

__all__ = ["read_env_file"]

_LINE: Final = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)")
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _value(raw: str) -> str:
    if raw[:1] == "'" and raw.rfind("'") > 0:
        return raw[1 : raw.rfind("'")]  # single quotes: taken as written
    if raw[:1] == '"' and raw.rfind('"') > 0:
        quoted = raw[1 : raw.rfind('"')]
        return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), quoted)
    return re.split(r"\s+#", raw, maxsplit=1)[0].strip()  # a comment after a space


def read_env_file(path: Path) -> dict[str, str]:
    """The variables *path* sets, in order.

    Blank lines and ``#`` comments are skipped, ``export NAME=value`` is accepted, and
    values may be single-quoted (as written) or double-quoted (``\\n``, ``\\t``, ``\\"``
    and ``\\\\`` escapes).

    Raises:
        OSError: The file cannot be read.
        ValueError: A line is not ``NAME=value``; the message names the file and line.
    """
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = _LINE.fullmatch(text)
        if match is None:
            raise ValueError(f"{path}:{number}: expected NAME=value, got {text[:60]!r}")
        values[match.group(1)] = _value(match.group(2))
    return values
