"""One request's facts as log fields: what the access log writes and the inspector shows.

Nothing here measures or decides: a middleware times the request (``asgikit.observe``),
picks the level and samples; ``LineBuilder`` turns what it measured and the scope into
the line's fields, named by ``asgikit.logging.Field``, redacted by ``asgikit.redact``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.trace import SpanContext

from asgikit.logging import Field
from asgikit.observe import route_of
from asgikit.redact import Capture, QueryRedactor, capture_table, captured, truncate
from asgikit.scopes import PEER_KEY, REQUEST_ID_KEY
from asgikit.types import Scope

__all__ = ["LineBuilder"]

# Module globals: a dict display with these keys is the line's hot path.
_METHOD = Field.METHOD
_PATH = Field.PATH
_QUERY = Field.QUERY
_ROUTE = Field.ROUTE
_STATUS = Field.STATUS
_HTTP_VERSION = Field.HTTP_VERSION
_SCHEME = Field.SCHEME
_CLIENT_ADDRESS = Field.CLIENT_ADDRESS
_CLIENT_PORT = Field.CLIENT_PORT
_PEER_ADDRESS = Field.PEER_ADDRESS
_USER_AGENT = Field.USER_AGENT
_REFERER = Field.REFERER
_REQUEST_BODY_SIZE = Field.REQUEST_BODY_SIZE
_RESPONSE_BODY_SIZE = Field.RESPONSE_BODY_SIZE
_DURATION_MS = Field.DURATION_MS
_TTFB_MS = Field.TTFB_MS
_REQUEST_ID = Field.REQUEST_ID
_TRACE_ID = Field.TRACE_ID
_SPAN_ID = Field.SPAN_ID
_ERROR_TYPE = Field.ERROR_TYPE
_DISCONNECTED = Field.DISCONNECTED


class LineBuilder:
    """Build an access line's fields from the scope and what the middleware measured.

    Client-controlled values are cut to ``limit`` characters (with a marker); the query
    and the referer's query are redacted; captured headers on the redaction list are
    logged as ``[REDACTED]``.

    Args:
        limit: The longest client-controlled value kept whole.
        query_params: Query parameter name patterns to redact (``QueryRedactor``).
        redacted_headers: Lowercase header names whose captured values are hidden.
        request_headers: Lowercase request header names to capture.
        response_headers: Lowercase response header names to capture.
    """

    __slots__ = ("_limit", "_redactor", "_request_capture", "response_capture")

    def __init__(
        self,
        *,
        limit: int,
        query_params: Iterable[str],
        redacted_headers: frozenset[bytes],
        request_headers: list[bytes],
        response_headers: list[bytes],
    ) -> None:
        self._limit = limit
        self._redactor = QueryRedactor(query_params)
        self._request_capture = capture_table(
            request_headers, Field.REQUEST_HEADER_PREFIX, redacted_headers
        )
        self.response_capture = capture_table(
            response_headers, Field.RESPONSE_HEADER_PREFIX, redacted_headers
        )
        """Response headers to capture, or None: the middleware keeps them only then."""

    def http(
        self,
        scope: Scope,
        status: int | None,
        duration: float,
        first_byte: float | None,
        received: int,
        sent: int,
        response_headers: Any,
        span_context: SpanContext | None,
        error_type: str | None,
        disconnected: bool,
    ) -> dict[str, Any]:
        """The fields of an http request's line."""
        limit = self._limit
        method = scope["method"]
        path = scope["path"]
        fields: dict[str, Any] = {
            _METHOD: method if len(method) <= limit else truncate(method, limit),
            _PATH: path if len(path) <= limit else truncate(path, limit),
        }
        self._add_query_and_route(scope, fields)
        if status is not None:
            fields[_STATUS] = status
        # Milliseconds to the microsecond (round(x, 3) costs several times more).
        fields[_DURATION_MS] = round(duration * 1_000_000) / 1000
        if first_byte is not None:
            fields[_TTFB_MS] = round(first_byte * 1_000_000) / 1000
        fields[_REQUEST_BODY_SIZE] = received
        fields[_RESPONSE_BODY_SIZE] = sent
        fields[_HTTP_VERSION] = scope.get("http_version", "1.1")
        fields[_SCHEME] = scope.get("scheme", "http")
        self._common(scope, fields, span_context, error_type, disconnected)
        if response_headers is not None:
            self._capture(response_headers, self.response_capture, fields)
        return fields

    def websocket(
        self,
        scope: Scope,
        status: int | None,
        duration: float,
        close_code: int | None,
        received: int,
        sent: int,
        span_context: SpanContext | None,
        error_type: str | None,
        disconnected: bool,
    ) -> dict[str, Any]:
        """The fields of a websocket connection's line."""
        limit = self._limit
        path = scope["path"]
        fields: dict[str, Any] = {_PATH: path if len(path) <= limit else truncate(path, limit)}
        self._add_query_and_route(scope, fields)
        if status is not None:
            fields[_STATUS] = status
        fields[_DURATION_MS] = round(duration * 1_000_000) / 1000
        if close_code is not None:
            fields[Field.WS_CLOSE_CODE] = close_code
        fields[Field.WS_MESSAGES_RECEIVED] = received
        fields[Field.WS_MESSAGES_SENT] = sent
        fields[_SCHEME] = scope.get("scheme", "ws")
        self._common(scope, fields, span_context, error_type, disconnected)
        return fields

    def _add_query_and_route(self, scope: Scope, fields: dict[str, Any]) -> None:
        """The redacted query and the route template, for http and websocket lines."""
        query = scope.get("query_string")
        if query:
            # Cut before redacting: a pair cut short is still redacted, and work is bounded.
            cut = len(query) - self._limit
            if cut > 0:
                text = self._redactor.redact(query[: self._limit].decode("latin-1"))
                fields[_QUERY] = f"{text}...[+{cut} chars]"
            else:
                fields[_QUERY] = self._redactor.redact(query.decode("latin-1"))
        route = route_of(scope)
        if route is not None:
            fields[_ROUTE] = route

    def _common(
        self,
        scope: Scope,
        fields: dict[str, Any],
        span_context: SpanContext | None,
        error_type: str | None,
        disconnected: bool,
    ) -> None:
        """Client, peer, user agent, referer, captured request headers; the request id,
        trace ids, ``error.type`` and ``disconnected``."""
        client = scope.get("client")
        if client:
            fields[_CLIENT_ADDRESS] = client[0]
            if client[1]:  # 0: unknown (a proxy named the client without a port)
                fields[_CLIENT_PORT] = client[1]
        peer = scope.get(PEER_KEY)
        if peer:
            fields[_PEER_ADDRESS] = peer[0]
        headers = scope.get("headers", ())
        limit = self._limit
        user_agent = referer = None
        for name, value in headers:  # get_header twice, in one pass (the first of each)
            if name == b"user-agent":
                if user_agent is None:
                    user_agent = value
            elif name == b"referer" and referer is None:
                referer = value
        if user_agent is not None:
            text = user_agent.decode("latin-1")
            fields[_USER_AGENT] = text if len(text) <= limit else truncate(text, limit)
        if referer is not None:
            text = self._redactor.redact_url(referer.decode("latin-1"))
            fields[_REFERER] = text if len(text) <= limit else truncate(text, limit)
        if self._request_capture is not None:
            self._capture(headers, self._request_capture, fields)
        request_id = scope.get(REQUEST_ID_KEY)
        if request_id is not None:
            fields[_REQUEST_ID] = request_id
        if span_context is not None:
            fields[_TRACE_ID] = f"{span_context.trace_id:032x}"
            fields[_SPAN_ID] = f"{span_context.span_id:016x}"
        if error_type is not None:
            fields[_ERROR_TYPE] = error_type
        if disconnected:
            fields[_DISCONNECTED] = True

    def _capture(self, headers: Any, wanted: Capture | None, fields: dict[str, Any]) -> None:
        assert wanted is not None
        for key, values in captured(headers, wanted).items():
            fields[key] = truncate(", ".join(values), self._limit)
