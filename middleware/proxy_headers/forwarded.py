"""Pure parsing for ProxyHeadersMiddleware: trusted proxies, nodes, hosts, Forwarded.

Everything here works on raw header bytes, never raises on them (only the configuration
parser raises, at start-up), and bounds its work: a list is read from the right, at most
``MAX_HOPS`` elements and ``MAX_BYTES`` bytes of it.

Lists are split on every comma and Forwarded pairs on every semicolon, quotes or not. The
quote-aware splitting of RFC 9110 (``asgikit.headers.header_tokens``) would be wrong here:
a client that sends ``Forwarded: for="`` would open a quoted string that the quote in the
element its proxy appends (``, for="203.0.113.7"``) closes, swallowing the one element
the chain depends on. No standard parameter value contains a comma or a semicolon, so a
quoted value that does is simply malformed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from socket import inet_aton
from typing import Final, NamedTuple, TypeAlias
from urllib.parse import unquote_to_bytes

from asgikit.hosts import parse_port
from asgikit.options import string_list

__all__ = [
    "MAX_BYTES",
    "MAX_HOPS",
    "MAX_NODE_LENGTH",
    "MAX_PREFIX_LENGTH",
    "ForwardedElement",
    "IPAddress",
    "TrustedProxies",
    "parse_address",
    "parse_forwarded_element",
    "parse_node",
    "parse_prefix",
    "parse_proto",
    "tail_elements",
]

IPAddress: TypeAlias = IPv4Address | IPv6Address

MAX_HOPS: Final = 32
"""Hops examined per chain, from the right; anything further left counts as malformed."""

MAX_BYTES: Final = 4096
"""Bytes of one header (all its fields, joined) read, from the right."""

MAX_NODE_LENGTH: Final = 64
"""Longer than any address with a port (``[IPv6]:65535`` is at most 53 characters)."""

_OWS: Final = b" \t"
_TCHAR: Final = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# RFC 7239 wants IPv6 nodes and ports quoted; some proxies do not quote them.
_UNQUOTED_VALUE: Final = _TCHAR + b":[]"
# qdtext and quoted-pair characters without obs-text: visible ASCII, space and tab.
_QUOTED_TEXT: Final = bytes(range(0x20, 0x7F)) + b"\t"
_OBFUSCATED_PORT: Final = re.compile(rb"_[A-Za-z0-9._-]+").fullmatch
_SECURE: Final = {b"https": True, b"wss": True, b"http": False, b"ws": False}
_OCTET: Final = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4: Final = re.compile(rb"\.".join([_OCTET] * 4)).fullmatch


class ForwardedElement(NamedTuple):
    """The parameters of one RFC 7239 element that the middleware reads, unquoted."""

    for_: bytes | None
    proto: bytes | None
    host: bytes | None


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The parsed ``trusted_proxies`` option.

    Attributes:
        everyone: ``"*"`` was given: every peer and every hop is trusted.
        unix: A Unix-socket peer (``client`` None) is trusted.
        addresses: Single addresses.
        networks: CIDR networks.
    """

    everyone: bool
    unix: bool
    addresses: frozenset[IPAddress]
    networks: tuple[IPv4Network | IPv6Network, ...]
    # The same as integers, for a membership test that costs a few operations.
    _exact: frozenset[tuple[int, int]] = field(init=False, repr=False, compare=False)
    _ranges: tuple[tuple[int, int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exact = frozenset((address.version, int(address)) for address in self.addresses)
        ranges = tuple(
            (network.version, int(network.netmask), int(network.network_address))
            for network in self.networks
        )
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_ranges", ranges)

    @classmethod
    def parse(cls, entries: str | Iterable[str]) -> TrustedProxies:
        """Parse addresses, CIDR networks, ``"unix"`` and ``"*"``.

        Args:
            entries: A comma-separated str (empty items ignored) or an iterable of str.

        Raises:
            TypeError: An entry is not a str.
            ValueError: An entry is neither an IP address, a network, ``"unix"`` nor
                ``"*"``; the message names it.
        """
        items = string_list(entries, "trusted_proxies")
        everyone = unix = False
        addresses: set[IPAddress] = set()
        networks: list[IPv4Network | IPv6Network] = []
        for item in items:
            if item == "*":
                everyone = True
            elif item.lower() == "unix":
                unix = True
            elif "/" in item:
                networks.append(_network(item))
            else:
                try:
                    addresses.add(ip_address(item))
                except ValueError:
                    raise ValueError(
                        f"trusted_proxies entry {item!r} is not an IP address, a CIDR network, "
                        "'unix' or '*' (host names are not resolved)"
                    ) from None
        return cls(everyone, unix or everyone, frozenset(addresses), tuple(networks))

    def __contains__(self, address: IPAddress) -> bool:
        if self.everyone:
            return True
        version = address.version
        value = int(address)
        if self._contains(version, value):
            return True
        # An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
        return version == 6 and value >> 32 == 0xFFFF and self._contains(4, value & 0xFFFFFFFF)

    def _contains(self, version: int, value: int) -> bool:
        if (version, value) in self._exact:
            return True
        for network_version, mask, network in self._ranges:
            if network_version == version and value & mask == network:
                return True
        return False


def _network(item: str) -> IPv4Network | IPv6Network:
    try:
        return ip_network(item)
    except ValueError:
        pass
    try:
        loose = ip_network(item, strict=False)
    except ValueError:
        raise ValueError(f"trusted_proxies entry {item!r} is not a valid CIDR network") from None
    raise ValueError(
        f"trusted_proxies entry {item!r} has host bits set; did you mean {str(loose)!r}?"
    )


def tail_elements(values: list[bytes]) -> tuple[list[bytes], bool]:
    """Split a comma-separated header, read from the right within the bounds.

    Args:
        values: The values of every field of the header, in order (at least one).

    Returns:
        The elements, **rightmost first**, OWS-stripped, empty ones dropped, at most
        ``MAX_HOPS`` of them; and whether that is the whole list (False when elements
        or bytes on the left were left out: the element there counts as malformed).
    """
    value = values[0] if len(values) == 1 else b",".join(values)
    if b"," not in value and len(value) <= MAX_BYTES:  # the usual case: one element
        value = value.strip(_OWS)
        return [value] if value else [], True
    cut = len(value) > MAX_BYTES
    if cut:
        value = value[-MAX_BYTES:]
    pieces = value.rsplit(b",", MAX_HOPS)
    complete = not cut and len(pieces) <= MAX_HOPS
    if not complete:
        del pieces[0]  # beyond the hop limit, or cut in the middle by the byte limit
    elements = []
    for piece in reversed(pieces):
        piece = piece.strip(_OWS)
        if piece:
            elements.append(piece)
    return elements, complete


def parse_node(value: bytes) -> tuple[IPAddress, int] | None:
    """Parse a chain node: ``for=`` of a Forwarded element, or an X-Forwarded-For entry.

    Accepted: ``192.0.2.1``, ``192.0.2.1:8080``, ``2001:db8::1``, ``[2001:db8::1]``,
    ``[2001:db8::1]:8080``; a port may be obfuscated (``[2001:db8::1]:_p1``), which reads
    as port 0. Everything else is None: obfuscated identifiers (``_hidden``), ``unknown``,
    host names, scoped IPv6 addresses (``fe80::1%eth0``), bad ports, non-ASCII bytes.

    Returns:
        ``(address, port)``, port 0 when none was given; or None.
    """
    if not value or len(value) > MAX_NODE_LENGTH or b"%" in value:
        return None
    port = 0
    bracketed = value[0] == 0x5B  # "["
    if bracketed:
        host, bracket, rest = value[1:].partition(b"]")
        if not bracket:
            return None
        if rest:
            if rest[0] != 0x3A:  # ":"
                return None
            node_port = _node_port(rest[1:])
            if node_port is None:
                return None
            port = node_port
    elif value.count(b":") == 1:
        host, _, raw_port = value.partition(b":")
        node_port = _node_port(raw_port)
        if node_port is None:
            return None
        port = node_port
    else:
        host = value
    if b":" not in host:
        # IPv4, never in brackets; parsed here at twice the speed of ipaddress.
        ipv4 = None if bracketed else _ipv4(host)
        return None if ipv4 is None else (IPv4Address(ipv4), port)
    if not host.isascii():
        return None
    try:
        return IPv6Address(host.decode("ascii")), port
    except ValueError:
        return None


def _ipv4(value: bytes) -> int | None:
    """A dotted-quad IPv4 address as ipaddress reads it strictly (no leading zeros)."""
    if _IPV4(value) is None:
        return None
    # Validated above, so inet_aton's lenient forms (``1.2``, ``0x7f.1``) never reach it.
    return int.from_bytes(inet_aton(value.decode("ascii")), "big")


def _node_port(value: bytes) -> int | None:
    if _OBFUSCATED_PORT(value) is not None:
        return 0
    return parse_port(value)


def parse_proto(value: bytes) -> bool | None:
    """``https``/``wss`` -> True, ``http``/``ws`` -> False (any case); None otherwise."""
    return _SECURE.get(value.lower())


def parse_forwarded_element(element: bytes) -> ForwardedElement | None:
    """Parse one RFC 7239 element (``for=192.0.2.60;proto=http;by=203.0.113.43``).

    Parameter names are case-insensitive; values are tokens or quoted strings (quoted
    pairs unescaped). Other parameters (``by``, extensions) are checked for syntax and
    ignored. None for a malformed element: a pair without ``=``, a name that is not a
    token, a value that is neither token nor a whole quoted string, a repeated
    parameter, whitespace around ``=``, control characters, non-ASCII bytes.

    Returns:
        The element's ``for``, ``proto`` and ``host`` values, each None when absent.
    """
    found: dict[bytes, bytes] = {}
    for pair in element.split(b";"):
        pair = pair.strip(_OWS)
        if not pair:
            continue  # RFC 7239 allows empty pairs: "for=a;;proto=http"
        name, equals, value = pair.partition(b"=")
        if not equals or not name or name.translate(None, _TCHAR):
            return None
        name = name.lower()
        if name in found:
            return None
        if value[:1] == b'"':
            unquoted = _unquote(value)
            if unquoted is None:
                return None
            value = unquoted
        elif not value or value.translate(None, _UNQUOTED_VALUE):
            return None
        found[name] = value
    return ForwardedElement(found.get(b"for"), found.get(b"proto"), found.get(b"host"))


def _unquote(value: bytes) -> bytes | None:
    """The content of a whole quoted string (starting with a quote), or None."""
    if len(value) < 2 or value[-1] != 0x22 or value.translate(None, _QUOTED_TEXT):
        return None
    inner = value[1:-1]
    if b"\\" not in inner:
        return None if b'"' in inner else inner
    result = bytearray()
    escaped = False
    for char in inner:
        if escaped:
            result.append(char)
            escaped = False
        elif char == 0x5C:  # backslash
            escaped = True
        elif char == 0x22:  # an unescaped quote inside
            return None
        else:
            result.append(char)
    return None if escaped else bytes(result)


MAX_PREFIX_LENGTH: Final = 512
"""Longer ``X-Forwarded-Prefix`` values are ignored."""

# A path prefix: "/" then segments of URL path characters (RFC 3986 pchar, "%" escapes
# included), no empty, "." or ".." segment (checked below, after decoding).
_PREFIX: Final = re.compile(rb"(?:/[A-Za-z0-9\-._~!$&'()*+,;=:@%]+)+/?").fullmatch


def parse_prefix(value: bytes) -> tuple[str, bytes] | None:
    """A valid ``X-Forwarded-Prefix``: ``(decoded, raw)`` without a trailing slash, or None.

    Valid: an absolute path of one or more segments (``/api``, ``/my%20app/v1``); never a
    query, fragment, backslash, empty segment (``//evil.example``: a scheme-relative URL
    when an app builds links from it), dot segment, or escape that decodes to ``/``, a
    control character or invalid UTF-8.
    """
    if len(value) > MAX_PREFIX_LENGTH or _PREFIX(value) is None:
        return None
    raw = value.rstrip(b"/")
    try:
        decoded = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None
    segments = decoded.split("/")[1:]
    if any(s in ("", ".", "..") for s in segments) or len(segments) != raw.count(b"/"):
        return None  # an escaped "/" decodes to more segments than were sent
    if not decoded.isprintable() or any(c in decoded for c in "\\?#"):
        return None  # an escaped backslash, query or fragment: "/%5C%5Cevil.example"
    return decoded, raw


def parse_address(values: list[bytes]) -> tuple[str, int] | None:
    """The client from a single-address header (``X-Real-IP``, ``CF-Connecting-IP``).

    The proxy in front sets the field to the one address it saw. Repeated fields, a list,
    or anything that is not an IP address (with or without a port) is None.
    """
    if len(values) != 1:
        return None
    node = parse_node(values[0].strip(_OWS))
    if node is None:
        return None
    address, port = node
    return str(address), port
