"""Origins for CORSMiddleware: configured ones parsed and normalised, requests' matched.

Pure logic, no ASGI. ``parse_origin`` validates one configured origin at start-up;
``OriginMatcher`` compiles a policy's list (exact origins, ``*.`` wildcards, ``null``,
``*``) and its regex once, and tells at request time which ``Origin`` values it allows.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Final, NamedTuple

__all__ = ["MAX_ORIGIN_BYTES", "Origin", "OriginMatcher", "parse_origin"]

MAX_ORIGIN_BYTES: Final = 512
"""Longer ``Origin`` values are never sent by browsers (a host name is at most 253 bytes):
they are denied without matching, and never cached."""

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SCHEME: Final = re.compile(r"[a-z][a-z0-9+.-]*")
_HOST: Final = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
# One or more DNS labels before a wildcard's suffix. Labels hold no dots, so the dots
# split the origin unambiguously and matching is linear.
_LABELS: Final = r"(?:[a-z0-9_-]{1,63}\.)+"
_STAR: Final = b"*"
_NULL: Final = b"null"


class Origin(NamedTuple):
    """A configured origin: ``scheme://host[:port]``, or ``scheme://*.host[:port]``."""

    scheme: str
    host: str
    port: int | None
    wildcard: bool

    def serialise(self) -> str:
        host = f"*.{self.host}" if self.wildcard else self.host
        return f"{self.scheme}://{host}" + (f":{self.port}" if self.port is not None else "")


def parse_origin(value: str) -> Origin:
    """Validate and normalise one configured origin.

    Lowercases the scheme and host, converts an internationalised host to its ASCII
    (punycode) form, drops the scheme's default port, and accepts a leading ``*.`` label
    as a wildcard for one or more subdomain labels.

    Raises:
        ValueError: the value is not ``scheme://host[:port]``, with the reason.
    """
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise ValueError(
            f"origin {value!r} has no scheme: write it as scheme://host[:port], "
            "for example 'https://example.com'"
        )
    scheme = scheme.lower()
    if not _SCHEME.fullmatch(scheme):
        raise ValueError(f"origin {value!r} has an invalid scheme {scheme!r}")
    authority = _authority(value, scheme, rest)
    if authority.startswith("["):
        host, colon, port_text = _ipv6_authority(value, authority)
        wildcard = False
    else:
        host, colon, port_text = authority.partition(":")
        host, wildcard = _parse_host(value, host.lower())
    port = _parse_port(value, port_text) if colon else None
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return Origin(scheme, host, port, wildcard)


def _authority(value: str, scheme: str, rest: str) -> str:
    """What follows ``scheme://``, checked to be nothing but ``host[:port]``."""
    authority, slash, path = rest.partition("/")
    if slash:
        shown = f"{scheme}://{authority}"
        if not path:
            raise ValueError(
                f"origin {value!r} ends with a slash: an origin has no path, write {shown!r}"
            )
        raise ValueError(f"origin {value!r} has a path: an origin has none, write {shown!r}")
    if "?" in authority or "#" in authority:
        raise ValueError(f"origin {value!r} has a query or fragment: an origin has neither")
    if "@" in authority:
        raise ValueError(f"origin {value!r} has user information: an origin has none")
    return authority


def _ipv6_authority(value: str, authority: str) -> tuple[str, str, str]:
    """``[address]:port`` as (the compressed ``[address]``, ``":"`` or ``""``, port text)."""
    host, _, port_text = authority[1:].partition("]")
    try:
        host = f"[{ipaddress.IPv6Address(host).compressed}]"
    except ValueError:
        raise ValueError(f"origin {value!r} has an invalid IPv6 address") from None
    if port_text and not port_text.startswith(":"):
        raise ValueError(f"origin {value!r} has text after the IPv6 address")
    return host, port_text[:1], port_text[1:]


def _parse_host(value: str, host: str) -> tuple[str, bool]:
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    if "*" in host:
        raise ValueError(
            f"origin {value!r}: '*' may only be the whole leftmost label, "
            "as in 'https://*.example.com'"
        )
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"origin {value!r} has an invalid host name") from None
    if not host:
        raise ValueError(f"origin {value!r} has no host")
    if not _HOST.fullmatch(host):
        raise ValueError(f"origin {value!r} has an invalid host name {host!r}")
    if wildcard and "." not in host and host != "localhost":
        raise ValueError(
            f"origin {value!r} would match every site under a top-level domain; "
            "name the site: 'https://*.example.com'"
        )
    return host, wildcard


def _parse_port(value: str, text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5 or int(text) > 65535:
        raise ValueError(f"origin {value!r} has an invalid port {text!r}")
    return int(text)


class OriginMatcher:
    """The origins one policy allows, compiled once.

    Args:
        origins: The ``allow_origins`` entries (already a list of str).
        regex: ``allow_origin_regex``, or None.
        credentials: ``allow_credentials``: with ``*``, origins are reflected, not ``*``.

    Raises:
        ValueError: An origin or the regex is invalid.
    """

    __slots__ = ("_exact", "_reflect_any", "_regex", "_wildcards", "public")

    def __init__(self, origins: Iterable[str], regex: str | None, credentials: bool) -> None:
        any_origin = False
        exact: set[bytes] = set()
        wildcards: list[str] = []
        for value in origins:
            if value == "*":
                any_origin = True
            elif value == "null":
                exact.add(_NULL)
            else:
                origin = parse_origin(value)
                if origin.wildcard:
                    wildcards.append(_wildcard_pattern(origin))
                else:
                    exact.add(origin.serialise().encode("ascii"))
        self._exact = frozenset(exact)
        self._wildcards = re.compile("|".join(wildcards)) if wildcards else None
        try:
            self._regex = re.compile(regex) if regex is not None else None
        except re.error as exc:
            raise ValueError(
                f"allow_origin_regex {regex!r} is not a valid regular expression: {exc}"
            ) from None
        self.public = any_origin and not credentials
        """Every origin may read, without credentials: the answer is ``*`` for all."""
        self._reflect_any = any_origin and credentials

    def allowed(self, origin: bytes) -> bytes | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or None if denied.

        ``null`` is allowed only when listed (or by ``*`` without credentials, where the
        answer is ``*`` for everyone); wildcards, the regex and reflection never match it.
        """
        if self.public:
            return _STAR
        if origin in self._exact:
            return origin
        if origin == _NULL or len(origin) > MAX_ORIGIN_BYTES:
            return None
        if self._reflect_any:
            return origin
        text = origin.decode("latin-1")
        if self._wildcards is not None and self._wildcards.fullmatch(text):
            return origin
        if self._regex is not None and self._regex.fullmatch(text):
            return origin
        return None


def _wildcard_pattern(origin: Origin) -> str:
    """The regex alternative for ``scheme://*.host[:port]``: one or more labels, then it."""
    port = f":{origin.port}" if origin.port is not None else ""
    suffix = re.escape(f"{origin.host}{port}")
    return f"(?:{re.escape(origin.scheme)}://{_LABELS}{suffix})"
