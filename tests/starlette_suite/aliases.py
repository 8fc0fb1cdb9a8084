"""Starlette's GZip names for asgikit's compression middleware, for Starlette's own suite.

``GZipMiddleware`` is ``CompressionMiddleware`` itself. ``GZipResponder`` is Starlette's
internal per-request responder, which asgikit has no counterpart for: its one use in the
suite (the responder normalises ``exclude_content_types``) is the middleware offering
gzip alone, with ``minimum_size`` as Starlette passes it, by position.
"""

from __future__ import annotations

from typing import Any

from asgikit.middleware.compression import CompressionMiddleware
from asgikit.types import ASGIApp

__all__ = ["GZipMiddleware", "GZipResponder"]

GZipMiddleware = CompressionMiddleware


def GZipResponder(app: ASGIApp, minimum_size: int, **options: Any) -> CompressionMiddleware:
    return CompressionMiddleware(app, minimum_size=minimum_size, encodings="gzip", **options)
