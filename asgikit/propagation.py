"""Carry the request id and the trace to the services this one calls.

An outgoing request made while a request is handled gets the current request id (under
the header ``RequestIDMiddleware`` uses, ``x-request-id`` by default) and the current
trace context as the global OpenTelemetry propagator writes it (W3C ``traceparent``
and ``tracestate``, and ``baggage``), so the next service's logs and spans join the
same request and trace. Headers the caller set already are left as they are (an
instrumented client's own span context wins).

- httpx: ``httpx.AsyncClient(event_hooks={"request": [httpx_async_request_hook]})``
  (``httpx_request_hook`` for ``httpx.Client``);
- aiohttp: ``aiohttp.ClientSession(trace_configs=[aiohttp_trace_config()])``;
- anything else: ``outgoing_headers()``.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from opentelemetry.propagate import inject

from asgikit.request_id import request_id_var

__all__ = [
    "aiohttp_trace_config",
    "httpx_async_request_hook",
    "httpx_request_hook",
    "outgoing_headers",
]


def outgoing_headers() -> dict[str, str]:
    """The headers that carry the current request id and trace context, if any."""
    headers: dict[str, str] = {}
    inject(headers)
    value = request_id_var.get()
    if value is not None:
        request_id, header = value
        headers[header] = request_id
    return headers


def _add(headers: MutableMapping[str, str]) -> None:
    for name, value in outgoing_headers().items():
        if name not in headers:  # case-insensitive in httpx and aiohttp
            headers[name] = value


def httpx_request_hook(request: Any) -> None:
    """An ``httpx.Client`` request event hook adding :func:`outgoing_headers`."""
    _add(request.headers)


async def httpx_async_request_hook(request: Any) -> None:
    """An ``httpx.AsyncClient`` request event hook adding :func:`outgoing_headers`."""
    _add(request.headers)


def aiohttp_trace_config() -> Any:
    """An ``aiohttp.TraceConfig`` adding :func:`outgoing_headers` to every request."""
    import aiohttp  # only for those who use it

    async def on_request_start(session: Any, context: Any, params: Any) -> None:
        _add(params.headers)

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_request_start)
    return config
