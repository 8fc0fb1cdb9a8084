"""Middleware outside Starlette's (and FastAPI's) own error handling.

``app.add_middleware(...)`` puts a middleware *inside* Starlette's
``ServerErrorMiddleware``: when a handler raises, the 500 page is sent from outside every
added middleware, so it carries no request id, no CORS headers, and the access log and
tracing see an exception with no response. ``add_outermost_middleware`` takes the same
arguments but puts the middleware *outside* the app's whole stack, error handling
included, while ``app`` stays the object the server runs and routes and decorators are
added to as usual::

    from fastapi import FastAPI

    from asgikit.integrations.starlette import add_outermost_middleware
    from asgikit.middleware import CORSMiddleware, RequestIDMiddleware

    app = FastAPI()
    add_outermost_middleware(app, CORSMiddleware, allow_origins=["https://app.example.com"])
    add_outermost_middleware(app, RequestIDMiddleware)  # the last added is outermost

As with ``add_middleware``, the last one added is the outermost, and the stack is built
when the app first runs: add them all before serving.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgikit.types import ASGIApp

__all__ = ["add_outermost_middleware"]


def add_outermost_middleware(app: Any, middleware: Callable[..., ASGIApp], **options: Any) -> None:
    """Wrap *middleware* (called as ``middleware(inner, **options)``) around the whole
    stack of the Starlette or FastAPI *app*, outside its ``ServerErrorMiddleware``.

    Raises:
        TypeError: *app* is not a Starlette app (it has no ``build_middleware_stack``).
        RuntimeError: *app* has already handled a request: its stack is built.
    """
    build: Callable[[], ASGIApp] | None = getattr(app, "build_middleware_stack", None)
    if build is None:
        raise TypeError(f"{app!r} is not a Starlette or FastAPI app: wrap it instead")
    if getattr(app, "middleware_stack", None) is not None:
        raise RuntimeError("add_outermost_middleware after the app has started")

    def build_with_middleware() -> ASGIApp:
        return middleware(build(), **options)

    # Starlette builds its stack through this method when it first runs.
    app.build_middleware_stack = build_with_middleware
