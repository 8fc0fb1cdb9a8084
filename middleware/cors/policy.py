"""The CORS policy behind CORSMiddleware: options validated once, decisions made fast.

Pure logic, no ASGI. ``Policy`` validates and normalises the options at start-up and
precomputes every header it can send as bytes. At request time it answers two questions,
each through a bounded LRU cache keyed on the request headers that matter:

* ``actual(origin)``: the headers to add to the app's response for a request with this
  ``Origin``, and whether the policy denies that origin;
* ``preflight(origin, method, headers, private_network)``: the whole preflight response.

Cached answers are tuples; callers build a new list from them for every response, so a
later layer that edits a header list in place cannot change the next response.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Final, NamedTuple

from asgikit.headers import header_tokens
from asgikit.options import string_list

__all__ = [
    "COMMON_METHODS",
    "POLICY_OPTIONS",
    "SAFELISTED_HEADERS",
    "Header",
    "Policy",
    "Preflight",
    "parse_origin",
]

Header = tuple[bytes, bytes]

COMMON_METHODS: Final = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY")
"""What ``allow_methods=["*"]`` allows (Starlette's list), plus any method when not credentialed."""

SAFELISTED_HEADERS: Final = ("Accept", "Accept-Language", "Content-Language", "Content-Type")
"""Request headers always allowed in a preflight, as Starlette does."""

POLICY_OPTIONS: Final = frozenset(
    {
        "allow_origins",
        "allow_origin_regex",
        "allow_methods",
        "allow_headers",
        "allow_credentials",
        "expose_headers",
        "max_age",
        "allow_private_network",
        "allow_any_origin_with_credentials",
        "check_websocket_origin",
        "report_only",
    }
)
"""The options one policy takes: the middleware's own, except ``policies``."""

# Browsers uppercase these six before sending (Fetch "normalize a method"); every other
# method is compared case-sensitively.
_NORMALISED_METHODS: Final = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*").fullmatch
_HOST = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*").fullmatch
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+").fullmatch
_TOKEN_BYTES = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+").fullmatch
# One or more DNS labels before a wildcard's suffix. Labels hold no dots, so the dots
# split the origin unambiguously and matching is linear.
_LABELS: Final = r"(?:[a-z0-9_-]{1,63}\.)+"

# Longer Origin values are never sent by browsers (a host name is at most 253 bytes):
# they are denied without matching, and never cached.
MAX_ORIGIN_BYTES: Final = 512
# Preflight keys longer than this (in bytes) are judged every time instead of cached.
_CACHEABLE_PREFLIGHT_BYTES: Final = 1024
_CACHE_SIZE: Final = 1024

_ACAO: Final = b"access-control-allow-origin"
_ACAC: Final = b"access-control-allow-credentials"
_ACEH: Final = b"access-control-expose-headers"
_ACAM: Final = b"access-control-allow-methods"
_ACAH: Final = b"access-control-allow-headers"
_ACMA: Final = b"access-control-max-age"
_ACAPN: Final = b"access-control-allow-private-network"
_ACRH: Final = b"access-control-request-headers"
_TRUE: Final = b"true"
_STAR: Final = b"*"
_NULL: Final = b"null"
_PREFLIGHT_VARY: Final = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
_SAFELISTED: Final = frozenset(h.lower() for h in SAFELISTED_HEADERS)
_DENIED_HEADERS: Final = (
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"x-content-type-options", b"nosniff"),
)


class Origin(NamedTuple):
    """A configured origin: ``scheme://host[:port]``, or ``scheme://*.host[:port]``."""

    scheme: str
    host: str
    port: int | None
    wildcard: bool

    def serialise(self) -> str:
        host = f"*.{self.host}" if self.wildcard else self.host
        return f"{self.scheme}://{host}" + (f":{self.port}" if self.port is not None else "")


class Preflight(NamedTuple):
    """A preflight answer: status, headers, body, and why it is (or would be) denied."""

    status: int
    headers: tuple[Header, ...]
    body: bytes
    denied: str | None


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
    if not _SCHEME(scheme):
        raise ValueError(f"origin {value!r} has an invalid scheme {scheme!r}")
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
    if authority.startswith("["):
        host, _, port_text = authority[1:].partition("]")
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            raise ValueError(f"origin {value!r} has an invalid IPv6 address") from None
        if port_text and not port_text.startswith(":"):
            raise ValueError(f"origin {value!r} has text after the IPv6 address")
        colon, port_text = port_text[:1], port_text[1:]
        wildcard = False
    else:
        host, colon, port_text = authority.partition(":")
        host, wildcard = _parse_host(value, host.lower())
    port = _parse_port(value, port_text) if colon else None
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return Origin(scheme, host, port, wildcard)


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
    if not _HOST(host):
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


def _tokens(option: str, values: Iterable[str]) -> list[str]:
    for value in values:
        if value != "*" and not _TOKEN(value):
            raise ValueError(f"{option}: {value!r} is not a valid HTTP token")
    return list(dict.fromkeys(values))


def _show(value: bytes) -> str:
    """A short, printable, quoted rendering of request bytes for a denial reason."""
    text = value[:80].decode("latin-1").encode("unicode_escape").decode("ascii")
    return f'"{text}..."' if len(value) > 80 else f'"{text}"'


def _flag(option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{option} must be True or False, not {value!r}")
    return value


class Policy:
    """One CORS policy, validated and precomputed. See ``docs/cors.md``.

    Args:
        where: Prefix for error messages (``"policies[0]: "``); empty for the top level.
        Others: As ``CORSMiddleware``.

    Raises:
        ValueError: An option has a bad value (origin syntax, regex, ``*`` with
            credentials, a negative max_age...).
        TypeError: An option has the wrong type.
    """

    __slots__ = (
        "_actual_cached",
        "_actual_extra",
        "_any_header",
        "_any_method",
        "_exact",
        "_headers_allowed",
        "_headers_value",
        "_max_age",
        "_methods",
        "_methods_value",
        "_preflight_cached",
        "_preflight_vary",
        "_private_network",
        "_reflect_any",
        "_regex",
        "_wildcards",
        "check_websocket_origin",
        "credentials",
        "public",
        "report_only",
    )

    def __init__(
        self,
        *,
        allow_origins: str | Iterable[str] = (),
        allow_origin_regex: str | None = None,
        allow_methods: str | Iterable[str] = ("GET",),
        allow_headers: str | Iterable[str] = (),
        allow_credentials: bool = False,
        expose_headers: str | Iterable[str] = (),
        max_age: int = 600,
        allow_private_network: bool = False,
        allow_any_origin_with_credentials: bool = False,
        check_websocket_origin: bool = False,
        report_only: bool = False,
        where: str = "",
    ) -> None:
        try:
            self._setup(
                string_list(allow_origins, "allow_origins"),
                allow_origin_regex,
                string_list(allow_methods, "allow_methods"),
                string_list(allow_headers, "allow_headers"),
                _flag("allow_credentials", allow_credentials),
                string_list(expose_headers, "expose_headers"),
                max_age,
                _flag("allow_private_network", allow_private_network),
                _flag("allow_any_origin_with_credentials", allow_any_origin_with_credentials),
                _flag("check_websocket_origin", check_websocket_origin),
                _flag("report_only", report_only),
            )
        except (TypeError, ValueError) as exc:
            if where:
                raise type(exc)(f"{where}{exc}") from None
            raise
        self._actual_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(self._judge_actual)
        self._preflight_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(self._judge_preflight)

    def _setup(
        self,
        origins: list[str],
        regex: str | None,
        methods: list[str],
        headers: list[str],
        credentials: bool,
        expose: list[str],
        max_age: int,
        private_network: bool,
        any_with_credentials: bool,
        check_websocket_origin: bool,
        report_only: bool,
    ) -> None:
        any_origin = "*" in origins
        if credentials and not any_with_credentials:
            if any_origin:
                raise ValueError(
                    "allow_origins=['*'] with allow_credentials=True would let every website "
                    "read responses made with the user's cookies. List the origins you trust; "
                    "or, if every site really may, also pass "
                    "allow_any_origin_with_credentials=True (the request's origin is then "
                    "reflected, never '*')"
                )
            if report_only:
                raise ValueError(
                    "report_only=True answers every origin as if it were allowed, so with "
                    "allow_credentials=True every website could read responses made with the "
                    "user's cookies while it is on; pass allow_any_origin_with_credentials=True "
                    "to accept that deliberately"
                )
        if any_with_credentials and not (credentials and (any_origin or report_only)):
            raise ValueError(
                "allow_any_origin_with_credentials=True acknowledges allow_origins=['*'] (or "
                "report_only=True) together with allow_credentials=True; without both it has "
                "no effect: remove it"
            )
        if regex is not None and not isinstance(regex, str):
            raise TypeError(f"allow_origin_regex must be a str or None, not {regex!r}")
        if isinstance(max_age, bool) or not isinstance(max_age, int):
            raise TypeError(f"max_age must be an int (seconds), not {max_age!r}")
        if max_age < 0:
            raise ValueError(f"max_age must be 0 or more seconds, not {max_age}")
        methods = _tokens(
            "allow_methods",
            [m.upper() if m.upper() in _NORMALISED_METHODS else m for m in methods],
        )
        headers = _tokens("allow_headers", headers)
        expose = _tokens("expose_headers", expose)
        if credentials and "*" in expose:
            raise ValueError(
                "expose_headers=['*'] with allow_credentials=True: for credentialed requests "
                "browsers read '*' as a header named '*'; list the headers to expose"
            )

        exact: set[bytes] = set()
        wildcards: list[str] = []
        for value in origins:
            if value in ("*", "null"):
                if value == "null":
                    exact.add(_NULL)
                continue
            origin = parse_origin(value)
            if origin.wildcard:
                port = f":{origin.port}" if origin.port is not None else ""
                suffix = re.escape(f"{origin.host}{port}")
                wildcards.append(f"(?:{re.escape(origin.scheme)}://{_LABELS}{suffix})")
            else:
                exact.add(origin.serialise().encode("ascii"))
        self._exact = frozenset(exact)
        self._wildcards = re.compile("|".join(wildcards)).fullmatch if wildcards else None
        try:
            self._regex = re.compile(regex).fullmatch if regex is not None else None
        except re.error as exc:
            raise ValueError(
                f"allow_origin_regex {regex!r} is not a valid regular expression: {exc}"
            ) from None

        self.credentials = credentials
        self.public = any_origin and not credentials
        self._reflect_any = any_origin and credentials
        self.check_websocket_origin = check_websocket_origin
        self.report_only = report_only
        extra: list[Header] = []
        if credentials:
            extra.append((_ACAC, _TRUE))
        if expose:
            extra.append((_ACEH, ", ".join(expose).encode("ascii")))
        self._actual_extra = tuple(extra)

        self._any_method = "*" in methods and not credentials
        if "*" in methods:
            methods = [*COMMON_METHODS, *(m for m in methods if m not in COMMON_METHODS)]
            methods.remove("*")
        self._methods = frozenset(m.encode("ascii") for m in methods)
        self._methods_value = ", ".join(methods).encode("ascii")
        self._any_header = "*" in headers
        named = [*SAFELISTED_HEADERS, *(h for h in headers if h.lower() not in _SAFELISTED)]
        if self._any_header:
            named.remove("*")
        self._headers_allowed = frozenset(h.lower().encode("ascii") for h in named)
        self._headers_value = ", ".join(named).encode("ascii")
        self._max_age = str(max_age).encode("ascii")
        self._private_network = private_network
        vary = _PREFLIGHT_VARY
        if private_network:
            vary += b", Access-Control-Request-Private-Network"
        self._preflight_vary: Header = (b"vary", vary)

    # ---- origins ---------------------------------------------------------------------

    def allowed_origin(self, origin: bytes) -> bytes | None:
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
        if self._wildcards is not None and self._wildcards(text):
            return origin
        if self._regex is not None and self._regex(text):
            return origin
        return None

    def actual(self, origin: bytes) -> tuple[tuple[Header, ...], bool]:
        """The CORS headers for a response to a request from ``origin``, and "denied".

        Denied origins get no headers, except in report-only mode, where they get the
        headers of an allowed origin (the origin reflected).
        """
        if len(origin) > MAX_ORIGIN_BYTES:
            return self._judge_actual(origin)
        return self._actual_cached(origin)

    def _judge_actual(self, origin: bytes) -> tuple[tuple[Header, ...], bool]:
        value = self.allowed_origin(origin)
        if value is not None:
            return ((_ACAO, value), *self._actual_extra), False
        if self.report_only:
            return ((_ACAO, origin), *self._actual_extra), True
        return (), True

    # ---- preflight -------------------------------------------------------------------

    def preflight(
        self, origin: bytes, method: bytes, headers: bytes | None, private_network: bool
    ) -> Preflight:
        """The response to a preflight (``OPTIONS`` with ``Origin`` and ACRM).

        Args:
            origin: The ``Origin`` value.
            method: The ``Access-Control-Request-Method`` value.
            headers: The ``Access-Control-Request-Headers`` value (fields joined), if any.
            private_network: ``Access-Control-Request-Private-Network: true`` was sent.
        """
        size = len(origin) + len(method) + (len(headers) if headers is not None else 0)
        if size > _CACHEABLE_PREFLIGHT_BYTES:
            return self._judge_preflight(origin, method, headers, private_network)
        return self._preflight_cached(origin, method, headers, private_network)

    def _judge_preflight(
        self, origin: bytes, method: bytes, headers: bytes | None, private_network: bool
    ) -> Preflight:
        reasons: list[str] = []
        allow_origin = self.allowed_origin(origin)
        if allow_origin is None:
            reasons.append(f"origin {_show(origin)} is not allowed")
            allow_origin = origin  # answered only in report-only mode
        methods_value = self._methods_value
        if method not in self._methods:
            if not (self._any_method and _TOKEN_BYTES(method)):
                reasons.append(f"method {_show(method)} is not allowed")
            methods_value = methods_value + b", " + method if methods_value else method
        requested = header_tokens([(_ACRH, headers)], _ACRH) if headers is not None else []
        refused = [h for h in requested if h.lower() not in self._headers_allowed]
        if refused and not self._any_header:
            names = ", ".join(_show(h) for h in refused)
            several = len(refused) > 1
            verb = "are" if several else "is"
            reasons.append(f"header{'s' if several else ''} {names} {verb} not allowed")
        reason = "; ".join(reasons) if reasons else None
        if reason is not None and not self.report_only:
            body = f"CORS preflight denied: {reason}".encode()
            denied = (*_DENIED_HEADERS, (b"content-length", b"%d" % len(body)))
            return Preflight(403, (*denied, self._preflight_vary), body, reason)

        # Allowed, or denied in report-only mode: answered as if all that was asked were.
        answer: list[Header] = [(_ACAO, allow_origin)]
        if self.credentials:
            answer.append((_ACAC, _TRUE))
        answer.append((_ACAM, methods_value))
        if headers is not None:
            mirror = self._any_header or reason is not None
            answer.append((_ACAH, headers if mirror else self._headers_value))
        if private_network and self._private_network:
            answer.append((_ACAPN, _TRUE))
        answer.append((_ACMA, self._max_age))
        answer.append(self._preflight_vary)
        return Preflight(204, tuple(answer), b"", reason)


def select_policy(
    prefixes: tuple[tuple[str, str, Policy], ...], default: Policy
) -> Callable[[str], Policy]:
    """A function from a request path to its policy: the longest matching prefix wins.

    ``prefixes`` holds ``(prefix, prefix + "/", policy)`` sorted longest first, prefixes
    without a trailing slash: ``/api`` matches ``/api`` and ``/api/...``, not ``/apis``.
    """

    def select(path: str) -> Policy:
        for prefix, below, policy in prefixes:
            if path.startswith(below) or path == prefix:
                return policy
        return default

    return select
