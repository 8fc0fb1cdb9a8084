"""The CORS policy behind CORSMiddleware: options validated once, decisions made fast.

Pure logic, no ASGI. ``Policy`` validates and normalises the options at start-up (see
``validation`` and ``origins``) and precomputes every header it can send as bytes. At
request time it answers two questions, each through a bounded LRU cache keyed on the
request headers that matter:

* ``actual(origin)``: the headers to add to the app's response for a request with this
  ``Origin``, and whether the policy denies that origin;
* ``preflight(origin, method, headers, private_network)``: the whole preflight response.

Cached answers are tuples; callers build a new list from them for every response, so a
later layer that edits a header list in place cannot change the next response.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, NamedTuple

from asgikit.headers import header_tokens
from asgikit.paths import path_pattern

from .origins import MAX_ORIGIN_BYTES, OriginMatcher
from .validation import COMMON_METHODS, POLICY_OPTIONS, SAFELISTED_HEADERS, Settings, validated

__all__ = ["Header", "Policy", "Preflight", "path_policies"]

Header = tuple[bytes, bytes]

_TOKEN_BYTES: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
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
# Starlette's value, every name a preflight answer may depend on (the private-network one
# too, though without allow_private_network the answer does not depend on it: harmless).
_PREFLIGHT_VARY: Final = (
    b"vary",
    b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers, "
    b"Access-Control-Request-Private-Network",
)
# An allowed preflight gets 200 "OK", as from Starlette: any 2xx does for browsers, and
# tests written against Starlette's middleware check for this one.
_ALLOWED_BODY: Final = b"OK"
_ALLOWED_HEADERS: Final = (
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", b"%d" % len(_ALLOWED_BODY)),
)
_SAFELISTED: Final = frozenset(h.lower() for h in SAFELISTED_HEADERS)
_DENIED_HEADERS: Final = (
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"x-content-type-options", b"nosniff"),
)


class Preflight(NamedTuple):
    """A preflight answer: status, headers, body, and why it is (or would be) denied."""

    status: int
    headers: tuple[Header, ...]
    body: bytes
    denied: str | None


def _show(value: bytes) -> str:
    """A short, printable, quoted rendering of request bytes for a denial reason."""
    text = value[:80].decode("latin-1").encode("unicode_escape").decode("ascii")
    return f'"{text}..."' if len(value) > 80 else f'"{text}"'


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
        "_headers_allowed",
        "_headers_value",
        "_max_age",
        "_methods",
        "_methods_value",
        "_origins",
        "_preflight_cached",
        "_private_network",
        "check_websocket_origin",
        "credentials",
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
            settings = validated(
                allow_origins=allow_origins,
                allow_origin_regex=allow_origin_regex,
                allow_methods=allow_methods,
                allow_headers=allow_headers,
                allow_credentials=allow_credentials,
                expose_headers=expose_headers,
                max_age=max_age,
                allow_private_network=allow_private_network,
                allow_any_origin_with_credentials=allow_any_origin_with_credentials,
                check_websocket_origin=check_websocket_origin,
                report_only=report_only,
            )
            self._origins = OriginMatcher(settings.origins, settings.regex, settings.credentials)
        except (TypeError, ValueError) as exc:
            if where:
                raise type(exc)(f"{where}{exc}") from None
            raise
        self.credentials = settings.credentials
        self.check_websocket_origin = settings.check_websocket_origin
        self.report_only = settings.report_only
        extra: list[Header] = []
        if settings.credentials:
            extra.append((_ACAC, _TRUE))
        if settings.expose:
            extra.append((_ACEH, ", ".join(settings.expose).encode("ascii")))
        self._actual_extra = tuple(extra)
        self._setup_preflight(settings)
        self._actual_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(self._judge_actual)
        self._preflight_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(self._judge_preflight)

    def _setup_preflight(self, settings: Settings) -> None:
        """Precompute the preflight answer's parts: methods, headers, max age."""
        methods = settings.methods
        self._any_method = "*" in methods and not settings.credentials
        if "*" in methods:
            methods = [*COMMON_METHODS, *(m for m in methods if m not in COMMON_METHODS)]
            methods.remove("*")
        self._methods = frozenset(m.encode("ascii") for m in methods)
        self._methods_value = ", ".join(methods).encode("ascii")
        headers = settings.headers
        self._any_header = "*" in headers
        named = [*SAFELISTED_HEADERS, *(h for h in headers if h.lower() not in _SAFELISTED)]
        if self._any_header:
            named.remove("*")
        self._headers_allowed = frozenset(h.lower().encode("ascii") for h in named)
        self._headers_value = ", ".join(named).encode("ascii")
        self._max_age = str(settings.max_age).encode("ascii")
        self._private_network = settings.private_network

    # ---- origins ---------------------------------------------------------------------

    def allowed_origin(self, origin: bytes) -> bytes | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or None if denied.

        ``null`` is allowed only when listed (or by ``*`` without credentials, where the
        answer is ``*`` for everyone); wildcards, the regex and reflection never match it.
        """
        return self._origins.allowed(origin)

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
            if not (self._any_method and _TOKEN_BYTES.fullmatch(method)):
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
            return Preflight(403, (*denied, _PREFLIGHT_VARY), body, reason)

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
        answer.append(_PREFLIGHT_VARY)
        return Preflight(200, (*answer, *_ALLOWED_HEADERS), _ALLOWED_BODY, reason)


def path_policies(policies: object) -> list[tuple[str, Policy]]:
    """Validate the ``policies`` option into ``(path pattern, policy)`` pairs
    (``asgikit.paths``: ``/api`` covers ``/api/...``, not ``/apis``)."""
    if isinstance(policies, (str, bytes, Mapping)) or not isinstance(policies, Iterable):
        raise TypeError(f"policies must be a list of mappings, not {policies!r}")
    found: dict[str, Policy] = {}
    for index, entry in enumerate(policies):
        where = f"policies[{index}]: "
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where}a policy must be a mapping, not {entry!r}")
        options: dict[str, Any] = dict(entry)
        path = options.pop("path", None)
        pattern = path_pattern(path, f"{where}'path'")
        _check_option_names(where, options)
        if pattern in found:
            raise ValueError(f"{where}path {path!r} repeats another policy's path")
        found[pattern] = Policy(**options, where=where)
    return list(found.items())


def _check_option_names(where: str, options: Mapping[str, Any]) -> None:
    for key in options:
        if key not in POLICY_OPTIONS:
            close = difflib.get_close_matches(str(key), POLICY_OPTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(sorted(POLICY_OPTIONS))
            raise ValueError(f"{where}unknown option {key!r}{hint}; known: path, {known}")
