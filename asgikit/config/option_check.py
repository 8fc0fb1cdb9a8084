"""One table of a config file checked against the ``Options`` of the factory it is for.

Each value is decoded with msgspec as its option's type (leniently where it came from
``${VAR}`` substitution), import strings are imported, and every problem is reported
at its key, with a "did you mean" when a name is close to a known one.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, Literal, Union

import msgspec

from asgikit._import_string import ImportString, RegistryError
from asgikit.config.source import ConfigPath, Source
from asgikit.signature import Option, Options

__all__ = ["FAILED", "OptionChecker", "kind_of", "suggestion"]


def suggestion(word: str, candidates: Sequence[str]) -> str:
    """A "did you mean" for the closest candidate, else the list of them all."""
    close = difflib.get_close_matches(word, candidates, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of {', '.join(candidates)}" if candidates else ""


def kind_of(value: object) -> str:
    """What ``value`` is, as a config file says it: ``"a table"``, ``"a string"``..."""
    return {
        dict: "a table",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)


def _literal_strings(tp: Any) -> list[str]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return [arg for arg in args if isinstance(arg, str)]
    if origin is Annotated:
        return _literal_strings(args[0])
    if origin is Union or origin is types.UnionType:
        return [choice for arg in args for choice in _literal_strings(arg)]
    return []


_MSGSPEC_AT: Final = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.DOTALL)
_MSGSPEC_STEP: Final = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]")


def _msgspec_error(exc: msgspec.ValidationError) -> tuple[str, ConfigPath]:
    """msgspec's message without its ``- at `$...``` suffix, and that suffix as a path."""
    match = _MSGSPEC_AT.match(str(exc))
    assert match is not None
    message, where = match.group(1), match.group(2) or ""
    steps = tuple(
        step.group(1) if step.group(1) else int(step.group(2))
        for step in _MSGSPEC_STEP.finditer(where)
    )
    return message[:1].lower() + message[1:], steps


def _rejection(value: Any, option: Option, message: str, where: ConfigPath) -> str:
    """msgspec's ``message`` about ``value``, said better where the option's type allows."""
    choices = _literal_strings(option.type)
    if choices and isinstance(value, str) and not where:
        message = f"expected one of {', '.join(map(repr, choices))}"
        close = difflib.get_close_matches(value, choices, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
    elif option.type == ImportString and isinstance(value, str):
        message = "expected an import string 'package.module:attribute'"
        if ":" not in value and "." in value:
            module, _, attr = value.rpartition(".")
            message += f"; did you mean {module + ':' + attr!r}?"
    return message


class _Failed:
    pass


FAILED: Final = _Failed()
"""What ``OptionChecker.convert`` returns for a value it reported."""


class OptionChecker:
    """Checks values against options, reporting each problem to ``source``."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def convert(self, path: ConfigPath, value: Any, option: Option) -> Any:
        """``value`` decoded as ``option`` takes it, or ``FAILED`` (with an issue)."""
        if self.source.broken(path):
            return FAILED  # already reported: a substitution that failed
        lax = any(done[: len(path)] == path for done in self.source.substituted)
        try:
            decoded = msgspec.convert(value, option.type, strict=not lax)
        except msgspec.ValidationError as exc:
            message, where = _msgspec_error(exc)
            self.source.error((*path, *where), _rejection(value, option, message, where))
            return FAILED
        if option.convert is None:
            return decoded
        try:
            return option.convert(decoded)
        except RegistryError as exc:
            self.source.error(path, str(exc))
            return FAILED

    def arguments(
        self, path: ConfigPath, table: Mapping[str, Any], spec: Options, what: str
    ) -> dict[str, Any] | None:
        """The keyword arguments ``table`` gives, or None when any is wrong."""
        arguments: dict[str, Any] = {}
        ok = True
        for key, value in table.items():
            option = spec.options.get(key)
            if option is None and spec.extra and key not in spec.code_only:
                arguments[key] = value
            elif option is None:
                self._unknown((*path, key), key, spec, what)
                ok = False
            elif (converted := self.convert((*path, key), value, option)) is FAILED:
                ok = False
            else:
                arguments[key] = converted
        return arguments if self._required_given(path, table, spec, what) and ok else None

    def _unknown(self, path: ConfigPath, key: str, spec: Options, what: str) -> None:
        if key in spec.code_only:
            self.source.error(
                path,
                f"{what} takes {key!r} as a Python object (such as a provider or a "
                "logger): pass it in code, a config file cannot",
            )
        else:
            names = list(spec.options)
            self.source.error(path, f"{what} has no option {key!r}" + suggestion(key, names))

    def _required_given(
        self, path: ConfigPath, table: Mapping[str, Any], spec: Options, what: str
    ) -> bool:
        ok = True
        for option in spec.options.values():
            if option.required and option.name not in table:
                about = f": {option.description.replace('``', '')}" if option.description else ""
                self.source.error(path, f"missing {option.name!r}, required by {what}{about}")
                ok = False
        return ok
