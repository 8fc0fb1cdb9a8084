"""A Quart app behind asgikit's middleware, two ways.

With the config file (the same file serves every framework example)::

    ASGIKIT_APP=examples.quart_app:app asgikit serve examples/frameworks.toml

Or by wrapping ``app.asgi_app``, Quart's hook for ASGI middleware, as
``add_middleware`` below does. Quart routes inside its request context and leaves
nothing in the ASGI scope, so ``asgikit.integrations.quart.record_routes`` writes the
matched rule to ``scope["path_template"]``, where asgikit's middleware read it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from quart import Quart, Response, request, websocket

from asgikit.integrations.quart import record_routes
from asgikit.pipeline import Layer

DOCUMENT = [{"id": n, "name": f"item {n}", "tags": ["a", "b"]} for n in range(100)]


def create_app() -> Quart:
    """A new app: ``/``, ``/items/<item_id>``, ``POST /echo``, ``/document``, ``/ws``,
    and ``/fail`` (http and websocket), which raises: how an app's error is logged."""
    app = record_routes(Quart(__name__))

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/items/<item_id>")
    async def item(item_id: str) -> dict[str, str]:
        return {"item_id": item_id}

    @app.post("/echo")
    async def echo() -> Response:
        body = await request.get_data(as_text=False)
        return Response(body, content_type=request.headers.get("content-type", "text/plain"))

    @app.get("/document")
    async def document() -> list[dict[str, Any]]:
        return DOCUMENT

    @app.websocket("/ws")
    async def websocket_echo() -> None:
        while True:
            await websocket.send(await websocket.receive())

    @app.get("/fail")
    async def fail() -> None:
        raise RuntimeError("the example fails on purpose")

    @app.websocket("/fail")
    async def websocket_fail() -> None:
        await websocket.accept()
        raise RuntimeError("the example fails on purpose")

    return app


def add_middleware(app: Quart, layers: Iterable[Layer]) -> Quart:
    """Wrap ``app.asgi_app`` in ``layers`` (outermost first)."""
    for layer in reversed(list(layers)):
        app.asgi_app = layer.factory(app.asgi_app, **layer.options)  # type: ignore[method-assign]
    return app


app = create_app()
