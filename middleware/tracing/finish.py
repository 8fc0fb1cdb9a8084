"""TracingMiddleware's end of an http request: the outcome, the metrics, the span's end."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span

from asgikit.types import Scope

from .attributes import (
    DISCONNECTED,
    ERROR_TYPE,
    HTTP_ROUTE,
    HTTP_STATUS,
    METHOD,
    OTHER_METHOD,
    URL_SCHEME,
    capture,
    error_status,
    route_of,
)

if TYPE_CHECKING:
    from . import TracingMiddleware

__all__ = ["finish_http"]

_time_ns = time.time_ns


def finish_http(
    middleware: TracingMiddleware,
    span: Span,
    scope: Scope,
    start: int,
    end: int | None,
    status: int | None,
    error: BaseException | None,
    disconnected: bool,
    method: str,
    scheme: str,
    received: int,
    sent: int,
    response_headers: Any,
) -> None:
    """End an http request's span and record its metrics, once the app returned.

    The end time is when the response completed (*end*), or now if it never did.
    """
    complete = end is not None
    if end is None:
        end = _time_ns()
    route = route_of(scope)
    error_type = None
    if error is not None:
        error_type = type(error).__qualname__
    elif status is not None and status >= 500:
        error_type = str(status)
    elif not complete and not disconnected:
        error_type = "incomplete_response"  # the server aborts the connection
    attributes: dict[str, Any] = {METHOD: method, URL_SCHEME: scheme}
    if status is not None:
        attributes[HTTP_STATUS] = status
    if route is not None:
        attributes[HTTP_ROUTE] = route
    if error_type is not None:
        attributes[ERROR_TYPE] = error_type
    middleware._duration.record((end - start) / 1e9, attributes)
    if middleware._request_size is not None:
        middleware._request_size.record(received, attributes)
    if middleware._response_size is not None:
        middleware._response_size.record(sent, attributes)
    if span.is_recording():
        if route is not None:
            span.update_name(f"{'HTTP' if method == OTHER_METHOD else method} {route}")
        # One call: the SDK takes its lock and checks values once per call.
        del attributes[METHOD], attributes[URL_SCHEME]  # set when the span started
        if disconnected and not complete:
            attributes[DISCONNECTED] = True
        if response_headers is not None:
            wanted = middleware._attributes.response_capture
            assert wanted is not None
            capture(response_headers, wanted, attributes)
        span.set_attributes(attributes)
        error_status(span, error, error_type)
    span.end(end_time=end)
