"""Importable apps for the end-to-end runner (``python -m benchmarks.e2e --case NAME=module:attr``).

Each later middleware issue adds its app and its anchor's app here.
"""

from __future__ import annotations

from asgi_correlation_id import CorrelationIdMiddleware
from starlette.middleware.gzip import GZipMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware as UvicornProxyHeaders

from asgikit.middleware import ProxyHeadersMiddleware, RequestIDMiddleware
from benchmarks.harness import bare_app

__all__ = [
    "asgi_correlation_id",
    "asgikit_proxy_headers",
    "asgikit_request_id",
    "bare",
    "starlette_gzip",
    "uvicorn_proxy_headers",
]

bare = bare_app

# The 13-byte body is under GZip's 500-byte minimum and wrk sends no accept-encoding, so this
# measures what Starlette's GZip costs on a response it leaves alone: a wrapping demonstration.
starlette_gzip = GZipMiddleware(bare_app)

# Request ids: `--case anchor=benchmarks.apps:asgi_correlation_id --case
# asgikit=benchmarks.apps:asgikit_request_id`.
asgi_correlation_id = CorrelationIdMiddleware(bare_app)
asgikit_request_id = RequestIDMiddleware(bare_app)

# Proxy headers (run uvicorn with --no-proxy-headers and send X-Forwarded-For with
# `--header`): wrk connects from 127.0.0.1, the default trusted proxy of both.
# uvicorn annotates apps with asgiref's TypedDicts, which plain ASGI callables do not match.
uvicorn_proxy_headers = UvicornProxyHeaders(bare_app, trusted_hosts="127.0.0.1")  # type: ignore[arg-type]
asgikit_proxy_headers = ProxyHeadersMiddleware(bare_app)
