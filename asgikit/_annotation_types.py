"""Python annotations to the types msgspec decodes a config value as.

``map_type`` maps an option's annotation: callables and classes become import strings
(imported after decoding), abstract containers become lists and dicts, unions are mapped
member by member. ``takes_objects`` tells the annotations only code can satisfy.
"""

from __future__ import annotations

import collections.abc
import operator
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal, Union

import msgspec

from asgikit._import_string import ImportString, RegistryError, import_object

__all__ = ["UNSUPPORTED", "Converter", "Mapped", "map_type", "subscript", "takes_objects"]

Converter = Callable[[Any], Any]
Mapped = tuple[Any, Converter | None]
"""A msgspec type, and what turns a value decoded as it into the argument (or None)."""

UNSUPPORTED: Final = object()
"""The type ``map_type`` gives an annotation nothing of which fits in a config file."""


def subscript(generic: Any, *args: Any) -> Any:
    """``generic[args]`` for types built at run time (``dict[key, value]`` and kin)."""
    return operator.getitem(generic, args[0] if len(args) == 1 else args)


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
_LISTS: Final = frozenset({*_SEQUENCES, list})
_SETS_AND_FROZENSETS: Final = frozenset({*_SETS, set, frozenset})
_DICTS: Final = frozenset({*_MAPPINGS, dict})


def map_type(tp: Any) -> Mapped:
    """The msgspec type a config value of annotation ``tp`` decodes as, and a converter.

    Callables and classes become import strings; abstract containers become lists and
    dicts; unions are mapped member by member, dropping members a file cannot hold.
    Returns ``UNSUPPORTED`` as the type when nothing of ``tp`` fits in a file.
    """
    if tp is Any or tp is object:
        return Any, None
    if tp is None or tp is type(None):
        return None, None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        return _map_annotated(tp, args)
    if origin is Union or origin is types.UnionType:
        return _map_union(args)
    if collections.abc.Callable in (tp, origin) or type in (tp, origin):
        return ImportString, _import_callable
    if origin is Literal:
        return tp, None
    container = _map_container(tp, origin, args)
    if container is not None:
        return container
    if tp in (str, int, float, bool):
        return tp, None
    try:
        msgspec.json.schema(tp)
    except (TypeError, ValueError):
        return UNSUPPORTED, None
    return tp, None


def _map_annotated(tp: Any, args: tuple[Any, ...]) -> Mapped:
    inner, converter = map_type(args[0])
    metas = [meta for meta in tp.__metadata__ if isinstance(meta, msgspec.Meta)]
    if inner is UNSUPPORTED or not metas:
        return inner, converter
    return subscript(Annotated, inner, *metas), converter


def _is_one_of(tp: Any, origin: Any, kinds: collections.abc.Set[Any]) -> bool:
    return origin in kinds or tp in kinds


def _map_container(tp: Any, origin: Any, args: tuple[Any, ...]) -> Mapped | None:
    """Lists, sets, tuples and dicts (abstract or not); None for anything else."""
    if _is_one_of(tp, origin, _LISTS):
        return _container(list, *_map_item(args))
    if _is_one_of(tp, origin, _SETS_AND_FROZENSETS):
        return _container(frozenset if origin is not set else set, *_map_item(args))
    if origin is tuple:
        return _map_tuple(args)
    if _is_one_of(tp, origin, _DICTS):
        return _map_dict(args)
    return None


def _map_item(args: tuple[Any, ...]) -> Mapped:
    return map_type(args[0]) if args else (Any, None)


def _map_tuple(args: tuple[Any, ...]) -> Mapped:
    if len(args) == 2 and args[1] is Ellipsis:
        return _container(list, *map_type(args[0]))
    mapped = [map_type(arg) for arg in args]
    if any(member is UNSUPPORTED or conv is not None for member, conv in mapped):
        return Any, None
    return subscript(tuple, *(member for member, _ in mapped)), None


def _map_dict(args: tuple[Any, ...]) -> Mapped:
    key, key_convert = map_type(args[0]) if args else (str, None)
    value, value_convert = map_type(args[1]) if args else (Any, None)
    if key is UNSUPPORTED or value is UNSUPPORTED or key_convert is not None:
        return Any, None
    if value_convert is None:
        return subscript(dict, key, value), None
    convert_value = value_convert
    return subscript(dict, key, value), lambda items: {
        k: convert_value(v) for k, v in items.items()
    }


def _container(kind: Any, item: Any, convert: Converter | None) -> Mapped:
    if item is UNSUPPORTED:
        return UNSUPPORTED, None
    if convert is None:
        return subscript(kind, item), None
    convert_item = convert
    return subscript(list, item), lambda items: [convert_item(value) for value in items]


def _outer(tp: Any) -> Any:
    if typing.get_origin(tp) is Annotated:
        return _outer(typing.get_args(tp)[0])
    return typing.get_origin(tp) or tp


def _union_members(args: tuple[Any, ...]) -> list[Mapped] | None:
    """The members a file can hold; None when one of them takes anything."""
    members: list[Mapped] = []
    for arg in args:
        member = map_type(arg)
        if member[0] is UNSUPPORTED:
            continue
        if member[0] is Any:
            return None
        if member[1] is not None and any(_outer(m) is _outer(member[0]) for m, _ in members):
            continue  # a str that means a str wins over a str that means an import
        members = [m for m in members if not (m[1] and _outer(m[0]) is _outer(member[0]))]
        members.append(member)
    return members


def _map_union(args: tuple[Any, ...]) -> Mapped:
    members = _union_members(args)
    if members is None:
        return Any, None
    if not members:
        return UNSUPPORTED, None
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


def takes_objects(annotation: Any) -> bool:
    """``Any``, ``Any | None`` or a container of ``Any``: what only code can pass."""
    if annotation is Any:
        return True
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType) or origin in _SEQUENCES or origin in (list, tuple):
        return bool(args) and all(takes_objects(arg) or arg is Ellipsis for arg in args)
    return False
