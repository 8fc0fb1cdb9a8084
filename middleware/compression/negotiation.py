"""Pure helpers for CompressionMiddleware: what to compress, with what, and the fields.

Accept-Encoding negotiation, the compressible content types, the response fields that
leave a response untouched, and the fields of an encoded response. The middleware caches
negotiation and content-type answers in bounded LRUs: browsers send a handful of distinct
``Accept-Encoding`` values and apps a handful of ``Content-Type`` values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

from asgikit.headers import add_vary, header_tokens, parse_qlist

__all__ = [
    "CACHEABLE_VALUE_BYTES",
    "COMPRESS",
    "DEFAULT_COMPRESSIBLE_TYPES",
    "SKIP",
    "SPECIAL_FIELDS",
    "STREAMING_TYPES",
    "STREAM_AT_ONCE",
    "UNTOUCHED_STATUSES",
    "VARY_TOKEN",
    "ContentTypes",
    "encoded_fields",
    "negotiate_encoding",
    "vetoed",
]

CACHEABLE_VALUE_BYTES: Final = 256
"""Longer header values are answered without the cache, so it stays small in bytes too."""

DEFAULT_COMPRESSIBLE_TYPES: Final[tuple[str, ...]] = (
    "text/*",
    "+json",
    "+xml",
    "+yaml",
    "application/json",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/wasm",
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "application/jsonlines",
    "application/json-seq",
    "application/yaml",
    "application/x-yaml",
    "application/toml",
    "application/graphql",
    "application/x-www-form-urlencoded",
    "application/rtf",
    "application/x-sh",
    "application/x-tex",
    "application/vnd.ms-fontobject",
    "font/ttf",
    "font/otf",
    "font/collection",
    "image/bmp",
    "image/x-icon",
    "image/vnd.microsoft.icon",
)
"""Media types worth compressing: text, structured text, wasm, uncompressed fonts and icons.

Entries are a media type (``application/json``), a type wildcard (``text/*``) or a
structured-syntax suffix (``+json`` matches ``application/problem+json``). Images, audio,
video, archives and woff/woff2 fonts are already compressed and are left out.
"""

STREAMING_TYPES: Final = frozenset(
    {
        b"text/event-stream",
        b"application/x-ndjson",
        b"application/ndjson",
        b"application/jsonl",
        b"application/x-jsonlines",
        b"application/jsonlines",
        b"application/json-seq",
        b"application/stream+json",
    }
)
"""Media types read event by event: compressed from the first byte, never held back."""

SKIP: Final = 0
COMPRESS: Final = 1
STREAM_AT_ONCE: Final = 2

# gRPC frames its own messages (and compresses them itself); an HTTP content coding breaks it.
_NEVER_PREFIX: Final = b"application/grpc"
_OWS: Final = b" \t"


class _MediaRanges(NamedTuple):
    """Media types, type wildcards and structured-syntax suffixes, to match against."""

    exact: frozenset[bytes]
    types: frozenset[bytes]
    suffixes: tuple[bytes, ...]

    @classmethod
    def parse(cls, entries: Iterable[str], option: str) -> _MediaRanges:
        exact: set[bytes] = set()
        types: set[bytes] = set()
        suffixes: list[bytes] = []
        for entry in entries:
            value = entry.strip().lower()
            if value.startswith("+") and _is_token(value[1:]):
                suffixes.append(value.encode("ascii"))
                continue
            main, slash, sub = value.partition("/")
            if not slash or not _is_token(main) or not (_is_token(sub) or sub == "*"):
                raise ValueError(
                    f"{option} entry {entry!r} is not a media type (text/html), a "
                    "type wildcard (text/*) or a structured-syntax suffix (+json)"
                )
            if main == "*" and sub != "*":
                raise ValueError(f"{option} entry {entry!r}: only */* may start with *")
            if sub == "*":
                types.add(main.encode("ascii"))
            else:
                exact.add(value.encode("ascii"))
        return cls(frozenset(exact), frozenset(types), tuple(suffixes))

    def match(self, media: bytes, main: bytes, sub: bytes) -> bool:
        return (
            media in self.exact
            or main in self.types
            or b"*" in self.types
            or sub.endswith(self.suffixes)
        )


class ContentTypes:
    """The compressible-type allowlist, less the exclusions, compiled from the options.

    Args:
        entries: Media types, ``type/*`` wildcards, ``*/*``, or ``+suffix`` entries.
        exclude: Entries of the same kinds, never compressed though ``entries`` match;
            parameters are ignored (``text/html; charset=utf-8``), as Starlette's
            GZipMiddleware ignores them in its ``exclude_content_types``.

    Raises:
        ValueError: An entry is none of those.
    """

    __slots__ = ("_allowed", "_excluded")

    def __init__(self, entries: Iterable[str], exclude: Iterable[str] = ()) -> None:
        self._allowed = _MediaRanges.parse(entries, "compressible_types")
        bare = [entry.partition(";")[0] for entry in exclude]
        self._excluded = _MediaRanges.parse(bare, "exclude_content_types") if bare else None

    def kind(self, content_type: bytes) -> int:
        """``SKIP``, ``COMPRESS`` or ``STREAM_AT_ONCE`` for a ``Content-Type`` value."""
        media = content_type.partition(b";")[0].strip(_OWS).lower()
        main, slash, sub = media.partition(b"/")
        if not slash or not main or not sub or media.startswith(_NEVER_PREFIX):
            return SKIP
        excluded = self._excluded
        if excluded is not None and excluded.match(media, main, sub):
            return SKIP
        if self._allowed.match(media, main, sub):
            return STREAM_AT_ONCE if media in STREAMING_TYPES else COMPRESS
        return SKIP


_TOKEN_CHARS: Final = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")


def _is_token(value: str) -> bool:
    return bool(value) and set(value) <= _TOKEN_CHARS


def negotiate_encoding(accept: bytes | None, offered: Sequence[bytes]) -> bytes | None:
    """Choose a content coding for an ``Accept-Encoding`` value (RFC 9110 section 12.5.3).

    The client's q-values rank the codings; the order of ``offered`` (the server's
    preference) only breaks ties. A coding listed with ``q=0`` is never chosen; ``*``
    gives its q to every coding not listed by name; ``x-gzip`` means ``gzip``. When a
    coding is listed twice, the lower q counts: a refusal anywhere is honoured.
    ``identity`` wins only when listed with a q higher than the best coding's. No header,
    an empty one, or nothing acceptable gives identity: an uncompressed response is what
    every client can read, so it is sent rather than a 406.

    Args:
        accept: The request's ``Accept-Encoding`` fields joined with commas, or None.
        offered: Lowercase coding names the server can produce, most preferred first.

    Returns:
        One of ``offered``, or None for identity.
    """
    if not accept:
        return None
    weights: dict[bytes, float] = {}
    for token, q in parse_qlist(accept):
        if token == b"x-gzip":
            token = b"gzip"
        if q < weights.get(token, 2.0):
            weights[token] = q
    star = weights.get(b"*", 0.0)
    best = None
    best_q = 0.0
    for coding in offered:
        q = weights.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    if best is not None and weights.get(b"identity", 0.0) > best_q:
        return None
    return best


# --------------------------------------------------------------------------------------
# What the response says: the fields that leave it untouched, and the fields it goes with


UNTOUCHED_STATUSES: Final = frozenset({204, 205, 206, 304})
"""Statuses whose body is empty, or a byte range of another representation."""

VARY_TOKEN: Final = b"Accept-Encoding"

# Fields that may leave a response untouched, depending on their value. A byte range, or a
# digest of the uncompressed bytes, is made wrong by compressing.
_VETOING: Final = frozenset(
    {
        b"content-encoding",
        b"cache-control",
        b"set-cookie",
        b"content-range",
        b"content-md5",
        b"digest",
        b"content-digest",
        b"repr-digest",
    }
)
# Dropped from an encoded response: replaced (length, coding) or no longer true (ranges of
# the identity bytes; nginx drops Accept-Ranges when it compresses too).
_REPLACED: Final = frozenset({b"content-length", b"content-encoding", b"accept-ranges"})
_REWRITTEN: Final = _REPLACED | {b"etag", b"vary"}

SPECIAL_FIELDS: Final = (_VETOING | _REWRITTEN) - {b"content-length"}
"""Fields that need a closer look; a response without any is the usual, fast case."""


def _encoded(value: bytes) -> bool:
    """Does a ``Content-Encoding`` value name a coding other than identity?"""
    return any(token.strip(_OWS).lower() not in (b"", b"identity") for token in value.split(b","))


def _no_transform(value: bytes) -> bool:
    if b"no-transform" not in value.lower():
        return False
    tokens = header_tokens(((b"cache-control", value),), b"cache-control")
    return any(token.lower() == b"no-transform" for token in tokens)


def vetoed(headers: Iterable[tuple[bytes, bytes]], skip_set_cookie: bool) -> bool:
    """Does a field leave the response untouched?

    A coding other than identity (it is compressed already), ``Cache-Control:
    no-transform``, a ``Content-Range``, a digest of the bytes (``Content-MD5``,
    ``Digest``, ``Content-Digest``, ``Repr-Digest``), or, with ``skip_set_cookie``, a
    ``Set-Cookie``.
    """
    for name, value in headers:
        if name not in _VETOING:
            continue
        if name == b"content-encoding":
            if _encoded(value):
                return True
        elif name == b"cache-control":
            if _no_transform(value):
                return True
        elif name != b"set-cookie" or skip_set_cookie:
            return True
    return False


_VARY_FIELD: Final = (b"vary", VARY_TOKEN)


def encoded_fields(
    headers: Iterable[tuple[bytes, bytes]], coding: tuple[bytes, bytes]
) -> list[tuple[bytes, bytes]]:
    """The fields of the encoded response, less its new ``Content-Length``.

    ``Content-Length``, ``Content-Encoding`` and ``Accept-Ranges`` go; a strong ETag
    becomes weak (the compressed bytes are only weakly equal to the identity ones);
    ``Accept-Encoding`` joins ``Vary``; ``coding`` comes last.

    Args:
        headers: The response's fields; not modified.
        coding: The ``(b"content-encoding", token)`` field.
    """
    fields: list[tuple[bytes, bytes]] = []
    varies = False
    for field in headers:
        name = field[0]
        if name in _REWRITTEN:
            if name == b"etag":
                if field[1][:1] == b'"':
                    field = (name, b"W/" + field[1])
            elif name == b"vary":
                varies = True
            else:
                continue
        fields.append(field)
    if varies:
        fields = add_vary(fields, VARY_TOKEN)
    else:
        # What add_vary does without a Vary field, without its second pass over the
        # fields (compression A/B, 2 KiB gzip through the whole start-and-body path,
        # 2026-12-07: 10.52 µs against 11.23 through add_vary; spread 0.07).
        fields.append(_VARY_FIELD)
    fields.append(coding)
    return fields
