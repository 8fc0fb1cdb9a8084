"""The OpenTelemetry instrumentation variables TracingMiddleware honours, read once.

They mean what they mean to OpenTelemetry's contrib instrumentation
(opentelemetry-util-http, as its ASGI middleware reads them):

- ``OTEL_PYTHON_ASGI_EXCLUDED_URLS``, else ``OTEL_PYTHON_EXCLUDED_URLS``: regular
  expressions, comma-separated; a request whose full URL (``scheme://host/path``, no
  query) one of them is found in is not traced.
- ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST`` and ``..._SERVER_RESPONSE``:
  header names, comma-separated, each a regular expression matching a whole name in
  any case; the headers captured when the option names none.
- ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS``: regular expressions
  found anywhere in a header name, in any case; those headers are captured as
  ``[REDACTED]``.

Empty items (``a,,b``, a trailing comma) are left out: contrib would join them into a
pattern that matches everything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from asgikit.redact import ALWAYS_REDACTED_HEADERS, Capture, capture_table, captured, header_names
from asgikit.types import Scope

__all__ = [
    "REQUEST_HEADERS",
    "RESPONSE_HEADERS",
    "SANITIZE_FIELDS",
    "HeaderCapture",
    "excluded_urls",
    "header_capture",
    "sanitized_fields",
    "url_of",
]

EXCLUDED_URLS: Final = ("OTEL_PYTHON_ASGI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS")
REQUEST_HEADERS: Final = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"
RESPONSE_HEADERS: Final = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE"
SANITIZE_FIELDS: Final = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"

_ALWAYS_REDACTED: Final = frozenset(name.encode("ascii") for name in ALWAYS_REDACTED_HEADERS)
_CACHE_SIZE: Final = 1024


def _patterns(variable: str, environ: Mapping[str, str], flags: int = 0) -> re.Pattern[str] | None:
    """The variable's comma-separated regular expressions as one, or None when none."""
    items = [item.strip() for item in environ.get(variable, "").split(",")]
    alternatives = []
    for item in items:
        if not item:
            continue
        try:
            re.compile(item)
        except re.error as exc:
            raise ValueError(f"{variable}: {item!r} is not a regular expression: {exc}") from None
        alternatives.append(f"(?:{item})")
    return re.compile("|".join(alternatives), flags) if alternatives else None


def excluded_urls(environ: Mapping[str, str] | None = None) -> Callable[[str], Any] | None:
    """A search for the excluded URLs' patterns, or None when no variable names any.

    ``OTEL_PYTHON_ASGI_EXCLUDED_URLS`` wins over ``OTEL_PYTHON_EXCLUDED_URLS`` whenever it
    is set, even empty, as in ``opentelemetry.util.http.get_excluded_urls("ASGI")``.
    """
    env = os.environ if environ is None else environ
    variable = next((name for name in EXCLUDED_URLS if name in env), None)
    pattern = None if variable is None else _patterns(variable, env)
    return None if pattern is None else pattern.search


def url_of(scope: Scope) -> str:
    """The URL excluded-URL patterns are searched in, built as contrib's ASGI middleware
    builds it: the scheme, the ``Host`` header (else the server's address, with its
    port unless 80) and the path, without the query."""
    host = None
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = value.decode("latin-1")
            break
    if host is None:
        server = scope.get("server") or ("0.0.0.0", 80)
        port = server[1]
        host = server[0] if port is None or port == 80 else f"{server[0]}:{port}"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('path', '')}"


def sanitized_fields(environ: Mapping[str, str] | None = None) -> re.Pattern[str] | None:
    """The header names ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS``
    redacts (searched, any case), or None."""
    return _patterns(SANITIZE_FIELDS, os.environ if environ is None else environ, re.IGNORECASE)


class HeaderCapture:
    """The headers one side of a span records: by name (an option) or by pattern (a
    variable), each as ``<prefix><name>``, a list of its values.

    The values of ``authorization``, ``cookie``, ``set-cookie`` and
    ``proxy-authorization``, and of the names *sanitize* is found in, are
    ``[REDACTED]``.

    Args:
        prefix: ``http.request.header.`` or ``http.response.header.``.
        names: Lowercase header names (checked), captured when *pattern* is None.
        pattern: Header names (full match), checked against each name the first time
            it comes, and remembered.
        sanitize: Header names whose values are redacted (searched).
    """

    __slots__ = ("_learned", "_pattern", "_prefix", "_sanitize", "_seen", "_table")

    def __init__(
        self,
        prefix: str,
        *,
        names: Iterable[bytes] = (),
        pattern: re.Pattern[str] | None = None,
        sanitize: re.Pattern[str] | None = None,
    ) -> None:
        self._prefix = prefix
        self._pattern = pattern
        self._sanitize = sanitize
        names = list(names)
        self._table: Capture = (
            capture_table(names, prefix, frozenset(name for name in names if self._redacted(name)))
            or {}
        )
        # Names seen so far (captured or not) and the table of those captured: the same
        # few names come on every request. Bounded, cleared when full.
        self._seen: set[bytes] = set()
        self._learned: Capture = {}

    def _redacted(self, name: bytes) -> bool:
        return name in _ALWAYS_REDACTED or (
            self._sanitize is not None and self._sanitize.search(name.decode("latin-1")) is not None
        )

    def _learn(self, headers: Any) -> Capture:
        """The table for the names the pattern matches, with every name in *headers*."""
        seen = self._seen
        learned = self._learned
        if len(seen) >= _CACHE_SIZE:
            seen.clear()
            learned.clear()
        assert self._pattern is not None
        for name, _ in headers:
            if name not in seen:
                seen.add(name)
                text = name.decode("latin-1")
                if self._pattern.fullmatch(text):
                    learned[name] = (self._prefix + text, self._redacted(name))
        return learned

    def add(self, headers: Any, attributes: dict[str, Any]) -> None:
        """Add the captured headers' values to *attributes*."""
        table = self._table if self._pattern is None else self._learn(headers)
        attributes.update(captured(headers, table))


def header_capture(
    option: str,
    value: str | Iterable[str] | None,
    variable: str,
    prefix: str,
    sanitize: re.Pattern[str] | None,
    environ: Mapping[str, str] | None = None,
) -> HeaderCapture | None:
    """The capture for one side: the option's names, else the variable's patterns (when
    the option is None); None when neither names any header."""
    if value is not None:
        names = header_names(value, option)
        return HeaderCapture(prefix, names=names, sanitize=sanitize) if names else None
    pattern = _patterns(variable, os.environ if environ is None else environ, re.IGNORECASE)
    return None if pattern is None else HeaderCapture(prefix, pattern=pattern, sanitize=sanitize)
