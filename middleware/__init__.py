"""The asgikit middleware, each a pure ASGI callable class."""

from asgikit.middleware.cors import CORSMiddleware
from asgikit.middleware.proxy_headers import ProxyHeadersMiddleware
from asgikit.middleware.request_id import RequestIDMiddleware
from asgikit.middleware.timeout import ResponseTimeout, TimeoutMiddleware

__all__ = [
    "CORSMiddleware",
    "ProxyHeadersMiddleware",
    "RequestIDMiddleware",
    "ResponseTimeout",
    "TimeoutMiddleware",
]
