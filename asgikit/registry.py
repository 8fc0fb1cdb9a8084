"""Middleware names to factories, and the options each one takes.

A name in a config file (``use = "cors"``) is a built-in, a plug-in registered under the
entry-point group ``asgikit.middleware``, or an import string ``"package.module:Class"``.
Built-ins are import strings too, imported only when used: a middleware whose module is
not in this version of asgikit is reported as such, and is picked up as soon as it is.

The options of a middleware are the keyword arguments of its typed ``__init__`` (or of
the factory function): ``options_of`` reads the signature once and maps each annotation
to a type msgspec can decode from a config file. That signature is the only place an
option is declared.
"""

from __future__ import annotations

import collections.abc
import difflib
import enum
import functools
import importlib
import inspect
import operator
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Annotated, Any, Final, Literal, TypeAlias, Union

import msgspec

__all__ = [
    "BUILTINS",
    "ENTRY_POINT_GROUP",
    "IMPORT_STRING_PATTERN",
    "REQUIRED",
    "UNREPRESENTABLE",
    "ImportString",
    "Option",
    "Options",
    "Registry",
    "RegistryError",
    "Resolved",
    "config_value",
    "import_object",
    "options_of",
    "subscript",
    "target_of",
]

ENTRY_POINT_GROUP: Final = "asgikit.middleware"
"""The entry-point group third-party middleware register under."""

BUILTINS: Final[Mapping[str, str]] = {
    "proxy_headers": "asgikit.middleware.proxy_headers:ProxyHeadersMiddleware",
    "request_id": "asgikit.middleware.request_id:RequestIDMiddleware",
    "inspector": "asgikit.middleware.inspector:DevInspectorMiddleware",
    "access_log": "asgikit.middleware.access_log:AccessLogMiddleware",
    "tracing": "asgikit.middleware.tracing:TracingMiddleware",
    "cors": "asgikit.middleware.cors:CORSMiddleware",
    "rate_limit": "asgikit.middleware.rate_limit:RateLimitMiddleware",
    "timeout": "asgikit.middleware.timeout:TimeoutMiddleware",
    "compression": "asgikit.middleware.compression:CompressionMiddleware",
    "contract": "asgikit.contract:enforce",
}
"""Built-in names and the import strings they stand for (canonical order, then the rest)."""

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

# Modules of optional dependencies, and the extra that installs each.
_EXTRAS: Final = {
    "redis": "redis",
    "zstandard": "zstd",
    "opentelemetry.exporter.otlp": "otlp",
    "opentelemetry.exporter.prometheus": "prometheus",
    "uvicorn": "server",
    "yaml": "yaml",
}


class RegistryError(Exception):
    """A middleware name or import string that cannot be resolved, or a bad signature."""


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _missing_module_hint(exc: ModuleNotFoundError) -> str:
    name = exc.name or ""
    for module, extra in _EXTRAS.items():
        if name == module or name.startswith(module + "."):
            return f" (pip install 'asgikit[{extra}]')"
    return ""


def subscript(generic: Any, *args: Any) -> Any:
    """``generic[args]`` for types built at run time (``dict[key, value]`` and kin)."""
    return operator.getitem(generic, args[0] if len(args) == 1 else args)


def import_object(target: str) -> Any:
    """Import ``"package.module:attribute"`` (the attribute may be dotted).

    Raises:
        RegistryError: The string is malformed, the module does not exist or lacks the
            attribute. An error raised while the module itself runs propagates.
    """
    if not _IMPORT_STRING.fullmatch(target):
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
                + _suggest(part, names)
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


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a ``use`` value stands for.

    Attributes:
        name: The registered name (built-in or plug-in), or the import string.
        target: The import string of the factory.
        origin: ``"built-in"``, ``"plug-in <distribution> <version>"`` or ``"import string"``.
        factory: The middleware class or factory function.
    """

    name: str
    target: str
    origin: str
    factory: Callable[..., Any]


@dataclass(frozen=True, slots=True)
class _Plugin:
    name: str
    target: str
    distribution: str
    entry_point: EntryPoint

    @property
    def origin(self) -> str:
        dist = self.entry_point.dist
        version = f" {dist.version}" if dist is not None else ""
        return f"plug-in {self.distribution}{version}"


class Registry:
    """Built-in names, installed plug-ins and import strings, resolved to factories.

    Plug-ins are discovered once per registry, when first needed.

    Args:
        builtins: Built-in names and their import strings.
        group: The entry-point group to read plug-ins from, or None for no plug-ins.
    """

    def __init__(
        self,
        builtins: Mapping[str, str] = BUILTINS,
        *,
        group: str | None = ENTRY_POINT_GROUP,
    ) -> None:
        self.builtins: Mapping[str, str] = dict(builtins)
        self._group = group
        self._plugins: dict[str, _Plugin] | None = None
        self._conflicts: dict[str, list[_Plugin]] = {}
        self._shadowing: dict[str, _Plugin] = {}

    def _discover(self) -> dict[str, _Plugin]:
        if self._plugins is not None:
            return self._plugins
        found: dict[str, list[_Plugin]] = {}
        if self._group is not None:
            for ep in entry_points(group=self._group):
                dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
                # entry_points() lists each distribution once, however often it is
                # on sys.path: two candidates are two distributions.
                found.setdefault(ep.name, []).append(_Plugin(ep.name, ep.value, dist, ep))
        plugins: dict[str, _Plugin] = {}
        for name, candidates in found.items():
            if name in self.builtins:
                self._shadowing[name] = candidates[0]
            elif len(candidates) > 1:
                self._conflicts[name] = candidates
            else:
                plugins[name] = candidates[0]
        self._plugins = plugins
        return plugins

    @property
    def plugins(self) -> Mapping[str, str]:
        """Installed plug-in names and their import strings (without conflicting names)."""
        return {name: plugin.target for name, plugin in self._discover().items()}

    def names(self) -> list[str]:
        """Every name ``use`` can take: built-ins, then plug-ins, in order."""
        return [*self.builtins, *sorted(self._discover())]

    def problems(self) -> list[str]:
        """What is wrong with the installed plug-ins: names claimed twice, built-in names."""
        self._discover()
        notes = [self._conflict_message(name) for name in sorted(self._conflicts)]
        notes += [self.shadowing(name) or "" for name in sorted(self._shadowing)]
        return notes

    def shadowing(self, name: str) -> str | None:
        """A note when a plug-in also registers the built-in ``name`` (the built-in wins)."""
        self._discover()
        plugin = self._shadowing.get(name)
        if plugin is None:
            return None
        return (
            f"the {plugin.origin} also registers the built-in name {name!r} "
            f"({plugin.target}); the built-in is used: to use the plug-in, "
            f"write its import string {plugin.target!r}"
        )

    def _conflict_message(self, name: str) -> str:
        first, second, *_ = self._conflicts[name]
        return (
            f"middleware name {name!r} is registered by two distributions: "
            f"{first.distribution!r} ({first.target}) and {second.distribution!r} "
            f"({second.target}); use the import string of the one you mean"
        )

    def resolve(self, use: str) -> Resolved:
        """The factory ``use`` stands for.

        Raises:
            RegistryError: Unknown, unavailable, ambiguous or not importable.
        """
        if ":" in use or "." in use:
            factory = import_object(use)
            if not callable(factory):
                raise RegistryError(f"{use!r} is not a middleware class or factory")
            return Resolved(self.name_of(factory) or use, use, "import string", factory)
        if use in self.builtins:
            return self._resolve_builtin(use)
        plugins = self._discover()
        if use in self._conflicts:
            raise RegistryError(self._conflict_message(use))
        plugin = plugins.get(use)
        if plugin is None:
            hint = _suggest(use, self.names()) or (
                f"; use one of {', '.join(self.names())} or an import string 'package.module:Class'"
            )
            raise RegistryError(f"unknown middleware {use!r}{hint}")
        try:
            factory = plugin.entry_point.load()
        except Exception as exc:
            raise RegistryError(
                f"the {plugin.origin} registers {use!r} as {plugin.target}, which cannot "
                f"be loaded: {type(exc).__name__}: {exc}"
            ) from None
        if not callable(factory):
            raise RegistryError(f"the {plugin.origin} registers {use!r} as a non-callable")
        return Resolved(use, plugin.target, plugin.origin, factory)

    def _resolve_builtin(self, name: str) -> Resolved:
        target = self.builtins[name]
        module = target.partition(":")[0]
        try:
            factory = import_object(target)
        except RegistryError:
            if module not in sys.modules:
                raise RegistryError(
                    f"middleware {name!r} is not available in this version of asgikit"
                ) from None
            raise  # pragma: no cover - a built-in module without its class
        except ModuleNotFoundError as exc:
            raise RegistryError(
                f"middleware {name!r} needs {exc.name!r}, which is not installed"
                + _missing_module_hint(exc)
            ) from None
        return Resolved(name, target, "built-in", factory)

    def name_of(self, factory: object) -> str | None:
        """The built-in or plug-in name ``factory`` is registered under, if any."""
        target = target_of(factory)
        if target is None:
            return None
        for name, builtin in self.builtins.items():
            if builtin == target:
                return name
        for name, plugin in self._discover().items():
            if plugin.target == target:
                return name
        return None


# --------------------------------------------------------------------------------------
# Options from signatures


REQUIRED: Final = inspect.Parameter.empty
"""The ``default`` of an option that must be given."""

Converter = Callable[[Any], Any]


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


UNREPRESENTABLE: Final = object()
"""What ``config_value`` returns for a default a config file cannot write."""


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
        if target is not None and _IMPORT_STRING.fullmatch(target):
            return target
    return UNREPRESENTABLE


def _import_callable(value: str) -> Any:
    obj = import_object(value)
    if not callable(obj):
        raise RegistryError(f"{value!r} is not callable")
    return obj


_SEQUENCES: Final = {
    collections.abc.Iterable,
    collections.abc.Sequence,
    collections.abc.Collection,
    collections.abc.MutableSequence,
    collections.abc.Iterator,
}
_MAPPINGS: Final = {collections.abc.Mapping, collections.abc.MutableMapping}
_SETS: Final = {collections.abc.Set, collections.abc.MutableSet}
_UNSUPPORTED: Final = object()


def _map_type(tp: Any) -> tuple[Any, Converter | None]:
    """The msgspec type a config value of annotation ``tp`` decodes as, and a converter.

    Callables and classes become import strings; abstract containers become lists and
    dicts; unions are mapped member by member, dropping members a file cannot hold.
    Returns ``_UNSUPPORTED`` as the type when nothing of ``tp`` fits in a file.
    """
    if tp is Any or tp is object:
        return Any, None
    if tp is None or tp is type(None):
        return None, None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        inner, converter = _map_type(args[0])
        metas = [meta for meta in tp.__metadata__ if isinstance(meta, msgspec.Meta)]
        if inner is _UNSUPPORTED or not metas:
            return inner, converter
        return subscript(Annotated, inner, *metas), converter
    if origin is Union or origin is types.UnionType:
        return _map_union(args)
    if collections.abc.Callable in (tp, origin) or type in (tp, origin):
        return ImportString, _import_callable
    if origin is Literal:
        return tp, None
    if origin in _SEQUENCES or tp in _SEQUENCES or origin is list or tp is list:
        item, convert = _map_type(args[0]) if args else (Any, None)
        return _container(list, item, convert)
    if origin in _SETS or tp in _SETS or origin in (set, frozenset) or tp in (set, frozenset):
        item, convert = _map_type(args[0]) if args else (Any, None)
        return _container(frozenset if origin is not set else set, item, convert)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item, convert = _map_type(args[0])
            return _container(list, item, convert)
        mapped = [_map_type(arg) for arg in args]
        if any(member is _UNSUPPORTED or conv is not None for member, conv in mapped):
            return Any, None
        return subscript(tuple, *(member for member, _ in mapped)), None
    if origin in _MAPPINGS or tp in _MAPPINGS or origin is dict or tp is dict:
        key, key_convert = _map_type(args[0]) if args else (str, None)
        value, value_convert = _map_type(args[1]) if args else (Any, None)
        if key is _UNSUPPORTED or value is _UNSUPPORTED or key_convert is not None:
            return Any, None
        if value_convert is None:
            return subscript(dict, key, value), None
        convert_value = value_convert
        return subscript(dict, key, value), lambda items: {
            k: convert_value(v) for k, v in items.items()
        }
    if tp in (str, int, float, bool):
        return tp, None
    try:
        msgspec.json.schema(tp)
    except (TypeError, ValueError):
        return _UNSUPPORTED, None
    return tp, None


def _container(kind: Any, item: Any, convert: Converter | None) -> tuple[Any, Converter | None]:
    if item is _UNSUPPORTED:
        return _UNSUPPORTED, None
    if convert is None:
        return subscript(kind, item), None
    convert_item = convert
    return subscript(list, item), lambda items: [convert_item(value) for value in items]


def _outer(tp: Any) -> Any:
    if typing.get_origin(tp) is Annotated:
        return _outer(typing.get_args(tp)[0])
    return typing.get_origin(tp) or tp


def _map_union(args: tuple[Any, ...]) -> tuple[Any, Converter | None]:
    members: list[tuple[Any, Converter | None]] = []
    for arg in args:
        member = _map_type(arg)
        if member[0] is _UNSUPPORTED:
            continue
        if member[0] is Any:
            return Any, None
        if member[1] is not None and any(_outer(m) is _outer(member[0]) for m, _ in members):
            continue  # a str that means a str wins over a str that means an import
        members = [m for m in members if not (m[1] and _outer(m[0]) is _outer(member[0]))]
        members.append(member)
    if not members:
        return _UNSUPPORTED, None
    union = members[0][0] if len(members) == 1 else subscript(Union, *(m for m, _ in members))
    try:
        msgspec.json.schema(union)
    except (TypeError, ValueError):
        return Any, None  # a union msgspec cannot decode: the factory checks the value
    converters = [(_outer(m), conv) for m, conv in members if conv is not None]
    if not converters:
        return union, None

    def convert(value: Any) -> Any:
        for kind, conv in converters:
            if isinstance(value, kind):
                return conv(value)
        return value

    return union, convert


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
    if inspect.isclass(func):
        target: Any = func.__init__
    elif inspect.isroutine(func):
        target = func
    else:  # an instance with __call__
        target = type(func).__call__
    hints = _hints(func, target)
    doc = inspect.getdoc(func) or ""
    described = _arg_docs(doc)
    params = list(signature.parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if takes_app:
        if not params or params[0].kind not in positional:
            raise RegistryError(
                f"{target_of(factory) or factory!r} does not take the app as its first argument"
            )
        params = params[1:]
    options: dict[str, Option] = {}
    code_only: list[str] = []
    extra = False
    for param in params:
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            extra = True
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            if param.default is REQUIRED:
                raise RegistryError(
                    f"{target_of(factory) or factory!r} has a required positional-only "
                    f"parameter {param.name!r}, which a config file cannot pass"
                )
            continue
        annotation = hints.get(param.name, Any)
        if param.name in hints and _takes_objects(annotation):
            code_only.append(param.name)
            continue
        if annotation is _UNRESOLVED:
            annotation = Any
        mapped, convert = _map_type(annotation)
        if mapped is _UNSUPPORTED:
            mapped = Any
        options[param.name] = Option(
            name=param.name,
            annotation=annotation,
            type=mapped,
            default=param.default,
            description=described.get(param.name, ""),
            convert=convert,
        )
    summary = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    return Options(factory, options, summary, extra, tuple(code_only))


def _takes_objects(annotation: Any) -> bool:
    """``Any``, ``Any | None`` or a container of ``Any``: what only code can pass."""
    if annotation is Any:
        return True
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType) or origin in _SEQUENCES or origin in (list, tuple):
        return bool(args) and all(_takes_objects(arg) or arg is Ellipsis for arg in args)
    return False
