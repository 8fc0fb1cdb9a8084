"""A Litestar app behind asgikit's middleware, two ways.

With the config file (the same file serves every framework example)::

    ASGIKIT_APP=examples.litestar_app:app asgikit serve examples/frameworks.toml

Or with Litestar's own hook, ``middleware=[DefineMiddleware(...)]``, as ``create_app``
does when given layers: the first listed is the outermost. Litestar runs its
middleware after routing, so they see the route template (``scope["path_template"]``)
but not requests that match no route (a 404 is answered before them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from litestar import Litestar, Request, Response, get, post, websocket_listener
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


def create_app(layers: Iterable[Layer] = ()) -> Litestar:
    """A new app; ``layers`` (outermost first) go in through ``DefineMiddleware``."""
    middleware = [DefineMiddleware(layer.factory, **layer.options) for layer in layers]
    return Litestar(
        route_handlers=[home, item, echo, document, websocket_echo], middleware=middleware
    )


app = create_app()
