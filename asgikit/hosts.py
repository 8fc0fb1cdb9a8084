"""Host and port values as clients and proxies send them (``Host``, forwarded hosts).

Shared by every middleware that reads a host: proxy headers (forwarded hosts), tracing
(``server.address``), and whatever checks the ``Host`` header.
"""

from __future__ import annotations

import re
from ipaddress import IPv6Address
from typing import Final

__all__ = ["parse_host", "parse_port"]

_HOST: Final = re.compile(
    rb"(?:\[(?P<ipv6>[0-9A-Fa-f:.]{2,45})\]|(?P<name>[A-Za-z0-9._~-]{1,253}))"
    rb"(?::(?P<port>[0-9]{1,5}))?"
).fullmatch


def parse_port(value: bytes) -> int | None:
    """A TCP port, 1-65535, written in decimal digits only; None otherwise."""
    if 0 < len(value) <= 5 and value.isdigit():
        port = int(value)
        if 0 < port <= 65535:
            return port
    return None


def parse_host(value: bytes) -> tuple[str, int | None] | None:
    """Validate a forwarded host: a host name, IPv4 or ``[IPv6]``, with an optional port.

    Returns:
        ``(host, port)`` with the brackets of an IPv6 host removed and port None when
        none was given; None for anything else (spaces, control characters, ``/``,
        ``@``, an empty or out-of-range port, non-ASCII bytes).
    """
    match = _HOST(value)
    if match is None:
        return None
    ipv6, name, raw_port = match.group("ipv6", "name", "port")
    port = None
    if raw_port is not None:
        port = parse_port(raw_port)
        if port is None:
            return None
    if ipv6 is not None:
        try:
            host = str(IPv6Address(ipv6.decode("ascii")))
        except ValueError:
            return None
    else:
        host = name.decode("ascii")
    return host, port
