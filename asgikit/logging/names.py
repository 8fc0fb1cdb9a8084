"""The names asgikit's logs use: event names, field names, level names.

Plain constants with no structlog in them; ``asgikit.logging`` re-exports them.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ACCESS_FIELDS", "HTTP_EVENT", "LEVELS", "WEBSOCKET_EVENT", "Field"]

HTTP_EVENT: Final = "http.request"
"""The event name of the access line for an http request."""

WEBSOCKET_EVENT: Final = "websocket.connection"
"""The event name of the access line for a websocket connection."""

LEVELS: Final = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
"""Level names and their numbers, as structlog and ``logging`` use them."""


class Field:
    """The access line's field names: stable, documented in ``docs/access_log.md``.

    OpenTelemetry semantic-convention names where one exists, so a log line and the
    span of the same request use the same keys.
    """

    METHOD: Final = "http.request.method"
    PATH: Final = "url.path"
    QUERY: Final = "url.query"
    ROUTE: Final = "http.route"
    STATUS: Final = "http.response.status_code"
    HTTP_VERSION: Final = "network.protocol.version"
    SCHEME: Final = "url.scheme"
    CLIENT_ADDRESS: Final = "client.address"
    CLIENT_PORT: Final = "client.port"
    PEER_ADDRESS: Final = "network.peer.address"
    USER_AGENT: Final = "user_agent.original"
    REFERER: Final = "http.request.header.referer"
    REQUEST_BODY_SIZE: Final = "http.request.body.size"
    RESPONSE_BODY_SIZE: Final = "http.response.body.size"
    DURATION_MS: Final = "duration_ms"
    TTFB_MS: Final = "ttfb_ms"
    REQUEST_ID: Final = "request_id"
    TRACE_ID: Final = "trace_id"
    SPAN_ID: Final = "span_id"
    ERROR_TYPE: Final = "error.type"
    DISCONNECTED: Final = "disconnected"
    SLOW: Final = "slow"
    SAMPLE_RATE: Final = "sample_rate"
    WS_CLOSE_CODE: Final = "websocket.close_code"
    WS_MESSAGES_RECEIVED: Final = "websocket.messages_received"
    WS_MESSAGES_SENT: Final = "websocket.messages_sent"
    REQUEST_HEADER_PREFIX: Final = "http.request.header."
    RESPONSE_HEADER_PREFIX: Final = "http.response.header."


ACCESS_FIELDS: Final = frozenset(
    value for name, value in vars(Field).items() if name.isupper() and not name.endswith("PREFIX")
)
"""Every access-log field name (the header prefixes aside)."""
