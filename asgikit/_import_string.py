"""Import strings, ``"package.module:attribute"``: their pattern, importing one, and the
import string of a class or function.

The registry resolves names through them and ``asgikit.signature`` turns options
annotated as callables into them; both raise ``RegistryError`` (re-exported by
``asgikit.registry``, where it is documented).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import re
from collections.abc import Iterable
from typing import Annotated, Any, Final, TypeAlias

import msgspec

__all__ = [
    "IMPORT_STRING_PATTERN",
    "ImportString",
    "RegistryError",
    "did_you_mean",
    "import_object",
    "is_import_string",
    "target_of",
]


class RegistryError(Exception):
    """A middleware name or import string that cannot be resolved, or a bad signature."""


RegistryError.__module__ = "asgikit.registry"  # where it is documented and imported from

_IMPORT_STRING: Final = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

IMPORT_STRING_PATTERN: Final = f"^{_IMPORT_STRING.pattern}$"
"""The JSON Schema pattern of an import string."""

ImportString: TypeAlias = Annotated[
    str,
    msgspec.Meta(
        pattern=IMPORT_STRING_PATTERN,
        description="an import string, 'package.module:attribute'",
    ),
]
"""The config-file type of an option annotated as a callable or a class."""


def is_import_string(text: str) -> bool:
    """Whether ``text`` is shaped as ``"package.module:attribute"``."""
    return _IMPORT_STRING.fullmatch(text) is not None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the candidate closest to ``word``, or ``""``."""
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def import_object(target: str) -> Any:
    """Import ``"package.module:attribute"`` (the attribute may be dotted).

    Raises:
        RegistryError: The string is malformed, the module does not exist or lacks the
            attribute. An error raised while the module itself runs propagates.
    """
    if not is_import_string(target):
        hint = ""
        if ":" not in target and "." in target:
            module, _, attr = target.rpartition(".")
            hint = f"; did you mean {module + ':' + attr!r}?"
        raise RegistryError(f"{target!r} is not an import string 'package.module:attribute'{hint}")
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name != missing and not module_name.startswith(missing + "."):
            raise  # the module exists and failed on an import of its own
        raise RegistryError(f"cannot import {target!r}: no module named {missing!r}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = [name for name in dir(obj) if not name.startswith("_")]
            raise RegistryError(
                f"cannot import {target!r}: {module_name!r} has no attribute {part!r}"
                + did_you_mean(part, names)
            ) from None
    return obj


def target_of(obj: object) -> str | None:
    """The import string of a class or function (through ``functools.partial``), if any."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    return f"{module}:{qualname}"
