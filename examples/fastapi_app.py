"""A FastAPI app behind asgikit's middleware, two ways.

With the config file (the same file serves every framework example)::

    ASGIKIT_APP=examples.fastapi_app:app asgikit serve examples/frameworks.toml

Or with FastAPI's own hook, ``app.add_middleware``, as ``add_middleware`` below does:
each call wraps what is already there, so the middleware are added innermost first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request, Response, WebSocket

from asgikit.pipeline import Layer

DOCUMENT = [{"id": n, "name": f"item {n}", "tags": ["a", "b"]} for n in range(100)]


def create_app() -> FastAPI:
    """A new app: ``/``, ``/items/{item_id}``, ``POST /echo``, ``/document``, ``/ws``,
    and ``/fail`` (http and websocket), which raises: how an app's error is logged."""
    app = FastAPI()

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"item_id": item_id}

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(body, media_type=request.headers.get("content-type", "text/plain"))

    @app.get("/document")
    async def document() -> list[dict[str, Any]]:
        return DOCUMENT

    @app.websocket("/ws")
    async def websocket_echo(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text)

    @app.get("/fail")
    async def fail() -> None:
        raise RuntimeError("the example fails on purpose")

    @app.websocket("/fail")
    async def websocket_fail(websocket: WebSocket) -> None:
        await websocket.accept()
        raise RuntimeError("the example fails on purpose")

    return app


def add_middleware(app: FastAPI, layers: Iterable[Layer]) -> FastAPI:
    """Add ``layers`` (outermost first) through ``app.add_middleware``."""
    for layer in reversed(list(layers)):
        app.add_middleware(layer.factory, **layer.options)
    return app


app = create_app()
