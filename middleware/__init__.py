"""The asgikit middleware, each a pure ASGI callable class."""

from asgikit.middleware.proxy_headers import ProxyHeadersMiddleware
from asgikit.middleware.request_id import RequestIDMiddleware

__all__ = ["ProxyHeadersMiddleware", "RequestIDMiddleware"]
