"""HTTPSRedirectMiddleware: send http and ws clients to https and wss; HSTS on https."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import Final, Literal

from asgikit.answers import answer, decide, plain_text
from asgikit.hosts import parse_host
from asgikit.options import bounded_int, flag
from asgikit.paths import PathMatcher, location_path
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HSTS_MAX_AGE", "HTTPSRedirectMiddleware"]

HSTS_MAX_AGE: Final = 31_536_000
"""One year in seconds: the default ``max-age``, and the least that preload lists take."""

_HOST: Final = b"host"
_STS: Final = b"strict-transport-security"
_STS_LENGTH: Final = len(_STS)
_SECURE: Final = {"http": "https", "ws": "wss"}
_DEFAULT_PORTS: Final = frozenset({80, 443})
_INVALID_HOST: Final = plain_text(400, "Invalid host header")


def _authority(scope: Scope, https_port: int | None) -> str | None:
    """``host[:port]`` of the https URL: the ``Host`` header's host, or the server's when
    the header is missing or malformed; None when neither names a host."""
    parsed = None
    for name, value in scope["headers"]:
        if name == _HOST:
            parsed = parse_host(value)
            break
    if parsed is None:
        server = scope.get("server")
        if not server or not isinstance(server[0], str) or not server[0].isascii():
            return None
        host = server[0]
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        found = parse_host(host.encode("ascii"))
        if found is None:  # a Unix socket's path, say
            return None
        parsed = found[0], server[1]
    host, port = parsed
    if ":" in host:
        host = f"[{host}]"
    if https_port is not None:
        port = https_port if https_port != 443 else None
    elif port in _DEFAULT_PORTS:
        port = None  # http's 80 and a stray 443 alike: https's default
    return host if port is None else f"{host}:{port}"


def _hsts_value(max_age: int, include_subdomains: bool, preload: bool) -> bytes:
    value = f"max-age={max_age}"
    if include_subdomains:
        value += "; includeSubDomains"
    if preload:
        value += "; preload"
    return value.encode("ascii")


class HTTPSRedirectMiddleware:
    """Redirect ``http`` requests to ``https`` and ``ws`` handshakes to ``wss``; with
    ``hsts``, tell browsers to use https from then on.

    The scheme and host are the ones the request arrived with, after
    ProxyHeadersMiddleware set them from a trusted proxy's headers. See
    ``docs/https_redirect.md``.

    Args:
        app: The ASGI app to wrap.
        redirect_status: 307 (temporary, as Starlette) or 308 (permanent: browsers
            remember it). Both keep the method and the body, so a POST is sent again
            as a POST.
        https_port: The port of the https URL; None keeps the request's port unless it
            is 80 or 443 (then none is written).
        exclude_paths: Path patterns never redirected (``asgikit.paths``), for a load
            balancer's plain-http health checks.
        hsts: Add ``Strict-Transport-Security`` to https responses that have none.
        hsts_max_age: Its ``max-age``, in seconds.
        hsts_include_subdomains: Add ``includeSubDomains``: every subdomain too.
        hsts_preload: Add ``preload`` (for the browsers' preload lists, which ask for
            ``includeSubDomains`` and a ``max-age`` of a year or more).

    Raises:
        ValueError: An option has a bad value, or an ``hsts_`` option is given without
            ``hsts``, or ``hsts_preload`` without what the preload lists ask for.
        TypeError: An option has the wrong type.
    """

    __slots__ = ("_excluded", "_hsts", "_https_port", "_status", "app")

    def __init__(
        self,
        app: ASGIApp,
        *,
        redirect_status: Literal[307, 308] = 307,
        https_port: int | None = None,
        exclude_paths: str | Iterable[str] = (),
        hsts: bool = False,
        hsts_max_age: int = HSTS_MAX_AGE,
        hsts_include_subdomains: bool = False,
        hsts_preload: bool = False,
    ) -> None:
        self.app = app
        if isinstance(redirect_status, bool) or redirect_status not in (307, 308):
            raise ValueError(
                f"redirect_status: expected 307 or 308 (both keep the method and body), "
                f"got {redirect_status!r}"
            )
        self._status: int = redirect_status
        self._https_port = (
            None if https_port is None else bounded_int(https_port, "https_port", 1, 65535)
        )
        excluded = PathMatcher(exclude_paths)
        self._excluded = excluded if excluded else None  # None: no test per request
        self._hsts = _hsts_option(hsts, hsts_max_age, hsts_include_subdomains, hsts_preload)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            scheme = scope.get("scheme", "http")
            hsts = self._hsts
        elif kind == "websocket":
            scheme = scope.get("scheme", "ws")
            hsts = None  # a handshake's accept is no place for HSTS: browsers ignore it there
        else:
            return await self.app(scope, receive, send)
        target = _SECURE.get(scheme)
        if target is None and hsts is None:  # already secure, nothing to add
            return await self.app(scope, receive, send)
        excluded = self._excluded
        if excluded is not None and excluded(scope["path"]):
            return await self.app(scope, receive, send)
        if target is not None:
            return await self._redirect(scope, receive, send, target)
        if scheme != "https":  # a scheme no server sets: not this middleware's to judge
            return await self.app(scope, receive, send)

        # A plain function returning send's awaitable is a valid ASGI send, without a
        # coroutine frame per message: docs/architecture.md, Speed.
        def send_with_hsts(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                if not _has_sts(headers):
                    message = {**message, "headers": [*headers, hsts]}
            return send(message)

        return await self.app(scope, receive, send_with_hsts)

    async def _redirect(self, scope: Scope, receive: Receive, send: Send, target: str) -> None:
        """Answer with the redirect to the *target* scheme, or 400 when no host is known."""
        authority = _authority(scope, self._https_port)
        if authority is None:
            decide(scope, "host_refused", **{"https_redirect.reason": "no_host"})
            headers, body = _INVALID_HOST
            await answer(scope, receive, send, 400, [*headers], body)
            return
        location = f"{target}://{authority}{location_path(scope)}"
        status = self._status
        headers, body = plain_text(status, headers=[(b"location", location.encode("ascii"))])
        decide(scope, "https_redirect", **{"redirect.status": status})
        await answer(scope, receive, send, status, headers, body)


def _has_sts(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the app set ``Strict-Transport-Security``, in any case (Django writes
    names as they are spelled): the length first, so only a name that long is lowered."""
    # A loop, not any() over a generator: asgikit.headers.has_header measured it faster.
    for name, _ in headers:  # noqa: SIM110
        if len(name) == _STS_LENGTH and name.lower() == _STS:
            return True
    return False


def _hsts_option(
    hsts: bool, max_age: int, include_subdomains: bool, preload: bool
) -> tuple[bytes, bytes] | None:
    """The ``Strict-Transport-Security`` field to add, built once; None without ``hsts``."""
    flag(hsts, "hsts")
    bounded_int(max_age, "hsts_max_age", 0)
    flag(include_subdomains, "hsts_include_subdomains")
    flag(preload, "hsts_preload")
    if not hsts:
        given = [
            name
            for name, value, default in (
                ("hsts_max_age", max_age, HSTS_MAX_AGE),
                ("hsts_include_subdomains", include_subdomains, False),
                ("hsts_preload", preload, False),
            )
            if value != default
        ]
        if given:
            raise ValueError(f"{given[0]}: has no effect without hsts=True")
        return None
    if preload and (max_age < HSTS_MAX_AGE or not include_subdomains):
        raise ValueError(
            f"hsts_preload: preload lists take only max-age >= {HSTS_MAX_AGE} with "
            f"includeSubDomains; got hsts_max_age={max_age}, "
            f"hsts_include_subdomains={include_subdomains}"
        )
    return (_STS, _hsts_value(max_age, include_subdomains, preload))
