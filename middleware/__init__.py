"""The asgikit middleware, each a pure ASGI callable class.

Each middleware loads on first use (``from asgikit.middleware import CORSMiddleware``
imports the CORS package and what it needs, nothing else): importing CORS does not load
OpenTelemetry, importing the access log does not load brotli.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asgikit.middleware.access_log import AccessLogMiddleware
    from asgikit.middleware.body_limit import BodyLimitMiddleware
    from asgikit.middleware.compression import CompressionMiddleware
    from asgikit.middleware.concurrency_limit import ConcurrencyLimitMiddleware
    from asgikit.middleware.cors import CORSMiddleware
    from asgikit.middleware.https_redirect import HTTPSRedirectMiddleware
    from asgikit.middleware.inspector import DevInspectorMiddleware
    from asgikit.middleware.proxy_headers import ProxyHeadersMiddleware
    from asgikit.middleware.rate_limit import RateLimitMiddleware
    from asgikit.middleware.request_id import RequestIDMiddleware
    from asgikit.middleware.server_timing import ServerTimingMiddleware
    from asgikit.middleware.timeout import ResponseTimeout, TimeoutMiddleware
    from asgikit.middleware.tracing import TracingMiddleware
    from asgikit.middleware.trusted_host import TrustedHostMiddleware

__all__ = [
    "AccessLogMiddleware",
    "BodyLimitMiddleware",
    "CORSMiddleware",
    "CompressionMiddleware",
    "ConcurrencyLimitMiddleware",
    "DevInspectorMiddleware",
    "HTTPSRedirectMiddleware",
    "ProxyHeadersMiddleware",
    "RateLimitMiddleware",
    "RequestIDMiddleware",
    "ResponseTimeout",
    "ServerTimingMiddleware",
    "TimeoutMiddleware",
    "TracingMiddleware",
    "TrustedHostMiddleware",
]

_MODULES = {
    "AccessLogMiddleware": "access_log",
    "BodyLimitMiddleware": "body_limit",
    "CORSMiddleware": "cors",
    "CompressionMiddleware": "compression",
    "ConcurrencyLimitMiddleware": "concurrency_limit",
    "DevInspectorMiddleware": "inspector",
    "HTTPSRedirectMiddleware": "https_redirect",
    "ProxyHeadersMiddleware": "proxy_headers",
    "RateLimitMiddleware": "rate_limit",
    "RequestIDMiddleware": "request_id",
    "ResponseTimeout": "timeout",
    "ServerTimingMiddleware": "server_timing",
    "TimeoutMiddleware": "timeout",
    "TracingMiddleware": "tracing",
    "TrustedHostMiddleware": "trusted_host",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'asgikit.middleware' has no attribute {name!r}")
    value = getattr(import_module(f"asgikit.middleware.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
