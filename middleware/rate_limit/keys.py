"""Rate-limit keys: which bucket a request goes to, hashed, and route templates.

Pure logic, no I/O. ``storage_key`` turns a rule's ``key`` option into a function
``scope -> "<rule>:<kind>:<digest>"`` whose digest never holds the raw client value
(addresses, API keys and callable results are hashed); ``import_callable`` resolves the
``module:function`` import strings of config files, once.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import ipaddress
import re
from collections.abc import Callable
from typing import Any, Final

from asgikit.headers import get_header
from asgikit.types import Scope

__all__ = [
    "ANONYMOUS",
    "IMPORT",
    "client_digest",
    "import_callable",
    "storage_key",
]

ANONYMOUS: Final = "anonymous"
"""The digest of a request without a usable key: one bucket per rule, shared by such
requests only (a hex digest can never equal it)."""

TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
IMPORT: Final = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_PERSON: Final = b"asgikit-rl"


def import_callable(value: object, where: str) -> Callable[..., Any]:
    """*value* itself when callable, else the callable a ``module:function`` names.

    Raises:
        ValueError: the import string cannot be imported.
        TypeError: not a callable, nor an import string of one.
    """
    if callable(value):
        return value
    if not isinstance(value, str) or not IMPORT.fullmatch(value):
        raise TypeError(f"{where}: expected a callable or 'module:function', got {value!r}")
    module_name, _, attribute = value.partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{where}: cannot import {value!r}: {exc}") from exc
    if not callable(target):
        raise TypeError(f"{where}: {value!r} is not callable")
    return target


def _digest(value: str) -> str:
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@functools.lru_cache(maxsize=8192)
def client_digest(host: str, ipv6_prefix: int) -> str:
    """The hashed bucket of a client address: IPv6 grouped by ``/ipv6_prefix``,
    IPv4-mapped IPv6 as the IPv4 address, anything else (a hostname) as given."""
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            return _digest(host)
        mapped = address.ipv4_mapped
        if mapped is not None:
            return _digest(str(mapped))
        network = int(address) >> (128 - ipv6_prefix)
        return _digest(f"{network:x}/{ipv6_prefix}")
    return _digest(host)


def storage_key(
    key: object, where: str, ipv6_prefix: int, name: str, route: str
) -> Callable[[Scope], str]:
    """``scope -> "<name>:<kind>:<digest>"`` for a ``key`` option (``route`` names the
    rule's template or prefix, for the ``route`` kind)."""
    if not isinstance(key, str):
        raise TypeError(f"{where}: expected a str, got {key!r}")
    if key == "client":
        prefix = f"{name}:client:"
        anonymous = prefix + ANONYMOUS

        def client_key(scope: Scope) -> str:
            peer = scope.get("client")
            return prefix + client_digest(peer[0], ipv6_prefix) if peer else anonymous

        return client_key
    if key == "route":  # the template (or prefix), never the raw path
        route_key = f"{name}:route:{_digest(route)}"
        return lambda scope: route_key
    if key.startswith("header:"):
        header_name = key[7:].strip().lower()
        if not TOKEN.fullmatch(header_name):
            raise ValueError(f"{where}: 'header:<name>' needs a header name, got {key!r}")
        raw_name = header_name.encode("ascii")
        prefix = f"{name}:header:"
        anonymous = prefix + ANONYMOUS

        def header_key(scope: Scope) -> str:
            value = get_header(scope["headers"], raw_name)
            if not value:
                return anonymous
            return prefix + hashlib.blake2b(value, digest_size=16, person=_PERSON).hexdigest()

        return header_key
    if IMPORT.fullmatch(key):
        func: Callable[[Scope], object] = import_callable(key, where)
        prefix = f"{name}:func:"
        anonymous = prefix + ANONYMOUS

        def custom_key(scope: Scope) -> str:
            value = func(scope)
            return prefix + _digest(value) if isinstance(value, str) and value else anonymous

        return custom_key
    raise ValueError(
        f"{where}: expected 'client', 'route', 'header:<name>' or 'module:function', got {key!r}"
    )
