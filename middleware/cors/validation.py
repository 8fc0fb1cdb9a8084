"""CORSMiddleware's options checked at start-up: types, HTTP tokens, risky combinations.

Pure logic, no ASGI. ``validated`` turns one policy's options into a ``Settings`` or
raises ``TypeError``/``ValueError`` naming the option; origins and the regex are checked
as ``OriginMatcher`` compiles them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, NamedTuple

from asgikit.options import bounded_int, flag, string_list

__all__ = ["COMMON_METHODS", "POLICY_OPTIONS", "SAFELISTED_HEADERS", "Settings", "validated"]

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
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Settings(NamedTuple):
    """One policy's options, checked; lists deduplicated, methods normalised."""

    origins: list[str]
    regex: str | None
    methods: list[str]
    headers: list[str]
    credentials: bool
    expose: list[str]
    max_age: int
    private_network: bool
    check_websocket_origin: bool
    report_only: bool


def validated(
    *,
    allow_origins: str | Iterable[str],
    allow_origin_regex: str | None,
    allow_methods: str | Iterable[str],
    allow_headers: str | Iterable[str],
    allow_credentials: bool,
    expose_headers: str | Iterable[str],
    max_age: int,
    allow_private_network: bool,
    allow_any_origin_with_credentials: bool,
    check_websocket_origin: bool,
    report_only: bool,
) -> Settings:
    """Check one policy's options (as ``CORSMiddleware`` takes them).

    Raises:
        ValueError: An option has a bad value, or a combination is risky (``*`` with
            credentials, report-only with credentials) without its acknowledgement.
        TypeError: An option has the wrong type.
    """
    origins = string_list(allow_origins, "allow_origins")
    methods = string_list(allow_methods, "allow_methods")
    headers = string_list(allow_headers, "allow_headers")
    credentials = flag(allow_credentials, "allow_credentials")
    expose = string_list(expose_headers, "expose_headers")
    private_network = flag(allow_private_network, "allow_private_network")
    any_with_credentials = flag(
        allow_any_origin_with_credentials, "allow_any_origin_with_credentials"
    )
    check_websocket_origin = flag(check_websocket_origin, "check_websocket_origin")
    report_only = flag(report_only, "report_only")
    _check_credentials("*" in origins, credentials, any_with_credentials, report_only)
    if allow_origin_regex is not None and not isinstance(allow_origin_regex, str):
        raise TypeError(f"allow_origin_regex must be a str or None, not {allow_origin_regex!r}")
    max_age = bounded_int(max_age, "max_age", 0)
    methods = _tokens(
        "allow_methods", [m.upper() if m.upper() in _NORMALISED_METHODS else m for m in methods]
    )
    headers = _tokens("allow_headers", headers)
    expose = _tokens("expose_headers", expose)
    if credentials and "*" in expose:
        raise ValueError(
            "expose_headers=['*'] with allow_credentials=True: for credentialed requests "
            "browsers read '*' as a header named '*'; list the headers to expose"
        )
    return Settings(
        origins,
        allow_origin_regex,
        methods,
        headers,
        credentials,
        expose,
        max_age,
        private_network,
        check_websocket_origin,
        report_only,
    )


def _check_credentials(
    any_origin: bool, credentials: bool, any_with_credentials: bool, report_only: bool
) -> None:
    """Every origin reading credentialed responses must be asked for deliberately."""
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


def _tokens(option: str, values: Iterable[str]) -> list[str]:
    for value in values:
        if value != "*" and not _TOKEN.fullmatch(value):
            raise ValueError(f"{option}: {value!r} is not a valid HTTP token")
    return list(dict.fromkeys(values))
