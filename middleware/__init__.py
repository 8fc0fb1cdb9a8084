"""The asgikit middleware, each a pure ASGI callable class."""

from asgikit.middleware.access_log import AccessLogMiddleware
from asgikit.middleware.compression import CompressionMiddleware
from asgikit.middleware.cors import CORSMiddleware
from asgikit.middleware.proxy_headers import ProxyHeadersMiddleware
from asgikit.middleware.rate_limit import RateLimitMiddleware
from asgikit.middleware.request_id import RequestIDMiddleware
from asgikit.middleware.timeout import ResponseTimeout, TimeoutMiddleware
from asgikit.middleware.tracing import TracingMiddleware

__all__ = [
    "AccessLogMiddleware",
    "CORSMiddleware",
    "CompressionMiddleware",
    "DevInspectorMiddleware",
    "ProxyHeadersMiddleware",
    "RateLimitMiddleware",
    "RequestIDMiddleware",
    "ResponseTimeout",
    "TimeoutMiddleware",
    "TracingMiddleware",
]


def __getattr__(name: str) -> object:
    # The development inspector loads only when it is asked for: it costs nothing (not
    # even an import) in an app that does not use it.
    if name == "DevInspectorMiddleware":
        from asgikit.middleware.inspector import DevInspectorMiddleware

        return DevInspectorMiddleware
    raise AttributeError(f"module 'asgikit.middleware' has no attribute {name!r}")
