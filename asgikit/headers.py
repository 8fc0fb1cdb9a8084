"""Fast helpers over raw ASGI header lists.

These work on the raw ``list[tuple[bytes, bytes]]`` that ASGI messages carry and exist
for middleware hot paths: plain loops, no decoding, no dict round-trips, so repeated
fields (``set-cookie``) and order survive. Application code that wants a friendly,
case-insensitive view should use :class:`starlette.datastructures.Headers` (read) or
:class:`starlette.datastructures.MutableHeaders` (edit) instead.

Header *names* passed to these functions must be lowercase bytes (``b"vary"``, not
``b"Vary"``). Names in the list are compared exactly, because ASGI requires servers and
applications to use lowercase names. Functions that change headers return a new list
and never mutate the one they were given.

List-valued fields are split following RFC 9110 section 5.6.1: on commas, with optional
whitespace (SP, HTAB) stripped and empty elements dropped. A comma inside a
double-quoted string (``no-cache="set-cookie, foo"``, an entity tag) does not split
the element; a quote that is never closed quotes nothing. ``Vary`` holds field names
only, so :func:`add_vary` splits it on every comma.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import repeat
from typing import TypeAlias, overload

__all__ = [
    "RawHeaders",
    "add_vary",
    "append_header",
    "get_all",
    "get_header",
    "has_header",
    "header_tokens",
    "lowercase_names",
    "parse_qlist",
    "parse_qlist_headers",
    "remove_headers",
    "set_header",
]

RawHeaders: TypeAlias = list[tuple[bytes, bytes]]
"""Raw ASGI headers: ``(name, value)`` pairs, names lowercase."""

_OWS = b" \t"
_DQUOTE = 0x22
_BACKSLASH = 0x5C
_COMMA = 0x2C
_SEMICOLON = 0x3B
_VARY = b"vary"
_STAR = b"*"


def _split_quoted(value: bytes, sep: int) -> list[bytes]:
    """Split ``value`` on ``sep`` outside double-quoted strings.

    A quote that is never closed quotes nothing: the rest is split as plain text.
    """
    parts: list[bytes] = []
    start = 0
    opened = 0
    in_quotes = False
    escaped = False
    for i, char in enumerate(value):
        if in_quotes:
            if escaped:
                escaped = False
            elif char == _BACKSLASH:
                escaped = True
            elif char == _DQUOTE:
                in_quotes = False
        elif char == _DQUOTE:
            in_quotes = True
            opened = i
        elif char == sep:
            parts.append(value[start:i])
            start = i + 1
    if in_quotes:
        rest = value[opened:].split(bytes((sep,)))
        parts.append(value[start:opened] + rest[0])
        parts.extend(rest[1:])
    else:
        parts.append(value[start:])
    return parts


def _list_elements(value: bytes, quotes: bool = True) -> list[bytes]:
    """Split one field value into its non-empty, OWS-stripped list elements.

    With ``quotes``, commas inside double-quoted strings do not split.
    """
    # Loops rather than comprehensions: on 3.11 a comprehension costs a function call.
    if b"," not in value:
        value = value.strip(_OWS)
        return [value] if value else []
    parts = _split_quoted(value, _COMMA) if quotes and b'"' in value else value.split(b",")
    elements: list[bytes] = []
    for part in parts:
        part = part.strip(_OWS)
        if part:
            elements.append(part)
    return elements


def _qvalue(value: bytes) -> float | None:
    """Parse an RFC 9110 section 12.4.2 qvalue; ``None`` when it is not one.

    ``qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )``
    """
    size = len(value)
    if size == 0 or size > 5 or (size > 1 and value[1] != 0x2E):  # "."
        return None
    fraction = value[2:]
    first = value[0]
    if first == 0x30:  # "0"
        if not fraction:
            return 0.0
        return float(value) if fraction.isdigit() else None
    if first == 0x31 and not fraction.strip(b"0"):  # "1"
        return 1.0
    return None


@overload
def get_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None: ...


@overload
def get_header(headers: Iterable[tuple[bytes, bytes]], name: bytes, default: bytes) -> bytes: ...


def get_header(
    headers: Iterable[tuple[bytes, bytes]], name: bytes, default: bytes | None = None
) -> bytes | None:
    """Return the value of the first field called ``name``.

    Args:
        headers: Raw ASGI headers.
        name: Lowercase field name.
        default: Returned when there is no such field.

    Returns:
        The first value, or ``default``.
    """
    for field_name, value in headers:
        if field_name == name:
            return value
    return default


def get_all(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Return the values of every field called ``name``.

    Args:
        headers: Raw ASGI headers.
        name: Lowercase field name.

    Returns:
        The values in order of appearance; empty when there is none.
    """
    return [value for field_name, value in headers if field_name == name]


def has_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bool:
    """Tell whether a field called ``name`` is present.

    Args:
        headers: Raw ASGI headers.
        name: Lowercase field name.

    Returns:
        ``True`` if at least one field has that name.
    """
    # An explicit loop measures 2-4x faster than any() over a generator.
    for field_name, _ in headers:  # noqa: SIM110
        if field_name == name:
            return True
    return False


def lowercase_names(headers: Iterable[tuple[bytes, bytes]]) -> RawHeaders | None:
    """The headers with lowercase names, or ``None`` when they already are.

    The ASGI spec asks apps for lowercase names, but some send them as written (Django
    sends ``Content-Type``). A middleware that looked a field up by its lowercase name
    and did not find it can call this on that slow path and look again.
    """
    pairs = list(headers)
    for name, _ in pairs:
        if not name.islower() and name.lower() != name:
            return [(field.lower(), value) for field, value in pairs]
    return None


def header_tokens(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Return the list elements of every field called ``name``.

    Repeated fields are read as one comma-separated list (RFC 9110 section 5.6.1).

    Args:
        headers: Raw ASGI headers.
        name: Lowercase field name.

    Returns:
        The non-empty, whitespace-stripped elements in order, case kept.
    """
    tokens: list[bytes] = []
    for field_name, value in headers:
        if field_name == name:
            tokens.extend(_list_elements(value))
    return tokens


def parse_qlist(value: bytes) -> list[tuple[bytes, float]]:
    """Parse a weighted list such as an ``Accept-Encoding`` value.

    ``b"gzip;q=0.8, br, *;q=0"`` gives ``[(b"gzip", 0.8), (b"br", 1.0), (b"*", 0.0)]``.
    Tokens are lowercased; the weight comes from the first ``q`` parameter (``q`` or
    ``Q``, whitespace around ``;`` and ``=`` allowed) and defaults to 1.0; other
    parameters are ignored. An element whose ``q`` is not a valid RFC 9110 qvalue
    (``abc``, ``1.5``, ``-1``, ``0.0001``, ``nan``, empty) is dropped entirely, as if the
    client had not sent it, rather than read as a refusal. Tokens are not checked
    against the token grammar: callers compare them against the names they know.
    Never raises on any bytes.

    Args:
        value: One field value.

    Returns:
        ``(token, q)`` pairs in order of appearance, ``0.0 <= q <= 1.0``.
    """
    # Lowercasing once covers the tokens and the ``q``/``Q`` parameter name alike.
    elements = _list_elements(value.lower())
    if b";" not in value:
        return list(zip(elements, repeat(1.0)))
    result: list[tuple[bytes, float]] = []
    for element in elements:
        if b";" not in element:
            result.append((element, 1.0))
            continue
        params = element.split(b";") if b'"' not in element else _split_quoted(element, _SEMICOLON)
        token = params[0].rstrip(_OWS)
        if not token:
            continue
        q: float | None = 1.0
        for param in params[1:]:
            param_name, _, param_value = param.partition(b"=")
            if param_name.strip(_OWS) == b"q":
                q = _qvalue(param_value.strip(_OWS))
                break
        if q is not None:
            result.append((token, q))
    return result


def parse_qlist_headers(
    headers: Iterable[tuple[bytes, bytes]], name: bytes
) -> list[tuple[bytes, float]]:
    """Parse every field called ``name`` as one weighted list.

    Args:
        headers: Raw ASGI headers.
        name: Lowercase field name, such as ``b"accept-encoding"``.

    Returns:
        ``(token, q)`` pairs across all fields in order, as :func:`parse_qlist` gives.
    """
    result: list[tuple[bytes, float]] = []
    for field_name, value in headers:
        if field_name == name:
            result.extend(parse_qlist(value))
    return result


def add_vary(headers: Iterable[tuple[bytes, bytes]], *tokens: bytes) -> RawHeaders:
    """Return headers whose ``Vary`` lists every one of ``tokens``.

    Tokens are compared case-insensitively and kept once, in the spelling first seen:
    existing ones first, then new ones in the order given. A token argument may itself
    be a comma-separated list; empty ones are ignored. Repeated ``vary`` fields are
    merged into one at the position of the first; without one, it is appended (unless
    there is nothing to add). A ``*``, existing or added, makes the value ``*``. A
    single field that already lists every token, without duplicates, is kept as is.

    Args:
        headers: Raw ASGI response headers; not modified.
        *tokens: Field names the response varies on, such as ``b"Accept-Encoding"``.

    Returns:
        A new header list.
    """
    result = list(headers)
    first = -1
    repeated = False
    i = 0
    # A counter measures slightly faster than enumerate() here.
    for field_name, _ in result:
        if field_name == _VARY:
            if first >= 0:
                repeated = True
                break
            first = i
        i += 1  # noqa: SIM113

    if len(tokens) == 1 and b"," not in tokens[0]:  # the usual call
        token = tokens[0].strip(_OWS)
        added = [token] if token else []
    else:
        added = _vary_arguments(tokens)

    if first < 0:
        if len(added) == 1:
            result.append((_VARY, added[0]))
        elif added:
            merged, star = _merge_vary([], added)
            result.append((_VARY, _STAR if star else b", ".join(merged)))
        return result

    # Vary lists field names, never quoted strings: every comma splits.
    if repeated:
        values = [value for field_name, value in result if field_name == _VARY]
        # Every field before ``first`` is kept, so ``first`` is still its position.
        result = [field for field in result if field[0] != _VARY]
        result.insert(first, (_VARY, b""))
        existing = [token for value in values for token in _list_elements(value, quotes=False)]
    else:
        existing = _list_elements(result[first][1], quotes=False)
        seen = set(map(bytes.lower, existing))
        if len(seen) == len(existing) and _STAR not in seen:
            # The usual case, one field without duplicates: append what is missing.
            changed = False
            for token in added:
                key = token.lower()
                if key not in seen:
                    if key == _STAR:
                        result[first] = (_VARY, _STAR)
                        return result
                    seen.add(key)
                    existing.append(token)
                    changed = True
            if changed:
                result[first] = (_VARY, b", ".join(existing))
            return result

    merged, star = _merge_vary(existing, added)
    result[first] = (_VARY, _STAR if star else b", ".join(merged))
    return result


def _vary_arguments(tokens: tuple[bytes, ...]) -> list[bytes]:
    """Normalise :func:`add_vary` arguments into list elements."""
    elements: list[bytes] = []
    for token in tokens:
        elements.extend(_list_elements(token, quotes=False))
    return elements


def _merge_vary(existing: list[bytes], added: list[bytes]) -> tuple[list[bytes], bool]:
    """Deduplicate ``existing`` then ``added`` case-insensitively; flag a ``*``."""
    merged: list[bytes] = []
    seen: set[bytes] = set()
    for token in existing + added:
        key = token.lower()
        if key not in seen:
            if key == _STAR:
                return merged, True
            seen.add(key)
            merged.append(token)
    return merged, False


def set_header(headers: Iterable[tuple[bytes, bytes]], name: bytes, value: bytes) -> RawHeaders:
    """Return headers with every field called ``name`` replaced by one.

    Args:
        headers: Raw ASGI headers; not modified.
        name: Lowercase field name.
        value: The new value.

    Returns:
        A new header list with the field at the position of the first one, or appended.
    """
    result: RawHeaders = []
    append = result.append
    placed = False
    for field in headers:
        if field[0] != name:
            append(field)
        elif not placed:
            append((name, value))
            placed = True
    if not placed:
        append((name, value))
    return result


def remove_headers(headers: Iterable[tuple[bytes, bytes]], *names: bytes) -> RawHeaders:
    """Return headers without any field called one of ``names``.

    Args:
        headers: Raw ASGI headers; not modified.
        *names: Lowercase field names to drop.

    Returns:
        A new header list; every other field kept, repeats included, in order.
    """
    if len(names) == 1:
        name = names[0]
        return [field for field in headers if field[0] != name]
    drop = frozenset(names)
    return [field for field in headers if field[0] not in drop]


def append_header(headers: Iterable[tuple[bytes, bytes]], name: bytes, value: bytes) -> RawHeaders:
    """Return headers with one more field at the end.

    Args:
        headers: Raw ASGI headers; not modified.
        name: Lowercase field name.
        value: The value.

    Returns:
        A new header list.
    """
    return [*headers, (name, value)]
