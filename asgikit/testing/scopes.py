"""Scopes for the test driver, and the script items shared by its http and websocket
clients (``asgikit.testing`` re-exports the public names)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from asgikit.types import Scope

__all__ = [
    "ALL_HTTP_EXTENSIONS",
    "DISCONNECT",
    "Disconnect",
    "HeadersArg",
    "http_scope",
    "lifespan_scope",
    "websocket_scope",
]

HeadersArg = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]

ALL_HTTP_EXTENSIONS: Mapping[str, Mapping[str, Any]] = {
    "http.response.pathsend": {},
    "http.response.zerocopysend": {},
    "http.response.trailers": {},
    "http.response.early_hint": {},
    "http.response.push": {},
    "http.response.debug": {},
}
"""Every http extension the driver understands; pass as ``extensions=`` to advertise all."""


@dataclass(frozen=True)
class Disconnect:
    """The client goes away here (in a body or frame script).

    Attributes:
        code: The websocket close code (ignored for http).
    """

    code: int = 1000


DISCONNECT = Disconnect()
"""Put in a ``body=`` or ``frames=`` script where the client should disconnect."""


def _encode_headers(headers: HeadersArg) -> list[tuple[bytes, bytes]]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    encoded = []
    for name, value in pairs:
        raw_name = name if isinstance(name, bytes) else name.encode("latin-1")
        raw_value = value if isinstance(value, bytes) else value.encode("latin-1")
        encoded.append((raw_name.lower(), raw_value))
    return encoded


# What clients send unescaped in a path and a query (RFC 3986 pchar / query).
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?%"
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _host_header(server: tuple[str, int | None] | None, scheme: str) -> bytes:
    if not server:
        return b"testserver"
    host, port = server
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return host.encode("idna")
    return f"{host}:{port}".encode("idna")


def _connection_scope(
    scope_type: str,
    path: str,
    headers: HeadersArg,
    scheme: str,
    client: tuple[str, int] | None,
    server: tuple[str, int | None] | None,
    root_path: str,
    extensions: Mapping[str, Mapping[str, Any]] | None,
    state: dict[str, Any] | None,
) -> Scope:
    path, _, query = path.partition("?")
    raw_headers = _encode_headers(headers)
    if not any(name == b"host" for name, _ in raw_headers):
        raw_headers.insert(0, (b"host", _host_header(server, scheme)))
    scope: Scope = {
        "type": scope_type,
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": scheme,
        "path": path,
        "raw_path": quote(path, safe=_PATH_SAFE).encode("ascii"),
        "query_string": quote(query, safe=_QUERY_SAFE).encode("ascii"),
        "root_path": root_path,
        "headers": raw_headers,
        "client": client,
        "server": server,
        "extensions": {k: dict(v) for k, v in (extensions or {}).items()},
    }
    if state is not None:
        scope["state"] = state
    return scope


def http_scope(
    method: str = "GET",
    path: str = "/",
    *,
    headers: HeadersArg = (),
    scheme: str = "http",
    http_version: str = "1.1",
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    server: tuple[str, int | None] | None = ("testserver", 80),
    root_path: str = "",
    extensions: Mapping[str, Mapping[str, Any]] | None = None,
    state: dict[str, Any] | None = None,
    **extra: Any,
) -> Scope:
    """Build an ASGI 3 http scope.

    Args:
        method: The request method.
        path: The path, with an optional ``?query``.
        headers: Header names and values (str or bytes); names are lowercased and a
            ``host`` header is added when missing.
        scheme: ``http`` or ``https``.
        http_version: ``1.0``, ``1.1`` or ``2``.
        client: The peer address, or None (Unix socket).
        server: The listening address.
        root_path: The ASGI root path.
        extensions: Advertised extensions (see ``ALL_HTTP_EXTENSIONS``).
        state: The lifespan state dict, shared by identity.
        **extra: More scope keys, set as given.
    """
    scope = _connection_scope(
        "http", path, headers, scheme, client, server, root_path, extensions, state
    )
    scope["method"] = method
    scope["http_version"] = http_version
    scope.update(extra)
    return scope


def websocket_scope(
    path: str = "/ws",
    *,
    headers: HeadersArg = (),
    subprotocols: Sequence[str] = (),
    scheme: str = "ws",
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    server: tuple[str, int | None] | None = ("testserver", 80),
    root_path: str = "",
    extensions: Mapping[str, Mapping[str, Any]] | None = None,
    state: dict[str, Any] | None = None,
    **extra: Any,
) -> Scope:
    """Build an ASGI 3 websocket scope (arguments as for ``http_scope``)."""
    scope = _connection_scope(
        "websocket", path, headers, scheme, client, server, root_path, extensions, state
    )
    scope["subprotocols"] = list(subprotocols)
    scope.update(extra)
    return scope


def lifespan_scope(state: dict[str, Any] | None = None) -> Scope:
    """Build a lifespan scope; *state* is shared with the http scopes by identity."""
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
    if state is not None:
        scope["state"] = state
    return scope
