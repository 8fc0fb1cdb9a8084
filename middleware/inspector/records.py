"""DevInspectorMiddleware's records and the JSON the page reads.

A ``Record`` keeps what the middleware measured and a small copy of the scope, raw: the
work of decoding, redacting and cutting is done here, when the page asks, not while the
request runs. Redaction is the access log's own (``LineBuilder``, ``QueryRedactor``, the
``ALWAYS_REDACTED_HEADERS``), so the page never shows what a log line would hide.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

from asgikit.fields import LineBuilder
from asgikit.redact import REDACTED, QueryRedactor, truncate
from asgikit.scopes import REQUEST_ID_KEY

__all__ = ["MAX_HEADERS", "MAX_TRACEBACK", "Record", "Renderer", "encode"]

MAX_HEADERS: Final = 100
"""Headers shown per request and response; more are counted, not shown."""
MAX_TRACEBACK: Final = 20_000
"""Characters of a traceback kept (its end: where it failed)."""

encode = msgspec.json.Encoder().encode
"""Encode the JSON the page reads (bytes)."""

_REFERER: Final = b"referer"


class Record:
    """One finished http request, as the middleware saw it."""

    __slots__ = (
        "disconnected",
        "duration",
        "error",
        "received",
        "response_headers",
        "scope",
        "sent",
        "span_id",
        "started_ns",
        "status",
        "trace_id",
        "ttfb",
    )

    def __init__(
        self,
        *,
        scope: dict[str, Any],
        started_ns: int,
        status: int | None,
        duration: float,
        ttfb: float | None,
        received: int,
        sent: int,
        response_headers: Sequence[tuple[bytes, bytes]] | None,
        trace_id: int,
        span_id: int,
        error: tuple[str, str, str] | None,
        disconnected: bool,
    ) -> None:
        self.scope = scope
        """The request's facts: a small dict shaped like a scope (see the middleware)."""
        self.started_ns = started_ns
        self.status = status
        self.duration = duration
        self.ttfb = ttfb
        self.received = received
        self.sent = sent
        self.response_headers = response_headers
        self.trace_id = trace_id
        """The trace of the span current when the response started, or 0."""
        self.span_id = span_id
        self.error = error
        """(type, message, traceback) when the app raised."""
        self.disconnected = disconnected


def _ms(seconds: float) -> float:
    return round(seconds * 1_000_000) / 1000


def _value(value: Any, limit: int) -> Any:
    """An attribute value, JSON-ready, long strings cut."""
    if isinstance(value, str):
        return truncate(value, limit)
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes):
        return truncate(value.decode("utf-8", "replace"), limit)
    if isinstance(value, Sequence):
        return [_value(item, limit) for item in value]
    return truncate(str(value), limit)


def _attributes(attributes: Any, limit: int) -> dict[str, Any]:
    if not attributes:
        return {}
    return {str(key): _value(value, limit) for key, value in attributes.items()}


class Renderer:
    """Turn records and spans into the page's JSON objects.

    Args:
        limit: The longest client-controlled value (path, header, attribute) kept whole.
        redacted_headers: Lowercase header names shown as ``[REDACTED]``.
        query_params: Query parameter name patterns to redact (``QueryRedactor``).
    """

    __slots__ = ("_limit", "_lines", "_redacted", "_redactor")

    def __init__(
        self, *, limit: int, redacted_headers: frozenset[bytes], query_params: Iterable[str]
    ) -> None:
        patterns = list(query_params)
        self._limit = limit
        self._redacted = redacted_headers
        self._redactor = QueryRedactor(patterns)
        self._lines = LineBuilder(
            limit=limit,
            query_params=patterns,
            redacted_headers=redacted_headers,
            request_headers=[],
            response_headers=[],
        )

    def summary(self, number: int, record: Record) -> dict[str, Any]:
        """The request's row in the list."""
        scope = record.scope
        limit = self._limit
        error = record.error
        return {
            "id": number,
            "time": record.started_ns // 1000 / 1000,  # ms since the epoch
            "method": truncate(scope["method"], limit),
            "path": truncate(scope["path"], limit),
            "route": scope.get("path_template"),
            "status": record.status,
            "duration_ms": _ms(record.duration),
            "size": record.sent,
            "request_id": scope.get(REQUEST_ID_KEY),
            "error": None if error is None else error[0],
            "trace_id": f"{record.trace_id:032x}" if record.trace_id else None,
        }

    def detail(
        self, number: int, record: Record, spans: Iterable[ReadableSpan], tracing: bool
    ) -> dict[str, Any]:
        """Everything about one request: the summary, its access-log fields, its headers,
        its exception and its spans."""
        context = (
            SpanContext(record.trace_id, record.span_id, is_remote=False)
            if record.trace_id
            else None
        )
        fields = self._lines.http(
            record.scope,
            record.status,
            record.duration,
            record.ttfb,
            record.received,
            record.sent,
            None,
            context,
            None if record.error is None else record.error[0],
            record.disconnected,
        )
        error = record.error
        return {
            **self.summary(number, record),
            "fields": fields,
            "request_headers": self.headers(record.scope["headers"]),
            "response_headers": self.headers(record.response_headers or ()),
            "exception": None
            if error is None
            else {"type": error[0], "message": error[1], "traceback": error[2]},
            "tracing": tracing,
            "spans": self.spans(record, spans),
        }

    def headers(self, headers: Iterable[tuple[bytes, bytes]]) -> list[list[str]]:
        """Header pairs as text, redacted like the access log, at most ``MAX_HEADERS``."""
        shown: list[list[str]] = []
        limit = self._limit
        for count, (name, value) in enumerate(headers):
            if count >= MAX_HEADERS:
                shown.append(["...", f"[+{_count(headers) - MAX_HEADERS} headers]"])
                break
            if name in self._redacted:
                text = REDACTED
            elif name == _REFERER:
                text = self._redactor.redact_url(value.decode("latin-1"))
            else:
                text = value.decode("latin-1")
            shown.append([truncate(name.decode("latin-1"), limit), truncate(text, limit)])
        return shown

    def spans(self, record: Record, spans: Iterable[ReadableSpan]) -> list[dict[str, Any]]:
        """The spans of the request's trace that overlap it, as waterfall rows.

        Offsets are milliseconds from the request's start (negative for a span opened
        outside the inspector, such as an outer tracing middleware's server span).
        """
        start = record.started_ns
        end = start + int(record.duration * 1e9)
        rows = []
        limit = self._limit
        for span in sorted(spans, key=_start_time):
            began, ended = span.start_time or 0, span.end_time or 0
            if began > end or ended < start:
                continue  # another request of the same trace (a propagated trace id)
            context = span.context
            parent = span.parent
            rows.append(
                {
                    "name": truncate(span.name, limit),
                    "span_id": f"{context.span_id:016x}" if context else None,
                    "parent_id": f"{parent.span_id:016x}" if parent else None,
                    "kind": span.kind.name,
                    "start_ms": (began - start) / 1e6,
                    "duration_ms": (ended - began) / 1e6,
                    "status": span.status.status_code.name,
                    "status_description": span.status.description,
                    "scope": span.instrumentation_scope.name
                    if span.instrumentation_scope
                    else None,
                    "attributes": _attributes(span.attributes, limit),
                    "events": [
                        {
                            "name": event.name,
                            "offset_ms": (event.timestamp - start) / 1e6,
                            "attributes": _attributes(event.attributes, MAX_TRACEBACK),
                        }
                        for event in span.events
                    ],
                }
            )
        return rows


def _start_time(span: ReadableSpan) -> int:
    return span.start_time or 0


def _count(headers: Iterable[Any]) -> int:
    return sum(1 for _ in headers)
