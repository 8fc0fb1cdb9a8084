"""A Litestar app behind asgikit's middleware, two ways.

With the config file (the same file serves every framework example)::

    ASGIKIT_APP=examples.litestar_app:app asgikit serve examples/frameworks.toml

Or with Litestar's own hook, ``middleware=[DefineMiddleware(...)]``, as ``create_app``
does when given layers: the first listed is the outermost. Litestar runs its
middleware after routing, so they see the route template (``scope["path_template"]``)
but not requests that match no route (a 404 is answered before them).

Litestar answers an unhandled exception with a 500 itself, so the access log never sees
it; by default it also logs it only in debug mode. ``log_exceptions="always"`` has it
write the traceback (once: ``asgikit.logging`` routes the ``litestar`` logger).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from litestar import (
    Litestar,
    Request,
    Response,
    WebSocket,
    get,
    post,
    websocket,
    websocket_listener,
)
from litestar.logging import LoggingConfig
from litestar.middleware.base import DefineMiddleware
from litestar.params import FromPath

from asgikit.pipeline import Layer

DOCUMENT = [{"id": n, "name": f"item {n}", "tags": ["a", "b"]} for n in range(100)]


@get("/")
async def home() -> dict[str, str]:
    return {"hello": "world"}


@get("/items/{item_id:str}")
async def item(item_id: FromPath[str]) -> dict[str, str]:
    return {"item_id": item_id}


@post("/echo", status_code=200)
async def echo(request: Request[Any, Any, Any]) -> Response[bytes]:
    body = await request.body()
    return Response(body, media_type=request.headers.get("content-type", "text/plain"))


@get("/document")
async def document() -> list[dict[str, Any]]:
    return DOCUMENT


@websocket_listener("/ws")
async def websocket_echo(data: str) -> str:
    return data


@get("/fail")
async def fail() -> None:
    raise RuntimeError("the example fails on purpose")


@websocket("/fail")
async def websocket_fail(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    raise RuntimeError("the example fails on purpose")


def create_app(layers: Iterable[Layer] = ()) -> Litestar:
    """A new app; ``layers`` (outermost first) go in through ``DefineMiddleware``."""
    middleware = [DefineMiddleware(layer.factory, **layer.options) for layer in layers]
    return Litestar(
        route_handlers=[home, item, echo, document, websocket_echo, fail, websocket_fail],
        middleware=middleware,
        logging_config=LoggingConfig(log_exceptions="always"),
    )


app = create_app()
