"""ProxyHeadersMiddleware: the real client, scheme and host from trusted proxies' headers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from asgikit.headers import get_header, set_header
from asgikit.hosts import parse_host, parse_port
from asgikit.options import string_list
from asgikit.scopes import PEER_KEY, derive_scope
from asgikit.types import ASGIApp, Receive, Scope, Send

from .forwarded import (
    MAX_NODE_LENGTH,
    TrustedProxies,
    parse_address,
    parse_forwarded_element,
    parse_node,
    parse_prefix,
    parse_proto,
    tail_elements,
)

__all__ = ["DEFAULT_FAMILIES", "FAMILIES", "PEER_SCOPE_KEY", "ProxyHeadersMiddleware"]

PEER_SCOPE_KEY: Final = PEER_KEY
"""The scope key holding the untouched ``client`` (possibly None) when it was rewritten."""

FAMILIES: Final = (
    "forwarded",
    "x-forwarded",
    "x-forwarded-prefix",
    "x-real-ip",
    "cf-connecting-ip",
)
"""The header families ``headers=`` can select."""

DEFAULT_FAMILIES: Final = ("forwarded", "x-forwarded")
"""The families read unless ``headers=`` says otherwise; the others are opt-in."""

_CACHE_SIZE: Final = 1024
# Header sets longer than this (in value bytes) are resolved every time, not cached.
_CACHEABLE_BYTES: Final = 512
_HOST: Final = b"host"
_SECURE_SCHEMES: Final = frozenset({"https", "wss"})

# Header name -> the slot it is collected in.
_FORWARDED: Final = 0
_XFF: Final = 1
_XF_PROTO: Final = 2
_XF_HOST: Final = 3
_XF_PORT: Final = 4
_XF_PREFIX: Final = 5
_REAL_IP: Final = 6
_CF_IP: Final = 7
_X_FORWARDED_NAMES: Final = {
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XF_PROTO,
    b"x-forwarded-host": _XF_HOST,
    b"x-forwarded-port": _XF_PORT,
}
_OPT_IN_NAMES: Final = {
    "x-forwarded-prefix": (b"x-forwarded-prefix", _XF_PREFIX),
    "x-real-ip": (b"x-real-ip", _REAL_IP),
    "cf-connecting-ip": (b"cf-connecting-ip", _CF_IP),
}

_Address = tuple[str, int]
_Node = tuple[str, int, bool]
"""A valid chain node: (client host, port, whether it is a trusted proxy)."""
_UNSEEN: Final[_Node] = ("", -1, False)
_Host = tuple[bytes, str, int | None, int | None]
"""A valid forwarded host: (value, host without brackets, its port, X-Forwarded-Port)."""
_Prefix = tuple[str, bytes]
"""A valid forwarded path prefix: (decoded, raw)."""
_Result = tuple[_Address | None, bool | None, _Host | None, _Prefix | None]
"""What trusted hops said: the client (None: the peer), https or not, the host, the
path prefix the proxy took off."""
_NOTHING: Final[_Result] = (None, None, None, None)


class ProxyHeadersMiddleware:
    """Rewrite ``client``, ``scheme`` and ``server``/host from trusted proxies' headers.

    Only when the immediate peer is a trusted proxy: the Forwarded (RFC 7239) or
    X-Forwarded-* chain is walked from the right past trusted hops, and the first
    untrusted address becomes the client. The app gets a copy of the scope; the
    original ``client`` is kept under ``scope["asgikit.peer"]``. See
    ``docs/proxy_headers.md``.

    Args:
        app: The ASGI app to wrap.
        trusted_proxies: IP addresses and CIDR networks of the proxies in front of the
            app (a comma-separated str or an iterable of str); ``"unix"`` trusts a
            Unix-socket peer; ``"*"`` trusts every peer and every hop.
        headers: Which families to read: ``"forwarded"`` and/or ``"x-forwarded"`` (the
            default: both). With both, a request carrying both chains is rewritten only
            when they name the same client (then proto and host come from
            ``Forwarded``); when they disagree, one was written by the client, so
            nothing is rewritten. Opt-in: ``"x-forwarded-prefix"`` (the path prefix the
            proxy took off, into ``root_path`` and ``path``), ``"x-real-ip"`` and
            ``"cf-connecting-ip"`` (the client from the one address the proxy in front
            sets; it wins over the chains; both listed and disagreeing: neither).

    Raises:
        ValueError: An entry of ``trusted_proxies`` or ``headers`` is not valid.
        TypeError: An option has the wrong type.
    """

    __slots__ = ("_names", "_nodes", "_peers", "_results", "_trusted", "app")

    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted_proxies: str | Iterable[str] = ("127.0.0.1", "::1"),
        headers: str | Iterable[str] = DEFAULT_FAMILIES,
    ) -> None:
        self.app = app
        self._trusted = TrustedProxies.parse(trusted_proxies)
        families = _families(headers)
        names: dict[bytes, int] = {}
        if "forwarded" in families:
            names[b"forwarded"] = _FORWARDED
        if "x-forwarded" in families:
            names.update(_X_FORWARDED_NAMES)
        for family, (name, slot) in _OPT_IN_NAMES.items():
            if family in families:
                names[name] = slot
        self._names = names
        # Bounded caches (cleared when full), each a function of its key alone: peer host
        # -> trusted; chain node -> parsed node or None; a request's proxy headers -> what
        # they resolve to.
        self._peers: dict[str, bool] = {}
        self._nodes: dict[bytes, _Node | None] = {}
        self._results: dict[tuple[tuple[int, bytes], ...], _Result] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            return await self.app(scope, receive, send)
        client = scope.get("client")
        trusted: bool | None
        if client is None:
            trusted = self._trusted.unix
        else:
            trusted = self._peers.get(client[0])
            if trusted is None:
                trusted = self._peer_trusted(client[0])
        if not trusted:
            return await self.app(scope, receive, send)
        return await self.app(self._rewrite(scope, client), receive, send)

    def _peer_trusted(self, host: object) -> bool:
        if not isinstance(host, str) or len(host) > MAX_NODE_LENGTH or not host.isascii():
            return self._trusted.everyone
        address = parse_node(host.encode("ascii"))
        if address is None:  # not an IP address: a server's name for a socket path
            trusted = self._trusted.everyone
        else:
            trusted = address[0] in self._trusted
        if len(self._peers) >= _CACHE_SIZE:
            self._peers.clear()
        self._peers[host] = trusted
        return trusted

    def _rewrite(self, scope: Scope, peer: object) -> Scope:
        """The scope the app gets: a copy with what trusted hops said, or ``scope`` itself."""
        headers = scope.get("headers", ())
        names = self._names
        found: list[tuple[int, bytes]] = []
        # A loop, not a comprehension: on Python 3.11 a comprehension is a function call
        # (proxy headers A/B, trusted peer without forwarded headers, 2026-12-07: 1.40
        # µs, against 1.59 with a comprehension; spread 0.02).
        for name, value in headers:
            slot = names.get(name)
            if slot is not None:
                found.append((slot, value))
        if not found:
            return scope
        client, secure, host, prefix = self._result(found)
        changes: dict[str, Any] = {}
        if client is not None and client != peer:
            changes["client"] = client
        scheme = scope.get("scheme")
        if secure is not None:
            if scope["type"] == "websocket":
                scheme = "wss" if secure else "ws"
            else:
                scheme = "https" if secure else "http"
            if scheme != scope.get("scheme"):
                changes["scheme"] = scheme
        if host is not None:
            _host_changes(scope, headers, host, scheme, changes)
        if prefix is not None:
            _prefix_changes(scope, prefix, changes)
        if not changes:
            return scope
        if PEER_SCOPE_KEY not in scope:  # behind two of these, it keeps the socket's peer
            changes[PEER_SCOPE_KEY] = peer
        return derive_scope(scope, changes)

    def _result(self, found: list[tuple[int, bytes]]) -> _Result:
        """What the forwarded fields say, from the cache when they were seen before."""
        key = tuple(found)
        result = self._results.get(key)
        if result is None:
            result = self._resolve(found)
            if sum(len(value) for _, value in found) <= _CACHEABLE_BYTES:
                if len(self._results) >= _CACHE_SIZE:
                    self._results.clear()
                self._results[key] = result
        return result

    def _resolve(self, found: list[tuple[int, bytes]]) -> _Result:
        fields: dict[int, list[bytes]] = {}
        for slot, value in found:
            fields.setdefault(slot, []).append(value)
        result = self._from_chains(fields)
        if _REAL_IP not in fields and _CF_IP not in fields:
            return result
        # The proxy in front wrote the one address it saw: it names the client.
        addresses = {parse_address(fields[slot]) for slot in (_REAL_IP, _CF_IP) if slot in fields}
        client = addresses.pop() if len(addresses) == 1 else None
        if client is None:  # malformed, repeated, or the two fields disagree
            return result
        walked = result[0]
        if walked is not None and walked != client and not self._peer_trusted(walked[0]):
            # The chain reached a client the proxies do not trust: the field came from
            # beyond it (someone who reached a trusted proxy directly), not from the edge.
            return result
        return client, result[1], result[2], result[3]

    def _from_chains(self, fields: dict[int, list[bytes]]) -> _Result:
        if _FORWARDED not in fields:
            return self._from_x_forwarded(fields)
        from_forwarded = self._from_forwarded(fields[_FORWARDED])
        if _XFF not in fields:
            return from_forwarded
        # Both chains are present. A proxy that writes one family passes the other on as
        # the client sent it, and nothing in the request says which is which: use them
        # only when they agree on the client, otherwise believe neither.
        if self._from_x_forwarded(fields)[0] != from_forwarded[0]:
            return _NOTHING
        return from_forwarded

    def _walk(self, nodes: Sequence[bytes | None], complete: bool) -> tuple[int, _Address | None]:
        """Walk a chain (rightmost first) past trusted hops.

        Returns:
            The index of the hop the walk ended at (``len(nodes)`` when it ran into what
            the bounds left out), and the client: the first untrusted address; the last
            trusted one when the walk ends at a missing, obfuscated or malformed node or
            at the bounds; the leftmost when every hop is trusted; None for the peer.
        """
        client: _Address | None = None
        for index, raw in enumerate(nodes):
            node = None if raw is None else self._nodes.get(raw, _UNSEEN)
            if node is _UNSEEN:
                assert raw is not None
                node = self._node(raw)
            if node is None:
                return index, client
            client = (node[0], node[1])
            if not node[2]:
                return index, client
        if complete and nodes:
            return len(nodes) - 1, client
        return len(nodes), client

    def _node(self, raw: bytes) -> _Node | None:
        parsed = parse_node(raw)
        node: _Node | None = None
        if parsed is not None:
            address, port = parsed
            # An IPv4 address without a port is already written the canonical way.
            host = raw.decode("ascii") if address.version == 4 and b":" not in raw else str(address)
            node = (host, port, address in self._trusted)
        if len(raw) <= MAX_NODE_LENGTH:
            if len(self._nodes) >= _CACHE_SIZE:
                self._nodes.clear()
            self._nodes[raw] = node
        return node

    def _from_forwarded(self, values: list[bytes]) -> _Result:
        raw_elements, complete = tail_elements(values)
        elements = [parse_forwarded_element(raw) for raw in raw_elements]
        index, client = self._walk([e.for_ if e is not None else None for e in elements], complete)
        element = elements[index] if index < len(elements) else None
        if element is None:
            return client, None, None, None
        secure = None if element.proto is None else parse_proto(element.proto)
        return client, secure, _host(element.host, None), None

    def _from_x_forwarded(self, fields: dict[int, list[bytes]]) -> _Result:
        chain, complete = tail_elements(fields[_XFF]) if _XFF in fields else ([], True)
        index, client = self._walk(chain, complete)
        count = len(chain) if complete else -1
        proto = _at_hop(fields.get(_XF_PROTO), index, count)
        secure = None if proto is None else parse_proto(proto)
        raw_prefix = _at_hop(fields.get(_XF_PREFIX), index, count)
        prefix = None if raw_prefix is None else parse_prefix(raw_prefix)
        host = _at_hop(fields.get(_XF_HOST), index, count)
        if host is None:
            return client, secure, None, prefix
        port = _at_hop(fields.get(_XF_PORT), index, count)
        return client, secure, _host(host, None if port is None else parse_port(port)), prefix


def _at_hop(values: list[bytes] | None, index: int, count: int) -> bytes | None:
    """The value a trusted proxy set for the hop where the walk ended, if the counts
    agree (``count`` is -1 when the chain was cut); otherwise the rightmost one, which
    the nearest proxy set."""
    if values is None:
        return None
    elements, complete = tail_elements(values)
    if not elements:
        return None
    if complete and len(elements) == count and index < count:
        return elements[index]
    return elements[0]


def _host(value: bytes | None, forwarded_port: int | None) -> _Host | None:
    """A host a trusted hop supplied, if it is valid."""
    parsed = None if value is None else parse_host(value)
    if parsed is None:
        return None
    assert value is not None
    return value, parsed[0], parsed[1], forwarded_port


def _prefix_changes(scope: Scope, prefix: _Prefix, changes: dict[str, Any]) -> None:
    """Put the prefix the proxy took off in front of ``root_path``, ``path`` and
    ``raw_path``, as a server's own root path would be (the ASGI ``path`` is the full
    path; frameworks route on what follows ``root_path``)."""
    decoded, raw = prefix
    changes["root_path"] = decoded + scope.get("root_path", "")
    changes["path"] = decoded + scope["path"]
    raw_path = scope.get("raw_path")
    if raw_path is not None:
        changes["raw_path"] = raw + raw_path


def _families(headers: str | Iterable[str]) -> frozenset[str]:
    families = frozenset(item.lower() for item in string_list(headers, "headers"))
    unknown = sorted(families - set(FAMILIES))
    if unknown:
        raise ValueError(f"headers: unknown header family {unknown[0]!r}; use {FAMILIES}")
    if not families:
        raise ValueError(f"headers must name at least one of {FAMILIES}")
    return families


def _host_changes(
    scope: Scope, headers: Any, host: _Host, scheme: object, changes: dict[str, Any]
) -> None:
    """Add ``server`` and the ``Host`` header a trusted hop gave, where they differ."""
    host_value, hostname, port, forwarded_port = host
    default = 443 if scheme in _SECURE_SCHEMES else 80
    if port is None:
        port = default if forwarded_port is None else forwarded_port
        if port != default:
            host_value = b"%s:%d" % (host_value, port)
    if (hostname, port) != scope.get("server"):
        changes["server"] = (hostname, port)
    if get_header(headers, _HOST) != host_value:
        changes["headers"] = set_header(headers, _HOST, host_value)
