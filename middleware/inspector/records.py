"""DevInspectorMiddleware's records and the JSON the page reads.

A ``Record`` keeps what the middleware measured and a small copy of the scope, raw: the
work of decoding, redacting and cutting is done here, when the page asks, not while the
request runs. Redaction is the access log's own (``LineBuilder``, ``QueryRedactor``, the
``ALWAYS_REDACTED_HEADERS``), so the page never shows what a log line would hide.
"""

from __future__ import annotations

import os
import re
import shlex
import sysconfig
from collections.abc import Iterable, Sequence
from typing import Any, Final
from urllib.parse import quote

import msgspec
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

import asgikit
from asgikit.fields import LineBuilder
from asgikit.redact import REDACTED, QueryRedactor, truncate
from asgikit.scopes import REQUEST_ID_KEY

from .logs import LogBuffer

__all__ = ["MAX_HEADERS", "MAX_TRACEBACK", "Record", "Renderer", "encode"]

MAX_HEADERS: Final = 100
"""Headers shown per request and response; more are counted, not shown."""
MAX_TRACEBACK: Final = 20_000
"""Characters of a traceback kept (its end: where it failed)."""

encode = msgspec.json.Encoder().encode
"""Encode the JSON the page reads (bytes)."""

_REFERER: Final = b"referer"
# Left out of copy-as-curl: curl sets them itself (from the URL, from the body).
_NOT_FOR_CURL: Final = frozenset({"host", "content-length", "connection", "..."})
_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~"
_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
_FRAME: Final = re.compile(r'^  File "([^"]*)", line \d+, in ')
# Frames from here are the libraries' (asgikit's own too), not the app's.
_LIBRARY_DIRS: Final = tuple(
    {
        os.path.join(path, "")
        for path in (
            sysconfig.get_path("stdlib"),
            sysconfig.get_path("purelib"),
            sysconfig.get_path("platlib"),
            *asgikit.__path__,
            os.path.dirname(os.path.dirname(__file__)),  # asgikit.middleware
        )
    }
)
_LIBRARY_PARTS: Final = ("/site-packages/", "/dist-packages/", "<frozen ")


class Record:
    """One finished http request, as the middleware saw it."""

    __slots__ = (
        "close_code",
        "disconnected",
        "duration",
        "error",
        "kind",
        "logs",
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
        logs: LogBuffer | None = None,
        kind: str = "http",
        close_code: int | None = None,
    ) -> None:
        self.kind = kind
        """``"http"`` or ``"websocket"`` (then ``received``/``sent`` count messages)."""
        self.logs = logs
        """The app's log lines while it ran (None: not captured)."""
        self.close_code = close_code
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
        logs = record.logs
        lines = [] if logs is None else logs.lines
        return {
            "id": number,
            "kind": record.kind,
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
            "received": record.received,
            "logs": len(lines) + (0 if logs is None else logs.dropped),
            "log_level": _worst(lines),
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
        error = record.error
        logs = record.logs
        return {
            **self.summary(number, record),
            "fields": self._fields(record, context),
            "request_headers": self.headers(record.scope["headers"]),
            "response_headers": self.headers(record.response_headers or ()),
            "exception": None
            if error is None
            else {
                "type": error[0],
                "message": error[1],
                "traceback": error[2],
                **_frames(error[2]),
            },
            "tracing": tracing,
            "spans": self.spans(record, spans),
            "log_lines": [] if logs is None else logs.lines,
            "logs_dropped": 0 if logs is None else logs.dropped,
            "curl": self.curl(record.scope) if record.kind == "http" else None,
        }

    def _fields(self, record: Record, context: SpanContext | None) -> dict[str, Any]:
        """The access log's fields for the request."""
        error_type = None if record.error is None else record.error[0]
        if record.kind == "websocket":
            return self._lines.websocket(
                record.scope,
                record.status,
                record.duration,
                record.close_code,
                record.received,
                record.sent,
                context,
                error_type,
                record.disconnected,
            )
        return self._lines.http(
            record.scope,
            record.status,
            record.duration,
            record.ttfb,
            record.received,
            record.sent,
            None,
            context,
            error_type,
            record.disconnected,
        )

    def curl(self, scope: dict[str, Any]) -> str:
        """The request as a curl command, its secrets redacted as in the log line (the
        body is not kept: a request that had one needs ``--data`` added)."""
        host = ""
        options = []
        for name, value in self.headers(scope["headers"]):
            if name == "host":
                host = value
            elif name not in _NOT_FOR_CURL:
                options += ["-H", f"{name}: {value}"]
        if not host:
            host = self._host(scope.get("server"), options)
        url = f"{scope['scheme']}://{host}{quote(scope['path'], safe=_PATH_SAFE)}"
        query = scope["query_string"].decode("latin-1")
        if query:
            url += "?" + self._redactor.redact(query)
        method = scope["method"]
        head = ["curl"] if method == "GET" else ["curl", "-X", method]
        return " ".join(shlex.quote(part) for part in [*head, *options, url])

    @staticmethod
    def _host(server: tuple[str, int | None] | None, options: list[str]) -> str:
        """The URL's host for a request without a ``Host`` header, from the server."""
        if server is None:
            return "localhost"
        if server[1] is None:  # a Unix socket
            options += ["--unix-socket", server[0]]
            return "localhost"
        name = f"[{server[0]}]" if ":" in server[0] else server[0]
        return f"{name}:{server[1]}"

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


def _is_library(path: str) -> bool:
    return path.startswith(_LIBRARY_DIRS) or any(part in path for part in _LIBRARY_PARTS)


def _frames(text: str) -> dict[str, Any]:
    """Which lines of a traceback are library frames, and where the app's innermost
    frame starts (the line the page opens on; the last frame if none is the app's)."""
    library: list[int] = []
    focus = last = -1
    lines = text.split("\n")
    for index, line in enumerate(lines):
        found = _FRAME.match(line)
        if found is None:
            continue
        last = index
        if _is_library(found.group(1)):
            library.append(index)
            if index + 1 < len(lines) and lines[index + 1].startswith("    "):
                library.append(index + 1)
        else:
            focus = index
    return {"focus_line": focus if focus >= 0 else last, "library_lines": library}


def _worst(lines: list[dict[str, Any]]) -> str | None:
    """The most severe level among *lines* (None: no lines)."""
    worst = -1
    for line in lines:
        level = line["level"]
        rank = _LEVELS.index(level) if level in _LEVELS else 1
        worst = max(worst, rank)
    return None if worst < 0 else _LEVELS[worst]


def _start_time(span: ReadableSpan) -> int:
    return span.start_time or 0


def _count(headers: Iterable[Any]) -> int:
    return sum(1 for _ in headers)
