"""BodyLimitMiddleware's pure logic: the limits per path and method, and the two request
headers it reads (``Content-Length``, ``Content-Encoding``).

Nothing here does I/O. ``limit_table`` checks the ``rules`` option once, at start-up; per
request, ``match`` finds the limits for a path and method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypedDict

from asgikit.options import bounded_int
from asgikit.paths import SELECTOR_FIELDS, RuleTable, Selector, selector

__all__ = [
    "INVALID",
    "Limits",
    "RuleSpec",
    "content_codings",
    "content_length",
    "limit_table",
    "size_option",
]

INVALID: Final = -1
"""What ``content_length`` returns for a ``Content-Length`` that does not parse."""

_RULE_FIELDS: Final = SELECTOR_FIELDS | {"max_body_size", "max_decompressed_size"}
# A length of more digits than this is larger than any limit an int option can hold in
# practice (2**63 has 19): no need to parse it, and Python refuses ints of 4300+ digits.
_MAX_DIGITS: Final = 19
_HUGE: Final = 1 << 64


class RuleSpec(TypedDict, total=False):
    """One rule, as written in code or a config file.

    ``path`` (a prefix, on whole segments, as in ``exclude_paths``) or ``route`` (a
    template such as ``/users/{id}/avatar``) selects the requests; neither means every
    path. ``methods`` narrows it (``GET`` brings ``HEAD``). ``max_body_size`` is required
    (``None``: no limit there); ``max_decompressed_size`` defaults to the middleware's.
    """

    path: str
    route: str
    methods: Sequence[str]
    max_body_size: int | None
    max_decompressed_size: int | None


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one request, in bytes (``None``: no limit)."""

    body: int | None
    """The body as received (compressed, when it is)."""
    decoded: int | None
    """The body after decompression."""


def size_option(value: object, option: str) -> int | None:
    """A size in bytes (an int of at least 0), or None."""
    return None if value is None else bounded_int(value, option, 0)


def resolve(body: int | None, decoded: int | None) -> Limits:
    """The limits, where an unset decompressed limit follows the body limit."""
    return Limits(body, body if decoded is None else decoded)


def _rule(spec: object, where: str, decoded_default: int | None) -> tuple[Selector, Limits]:
    if not isinstance(spec, Mapping):
        raise TypeError(f"{where}: expected a mapping (a RuleSpec), got {spec!r}")
    unknown = sorted(set(spec) - _RULE_FIELDS)
    if unknown:
        known = ", ".join(sorted(_RULE_FIELDS))
        raise ValueError(f"{where}: unknown field {unknown[0]!r}; known: {known}")
    if "max_body_size" not in spec:
        raise ValueError(f"{where}.max_body_size: required (None for no limit on these paths)")
    body = size_option(spec["max_body_size"], f"{where}.max_body_size")
    decoded = size_option(
        spec.get("max_decompressed_size", decoded_default), f"{where}.max_decompressed_size"
    )
    return selector(spec, where), resolve(body, decoded)


def limit_table(
    rules: Sequence[object], default: Limits, decoded_default: int | None
) -> RuleTable[Limits]:
    """The ``rules`` option, checked; the table's ``match(path, method)`` gives a
    request's limits.

    The most specific rule that matches wins: the longest ``path`` or ``route`` (as
    written), then a rule naming methods over one that does not, then the first given.

    Args:
        rules: The rules (``RuleSpec`` mappings).
        default: The limits of a request no rule matches.
        decoded_default: The middleware's ``max_decompressed_size``, for rules without one.
    """
    if isinstance(rules, str | bytes | Mapping) or not isinstance(rules, Sequence):
        raise TypeError(f"rules: expected a list of rules, got {rules!r}")
    built = [_rule(spec, f"rules[{index}]", decoded_default) for index, spec in enumerate(rules)]
    return RuleTable(built, default)


def _parse_length(value: bytes) -> int:
    # RFC 9110 8.6: 1*DIGIT. A list of one repeated value ("5, 5") is what some proxies
    # make of a duplicated field; it is accepted, as the RFC allows.
    if b"," in value:
        items = {item.strip(b" \t") for item in value.split(b",")}
        if len(items) != 1:
            return INVALID
        value = items.pop()
    if not value.isdigit():  # bytes.isdigit: ASCII digits only, no sign, no space
        return INVALID
    value = value.lstrip(b"0") or b"0"
    return _HUGE if len(value) > _MAX_DIGITS else int(value)


def content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The request's ``Content-Length``: None when absent, ``INVALID`` when it does not
    parse or its fields disagree."""
    found: int | None = None
    for name, value in headers:
        if name == b"content-length":
            # The usual value first: plain digits, short enough to be a limit's size.
            if value.isdigit() and len(value) <= _MAX_DIGITS:
                length = int(value)
            else:
                length = _parse_length(value)
            if length == INVALID or (found is not None and length != found):
                return INVALID
            found = length
    return found


def content_codings(headers: Sequence[tuple[bytes, bytes]]) -> list[str]:
    """The request's content codings in the order applied, lowercase, ``identity`` left out."""
    codings = []
    for name, value in headers:
        if name == b"content-encoding":
            for item in value.split(b","):
                token = item.strip(b" \t").lower()
                if token and token != b"identity":
                    codings.append(token.decode("latin-1"))
    return codings
