"""The options of a middleware, read from its typed signature.

The options of a middleware are the keyword arguments of its typed ``__init__`` (or of
the factory function): ``options_of`` reads the signature once and maps each annotation
to a type msgspec can decode from a config file. That signature is the only place an
option is declared. ``Options`` turns them into msgspec struct fields (for the JSON
Schema) and into the defaults a config file would write.
"""

from __future__ import annotations

import enum
import functools
import inspect
import re
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final

import msgspec

from asgikit._annotation_types import (
    UNSUPPORTED,
    Converter,
    map_type,
    subscript,
    takes_objects,
)
from asgikit._import_string import RegistryError, is_import_string, target_of

__all__ = [
    "REQUIRED",
    "UNREPRESENTABLE",
    "Option",
    "Options",
    "config_value",
    "options_of",
    "subscript",
]

REQUIRED: Final = inspect.Parameter.empty
"""The ``default`` of an option that must be given."""

UNREPRESENTABLE: Final = object()
"""What ``config_value`` returns for a default a config file cannot write."""


@dataclass(frozen=True, slots=True)
class Option:
    """One keyword argument of a middleware, as a config file gives it.

    Attributes:
        name: The keyword.
        annotation: The Python annotation (``Any`` when there is none).
        type: The type msgspec decodes the config value as.
        default: The Python default, or ``REQUIRED``.
        description: From the ``Args:`` section of the docstring.
        convert: Turns the decoded value into the argument (imports import strings).
    """

    name: str
    annotation: Any
    type: Any
    default: Any
    description: str = ""
    convert: Converter | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True, slots=True)
class Options:
    """The options of one factory."""

    factory: Callable[..., Any]
    options: Mapping[str, Option]
    summary: str = ""
    extra: bool = False
    """The factory takes ``**kwargs``: other keys are passed on unchecked."""
    code_only: tuple[str, ...] = ()
    """Keywords annotated ``Any`` (or a container of ``Any``): live objects such as a
    tracer provider or a logger, which only code can pass. Not options of a file."""

    def fields(self) -> list[tuple[str, Any, Any]]:
        """These options as ``msgspec.defstruct`` fields, with their descriptions.

        Defaults are left out (msgspec takes no mutable ones): ``defaults`` has them.
        """
        fields: list[tuple[str, Any, Any]] = []
        for option in self.options.values():
            annotated = subscript(
                Annotated, option.type, msgspec.Meta(description=option.description)
            )
            if option.required:
                fields.append((option.name, annotated, msgspec.NODEFAULT))
            else:
                default = msgspec.field(default_factory=functools.partial(_same, option.default))
                fields.append((option.name, annotated, default))
        return fields

    def defaults(self) -> dict[str, Any]:
        """The defaults a config file could write, as it would write them."""
        defaults = {}
        for option in self.options.values():
            if not option.required:
                default = config_value(option.default)
                if default is not UNREPRESENTABLE and _encodable(default):
                    defaults[option.name] = default
        return defaults

    def struct(self, tag: str) -> type[msgspec.Struct]:
        """A msgspec Struct of these options, tagged ``use = tag`` (for the JSON Schema)."""
        return msgspec.defstruct(
            f"middleware.{tag}",
            self.fields(),
            kw_only=True,
            tag_field="use",
            tag=tag,
            forbid_unknown_fields=not self.extra,
        )


def _same(value: object) -> object:
    return value


def _encodable(value: object) -> bool:
    try:
        msgspec.json.encode(value)
    except (TypeError, OverflowError):
        return False
    return True


def config_value(value: object) -> Any:
    """How a Python default is written in a config file (import strings for callables)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, enum.Enum):
        return config_value(value.value)
    if isinstance(value, Mapping):
        return {str(key): config_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [config_value(item) for item in value]
    if isinstance(value, set | frozenset):
        items = [config_value(item) for item in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if callable(value):
        target = target_of(value)
        if target is not None and is_import_string(target):
            return target
    return UNREPRESENTABLE


# --------------------------------------------------------------------------------------
# Reading a signature: hints, docstring, parameters


_UNRESOLVED: Final = object()
"""The hint of an annotation that cannot be resolved: it takes anything, unchecked."""


def _hints(factory: Callable[..., Any], target: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:
        pass
    # One annotation that cannot be resolved (a name imported only for type checkers)
    # must not cost the others their types.
    module = sys.modules.get(getattr(factory, "__module__", "") or "")
    namespace = dict(vars(module)) if module is not None else {}
    hints: dict[str, Any] = {}
    for name, annotation in getattr(target, "__annotations__", {}).items():
        if isinstance(annotation, str):
            try:
                hints[name] = eval(annotation, namespace)  # what get_type_hints does
            except Exception:
                hints[name] = _UNRESOLVED
        else:
            hints[name] = annotation
    return hints


_ARG_LINE: Final = re.compile(r"^(\s*)(\*{0,2}\w+)(?:\s*\(.*?\))?:\s*(.*)$")


def _arg_docs(doc: str) -> dict[str, str]:
    """Descriptions from a Google-style ``Args:`` section."""
    described: dict[str, str] = {}
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return described
    indent: int | None = None
    current: str | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            current = None
            continue
        width = len(line) - len(line.lstrip())
        if indent is None:
            indent = width
        if width < indent:
            break
        match = _ARG_LINE.match(line)
        if width == indent and match:
            current = match.group(2).lstrip("*")
            described[current] = match.group(3).strip()
        elif current is not None:
            described[current] = f"{described[current]} {line.strip()}".strip()
    return described


def _annotated_callable(func: Any) -> Any:
    """What carries the annotations: ``__init__``, the function, or ``__call__``."""
    if inspect.isclass(func):
        return func.__init__
    if inspect.isroutine(func):
        return func
    return type(func).__call__  # an instance with __call__


_POSITIONAL: Final = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _without_app(
    factory: Callable[..., Any], params: list[inspect.Parameter]
) -> list[inspect.Parameter]:
    if not params or params[0].kind not in _POSITIONAL:
        raise RegistryError(
            f"{target_of(factory) or factory!r} does not take the app as its first argument"
        )
    return params[1:]


def _passed_by_keyword(factory: Callable[..., Any], param: inspect.Parameter) -> bool:
    """Whether a config file can pass ``param`` (``*args`` and ``**kwargs`` aside).

    Raises:
        RegistryError: ``param`` is positional-only and required.
    """
    if param.kind is inspect.Parameter.VAR_POSITIONAL:
        return False
    if param.kind is inspect.Parameter.POSITIONAL_ONLY:
        if param.default is REQUIRED:
            raise RegistryError(
                f"{target_of(factory) or factory!r} has a required positional-only "
                f"parameter {param.name!r}, which a config file cannot pass"
            )
        return False
    return True


def _option(param: inspect.Parameter, annotation: Any, description: str) -> Option:
    if annotation is _UNRESOLVED:
        annotation = Any
    mapped, convert = map_type(annotation)
    if mapped is UNSUPPORTED:
        mapped = Any
    return Option(
        name=param.name,
        annotation=annotation,
        type=mapped,
        default=param.default,
        description=description,
        convert=convert,
    )


def options_of(factory: Callable[..., Any], *, takes_app: bool = True) -> Options:
    """The options ``factory`` takes, read from its signature and annotations.

    Args:
        factory: A middleware class or factory function.
        takes_app: The first positional parameter is the app, not an option.

    Raises:
        RegistryError: The signature cannot be read, takes no app, or has a required
            positional-only parameter a config file cannot pass.
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"cannot read the signature of {factory!r}: {exc}") from None
    func = factory.func if isinstance(factory, functools.partial) else factory
    hints = _hints(func, _annotated_callable(func))
    doc = inspect.getdoc(func) or ""
    described = _arg_docs(doc)
    params = list(signature.parameters.values())
    if takes_app:
        params = _without_app(factory, params)
    options: dict[str, Option] = {}
    code_only: list[str] = []
    extra = False
    for param in params:
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            extra = True
        elif not _passed_by_keyword(factory, param):
            continue
        elif param.name in hints and takes_objects(hints[param.name]):
            code_only.append(param.name)
        else:
            annotation = hints.get(param.name, Any)
            options[param.name] = _option(param, annotation, described.get(param.name, ""))
    summary = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    return Options(factory, options, summary, extra, tuple(code_only))
