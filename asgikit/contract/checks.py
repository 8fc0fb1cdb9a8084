"""Value checks: plain functions over a scope or a message, and deep snapshots of them.

A check returns the first ``Problem`` it finds, or None; it never raises. The checker
that calls it decides who is to blame (the side) and whether the problem raises or warns.
The message checks are the ``check`` column of the transition tables in ``machines``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, NamedTuple

from asgikit.scopes import CHAIN_KEY
from asgikit.types import Message


class Problem(NamedTuple):
    """A broken rule found by a check: its id and what happened."""

    rule: str
    detail: str
    warning: bool = False  # the W part of an E rule (docs/contract.md's "W:" clauses)


Check = Callable[[Message], Problem | None]

_INT64 = (-(2**63), 2**63 - 1)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_status(value: Any) -> bool:
    return _is_int(value) and 100 <= value <= 599


# --------------------------------------------------------------------------------------
# Snapshots, for the mutation checks (M5, S7)


class _Missing:
    __slots__ = ()


MISSING = _Missing()


def freeze(value: Any, depth: int = 0) -> Any:
    """A deep, comparable copy of a message or scope (lists become tuples)."""
    if depth > 8:
        return value
    if isinstance(value, Mapping):
        return tuple((k, freeze(v, depth + 1)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return tuple(freeze(v, depth + 1) for v in value)
    if isinstance(value, bytearray):
        return bytes(value)
    return value


_SHARED_BY_DESIGN: Final = frozenset({"state", CHAIN_KEY})


def freeze_scope(scope: Mapping[str, Any]) -> dict[str, Any]:
    """A snapshot of a scope, key by key."""
    # state is shared by design (writes at start-up are meant to be seen), so its
    # contents are not the middleware's to keep; only its identity is (S6). So is
    # asgikit's scope chain, which each copy of the scope appends itself to.
    return {k: id(v) if k in _SHARED_BY_DESIGN else freeze(v) for k, v in scope.items()}


def scope_view(scope: Mapping[str, Any]) -> dict[str, Any]:
    """The scope as shown in a violation: without the big shared objects."""
    return {k: v for k, v in scope.items() if k not in ("state", "app", "router")}


# --------------------------------------------------------------------------------------
# Value typing (M1) and shared shapes


def has_str_type(value: Any) -> bool:
    """A dict with a str ``type``: what every scope (S1) and message (M1) is."""
    return isinstance(value, Mapping) and isinstance(value.get("type"), str)


def value_problem(message: Mapping[Any, Any]) -> str | None:
    """The first key or value of *message* that is not an ASGI type (M1)."""
    skip = "file" if message["type"] == "http.response.zerocopysend" else None
    for key, value in message.items():
        if not isinstance(key, str):
            return f"key {key!r} is not a str"
        if key == skip:
            continue
        problem = _bad_value(value, 0)
        if problem:
            return f"{key!r}: {problem}"
    return None


def _bad_value(value: Any, depth: int) -> str | None:
    if value is None or isinstance(value, bool | bytes | str):
        return None
    if isinstance(value, int):
        return None if _INT64[0] <= value <= _INT64[1] else f"{value} is not a signed 64-bit int"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite float"
    if depth > 16:
        return "nested too deeply"
    if isinstance(value, list | tuple | Mapping):
        items = value.values() if isinstance(value, Mapping) else value
        for item in items:
            problem = _bad_value(item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, bytearray | memoryview):
        return None
    return f"{type(value).__name__} is not an ASGI value type"


def header_list_problem(headers: Any, *, lowercase: bool) -> str | None:
    """What is wrong with a list of (name, value) header pairs, if anything."""
    if isinstance(headers, str | bytes) or not isinstance(headers, Iterable):
        return "not an iterable of (name, value) pairs"
    for pair in headers:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            return f"{pair!r} is not a (name, value) pair"
        name, value = pair
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            return f"{pair!r} is not a pair of bytes"
        if lowercase and name != name.lower():
            return f"header name {name!r} is not lowercase"
    return None


def is_address(value: Any, *, port_optional: bool) -> bool:
    """A (host, port) pair as ASGI gives ``client`` and ``server``."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return False
    host, port = value
    if not isinstance(host, str):
        return False
    if port is None:
        return port_optional
    return _is_int(port)


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int | None, Problem | None]:
    """The announced content-length, and the H5 problem if it is not one number."""
    values = {value.strip() for name, value in headers if name == b"content-length"}
    if not values:
        return None, None
    if len(values) > 1 or not next(iter(values)).isdigit():
        return None, Problem("H5", f"content-length is not one number: {sorted(values)}")
    return int(next(iter(values))), None


# --------------------------------------------------------------------------------------
# Scope checks (server side; S2-S6)


def asgi_version_problem(scope: Mapping[str, Any]) -> Problem | None:
    asgi = scope.get("asgi")
    if asgi is None:
        return None
    version = asgi.get("version", "2.0") if isinstance(asgi, Mapping) else None
    if version not in ("2.0", "3.0"):
        return Problem("S2", f"asgi.version is {version!r}")
    return None


_CONNECTION_FIELDS: tuple[tuple[str, tuple[type, ...], bool], ...] = (
    # key, allowed types, optional
    ("path", (str,), False),
    ("query_string", (bytes,), False),
    ("raw_path", (bytes, type(None)), True),
    ("root_path", (str,), True),
    ("scheme", (str,), True),
    ("http_version", (str,), True),
)


def connection_scope_problems(scope: Mapping[str, Any], scope_type: str) -> Iterator[Problem]:
    """The problems of an http or websocket scope, in the order they are reported."""
    if scope_type == "http":
        method = scope.get("method")
        if not isinstance(method, str) or not method or method != method.upper():
            yield Problem("S3", f"method {method!r} is not an uppercase str")
    for key, kinds, optional in _CONNECTION_FIELDS:
        if key not in scope:
            if not optional:
                yield Problem("S3", f"scope has no {key!r}")
        elif not isinstance(scope[key], kinds):
            yield Problem("S3", f"scope[{key!r}] is {type(scope[key]).__name__}")
    if "scheme" in scope and not scope["scheme"]:
        yield Problem("S3", "scope['scheme'] is empty")
    yield from _scope_header_problems(scope.get("headers", ()))
    yield from _address_problems(scope)
    if scope_type == "websocket":
        subprotocols = scope.get("subprotocols", [])
        if not isinstance(subprotocols, list | tuple) or not all(
            isinstance(p, str) for p in subprotocols
        ):
            yield Problem("S3", "subprotocols is not a list of str")


def _scope_header_problems(headers: Any) -> Iterator[Problem]:
    problem = header_list_problem(headers, lowercase=False)
    if problem:
        yield Problem("S4", f"scope headers: {problem}")
    if any(name[:1] == b":" for name, _ in headers):
        yield Problem("S4", "scope headers contain a pseudo-header")
    if any(name != name.lower() for name, _ in headers):
        yield Problem("S4", "scope header names are not lowercase", warning=True)


def _address_problems(scope: Mapping[str, Any]) -> Iterator[Problem]:
    client = scope.get("client")
    if client is not None and not is_address(client, port_optional=False):
        yield Problem("S5", f"client {client!r} is not (str, int)")
    server = scope.get("server")
    if server is not None and not is_address(server, port_optional=True):
        yield Problem("S5", f"server {server!r} is not (str, int | None)")


def extensions_problem(extensions: Any) -> Problem | None:
    if not isinstance(extensions, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Mapping) for k, v in extensions.items()
    ):
        return Problem("S6", "extensions is not dict[str, dict]")
    return None


# --------------------------------------------------------------------------------------
# Message checks: what the tables in ``machines`` run for a message they accept


def response_start(message: Message) -> Problem | None:
    status = message.get("status")
    if not _is_status(status):
        return Problem("H2", f"status {status!r} is not an int in 100-599")
    problem = header_list_problem(message.get("headers", ()), lowercase=True)
    if problem:
        return Problem("H2", f"response headers: {problem}")
    if not isinstance(message.get("trailers", False), bool):
        return Problem("M2", "http.response.start trailers is not a bool")
    return None


def response_body(message: Message) -> Problem | None:
    if not isinstance(message.get("body", b""), bytes | bytearray | memoryview):
        return Problem("M2", "http.response.body body is not bytes")
    if not isinstance(message.get("more_body", False), bool):
        return Problem("M2", "http.response.body more_body is not a bool")
    return None


def pathsend(message: Message) -> Problem | None:
    path = message.get("path")
    if not isinstance(path, str) or not os.path.isabs(path):
        return Problem("X2", f"pathsend path {path!r} is not an absolute str")
    return None


def zerocopysend(message: Message) -> Problem | None:
    if not hasattr(message.get("file"), "fileno"):
        return Problem("M2", "zerocopysend 'file' is not a file object")
    for key in ("offset", "count"):
        value = message.get(key)
        if value is not None and not _is_int(value):
            return Problem("M2", f"zerocopysend {key!r} is not an int")
    if not isinstance(message.get("more_body", False), bool):
        return Problem("M2", "zerocopysend more_body is not a bool")
    return None


def push(message: Message) -> Problem | None:
    if not isinstance(message.get("path"), str):
        return Problem("M2", "http.response.push path is not a str")
    problem = header_list_problem(message.get("headers", ()), lowercase=True)
    if problem:
        return Problem("M2", f"push headers: {problem}")
    return None


def early_hint(message: Message) -> Problem | None:
    links = message.get("links")
    if not isinstance(links, list | tuple) or not all(isinstance(x, bytes) for x in links):
        return Problem("M2", "early_hint links is not a list of bytes")
    return None


def trailers(message: Message) -> Problem | None:
    problem = header_list_problem(message.get("headers", ()), lowercase=True)
    if problem:
        return Problem("M2", f"trailer headers: {problem}")
    if not isinstance(message.get("more_trailers", False), bool):
        return Problem("M2", "more_trailers is not a bool")
    return None


def request(message: Message) -> Problem | None:
    """``http.request`` from receive() (H1; a nested checker reports H8)."""
    if not isinstance(message.get("body", b""), bytes | bytearray):
        return Problem("H1", "http.request body is not bytes")
    if not isinstance(message.get("more_body", False), bool):
        return Problem("H1", "http.request more_body is not a bool")
    return None


def accept(message: Message) -> Problem | None:
    subprotocol = message.get("subprotocol")
    if subprotocol is not None and not isinstance(subprotocol, str):
        return Problem("W2", "accept subprotocol is not a str or None")
    headers = message.get("headers", ())
    problem = header_list_problem(headers, lowercase=True)
    if problem:
        return Problem("W2", f"accept headers: {problem}")
    if any(name == b"sec-websocket-protocol" for name, _ in headers):
        return Problem(
            "W2", "accept headers carry sec-websocket-protocol; use 'subprotocol' instead"
        )
    return None


def bytes_or_text(message: Message) -> Problem | None:
    """``websocket.send`` and ``websocket.receive``: exactly one of bytes and text (W3)."""
    data, text = message.get("bytes"), message.get("text")
    if (data is None) == (text is None):
        return Problem("W3", "carries neither or both of bytes and text")
    if data is not None and not isinstance(data, bytes):
        return Problem("W3", "bytes is not bytes")
    if text is not None and not isinstance(text, str):
        return Problem("W3", "text is not a str")
    return None


def close(message: Message) -> Problem | None:
    if not _is_int(message.get("code", 1000)):
        return Problem("M2", "websocket.close code is not an int")
    reason = message.get("reason")
    if reason is not None and not isinstance(reason, str):
        return Problem("M2", "websocket.close reason is not a str")
    return None


def disconnect(message: Message) -> Problem | None:
    if not _is_int(message.get("code", 1005)):
        return Problem("M2", "websocket.disconnect code is not an int")
    return None


def denial_start(message: Message) -> Problem | None:
    status = message.get("status")
    if not _is_status(status):
        return Problem("W1", f"denial status {status!r} is not in 100-599")
    problem = header_list_problem(message.get("headers", ()), lowercase=True)
    if problem:
        return Problem("W1", f"denial headers: {problem}")
    return None


def denial_body(message: Message) -> Problem | None:
    if not isinstance(message.get("body", b""), bytes):
        return Problem("M2", "denial body is not bytes")
    if not isinstance(message.get("more_body", False), bool):
        return Problem("M2", "denial more_body is not a bool")
    return None


def failed(message: Message) -> Problem | None:
    """``lifespan.startup.failed`` and ``lifespan.shutdown.failed``."""
    if not isinstance(message.get("message", ""), str):
        return Problem("M2", f"{message['type']} message is not a str")
    return None
