"""Importable apps for the end-to-end runner (``python -m benchmarks.e2e --case NAME=module:attr``).

Each later middleware issue adds its app and its anchor's app here.
"""

from __future__ import annotations

from starlette.middleware.gzip import GZipMiddleware

from benchmarks.harness import bare_app

__all__ = ["bare", "starlette_gzip"]

bare = bare_app

# The 13-byte body is under GZip's 500-byte minimum and wrk sends no accept-encoding, so this
# measures what Starlette's GZip costs on a response it leaves alone: a wrapping demonstration.
starlette_gzip = GZipMiddleware(bare_app)
