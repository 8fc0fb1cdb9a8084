"""TrustedHostMiddleware: answer only requests for a host the app serves (Host header)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from asgikit.answers import answer, decide, plain_text
from asgikit.hosts import parse_host, parse_port
from asgikit.options import flag, string_list
from asgikit.paths import PathMatcher, location_path
from asgikit.types import ASGIApp, Receive, Scope, Send

__all__ = ["TrustedHostMiddleware"]

_HOST: Final = b"host"
_REFUSAL: Final = plain_text(400, "Invalid host header")
_WWW_STATUS: Final = 307
# An RFC 3986 IPvFuture literal ("[v1.fe80::a+en1]"), which asgikit.hosts does not read.
_FUTURE: Final = re.compile(
    rb"\[(v[0-9a-f]+\.[a-z0-9._~!$&'()*+,;=:-]+)\](?::([0-9]{1,5}))?", re.IGNORECASE
).fullmatch
_WILDCARD_SHAPE: Final = "a host pattern is a host, '*.' and a domain ('*.example.com'), or '*'"
# Bounded cache of Host value -> verdict (cleared when full), as proxy headers keeps one.
_CACHE_SIZE: Final = 1024
_ALLOW: Final = 0
_REFUSE: Final = 1
_WWW: Final = 2  # refused, but the same host with "www." in front is allowed


def _host_of(value: bytes) -> tuple[str, int | None] | None:
    """The host a ``Host`` value names, lowercase, and its port; None when malformed.

    A name or IPv4 address as written; an IPv6 address without brackets, in its
    canonical form (``[0:0::1]`` is ``::1``); an IPvFuture literal with its brackets.
    """
    parsed = parse_host(value)
    if parsed is not None:
        return parsed[0].lower(), parsed[1]
    match = _FUTURE(value)
    if match is None:
        return None
    literal, raw_port = match.groups()
    port = None if raw_port is None else parse_port(raw_port)
    if raw_port is not None and port is None:
        return None
    return "[" + literal.decode("ascii").lower() + "]", port


def _pattern(entry: str) -> str:
    """One ``allowed_hosts`` entry, checked and in the form a host is compared with."""
    if not entry.isascii():
        try:
            ascii_form = entry.encode("idna").decode("ascii")
        except UnicodeError:
            ascii_form = "its ASCII (xn--) form"
        raise ValueError(
            f"allowed_hosts: {entry!r} is not ASCII; clients send {ascii_form!r}: list that"
        )
    wildcard = entry.startswith("*.")
    if "*" in (entry[2:] if wildcard else entry):
        raise ValueError(f"allowed_hosts: {entry!r}: {_WILDCARD_SHAPE}")
    host = _host_of((entry[2:] if wildcard else entry).encode("ascii"))
    if host is None:
        raise ValueError(f"allowed_hosts: {entry!r} is not a host name or IP address")
    if host[1] is not None:
        raise ValueError(
            f"allowed_hosts: {entry!r} has a port; the port is not compared, list the host alone"
        )
    if wildcard and (":" in host[0] or host[0].startswith("[")):
        raise ValueError(f"allowed_hosts: {entry!r}: {_WILDCARD_SHAPE}")
    return "." + host[0] if wildcard else host[0]


class TrustedHostMiddleware:
    """Refuse requests and websockets whose ``Host`` is not one of ``allowed_hosts``.

    Option names and defaults are Starlette's; what differs, and why, is in
    ``docs/trusted_host.md``. The host compared is the ``Host`` header (HTTP/2's
    ``:authority``, which servers pass as ``host``), after ProxyHeadersMiddleware
    rewrote it from a trusted proxy's forwarded host.

    Args:
        app: The ASGI app to wrap.
        allowed_hosts: Hosts the app serves: a host name or IP address
            (``example.com``, ``10.0.0.5``, ``[::1]``), ``*.`` and a domain for every
            subdomain of it (``*.example.com``, not ``example.com`` itself), or ``*``
            for every host (the middleware then checks nothing); case-insensitive, the
            port never compared. A comma-separated str or an iterable of str; None
            is ``*``, as with Starlette.
        www_redirect: Redirect a request for ``example.com`` to ``www.example.com``
            (307, path and query kept) when only the latter is allowed.
        exclude_paths: Path patterns never checked (``asgikit.paths``: ``/health``
            covers ``/health/live``), for a load balancer's health checks that name
            the server by its IP address.

    Raises:
        ValueError: An entry of ``allowed_hosts`` or ``exclude_paths`` is not valid.
        TypeError: An option has the wrong type.
    """

    __slots__ = (
        "_any",
        "_exact",
        "_excluded",
        "_suffixes",
        "_verdicts",
        "allowed_hosts",
        "app",
        "www_redirect",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: str | Iterable[str] | None = ("*",),
        www_redirect: bool = True,
        exclude_paths: str | Iterable[str] = (),
    ) -> None:
        self.app = app
        entries = ["*"] if allowed_hosts is None else string_list(allowed_hosts, "allowed_hosts")
        self.allowed_hosts: list[str] = [entry.lower() for entry in entries]
        """The entries as given, in lowercase."""
        self.www_redirect = flag(www_redirect, "www_redirect")
        self._any = "*" in self.allowed_hosts
        patterns = [_pattern(entry) for entry in self.allowed_hosts if entry != "*"]
        self._exact = frozenset(pattern for pattern in patterns if not pattern.startswith("."))
        self._suffixes = tuple(pattern for pattern in patterns if pattern.startswith("."))
        excluded = PathMatcher(exclude_paths)
        self._excluded = excluded if excluded else None  # None: no test per request
        self._verdicts: dict[bytes, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if self._any or (kind != "http" and kind != "websocket"):
            return await self.app(scope, receive, send)
        host = None
        verdict = None  # None: no Host, or more than one (RFC 9112 section 3.2: a 400)
        for name, value in scope["headers"]:
            if name == _HOST:
                if host is not None:
                    verdict = None
                    break
                host = value
                verdict = self._verdicts.get(value)
                if verdict is None:
                    verdict = self._judge(value)
        if verdict == _ALLOW:
            return await self.app(scope, receive, send)
        excluded = self._excluded
        if excluded is not None and excluded(scope["path"]):
            return await self.app(scope, receive, send)
        return await self._refuse(scope, receive, send, host, verdict)

    def _judge(self, value: bytes) -> int:
        """The verdict on one ``Host`` value, kept in the bounded cache."""
        parsed = _host_of(value)
        if parsed is None:
            verdict = _REFUSE
        else:
            host = parsed[0]
            if host in self._exact or (host.endswith(self._suffixes) and host[0] != "."):
                verdict = _ALLOW
            elif "www." + host in self._exact:
                verdict = _WWW
            else:
                verdict = _REFUSE
        if len(self._verdicts) >= _CACHE_SIZE:
            self._verdicts.clear()
        self._verdicts[value] = verdict
        return verdict

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, host: bytes | None, verdict: int | None
    ) -> None:
        """Answer 400, or redirect to the www host, without calling the app."""
        if host is not None and verdict == _WWW and self.www_redirect:
            await _to_www(scope, receive, send, host)
            return
        if host is None or verdict is None:
            reason = "missing" if host is None else "repeated"
        else:
            reason = "malformed" if _host_of(host) is None else "not_allowed"
        decide(scope, "host_refused", **{"trusted_host.reason": reason})
        headers, body = _REFUSAL
        await answer(scope, receive, send, 400, [*headers], body)


async def _to_www(scope: Scope, receive: Receive, send: Send, host: bytes) -> None:
    """Redirect to the same URL on ``www.`` and *host* (a valid ``Host`` value)."""
    scheme = scope.get("scheme") or ("http" if scope["type"] == "http" else "ws")
    location = f"{scheme}://www.{host.decode('ascii')}{location_path(scope)}"
    headers, body = plain_text(_WWW_STATUS, headers=[(b"location", location.encode("ascii"))])
    decide(scope, "www_redirect", **{"redirect.status": _WWW_STATUS})
    await answer(scope, receive, send, _WWW_STATUS, headers, body)
