"""A small Starlette app behind the asgikit contract checker.

Run it with ``uvicorn --app-dir examples hello:app`` and open http://127.0.0.1:8000/.
Every request, websocket and the lifespan go through ``asgikit.enforce``, so a broken
ASGI message anywhere in the stack fails loudly, naming the rule and who broke it.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgikit import __version__, enforce


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "Hello"}


async def home(request: Request) -> PlainTextResponse:
    name = request.query_params.get("name", "world")
    return PlainTextResponse(f"{request.state.greeting}, {name}! (asgikit {__version__})\n")


async def numbers(request: Request) -> StreamingResponse:
    async def lines() -> AsyncIterator[bytes]:
        for n in range(1, 6):
            yield f"{n}\n".encode()

    return StreamingResponse(lines(), media_type="text/plain")


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)


async def fail(request: Request) -> None:
    raise RuntimeError("the example fails on purpose")  # how an app's error is logged


async def fail_websocket(websocket: WebSocket) -> None:
    await websocket.accept()
    raise RuntimeError("the example fails on purpose")


starlette_app = Starlette(
    routes=[
        Route("/", home),
        Route("/numbers", numbers),
        Route("/health", health),
        WebSocketRoute("/echo", echo),
        Route("/fail", fail),
        WebSocketRoute("/fail", fail_websocket),
    ],
    lifespan=lifespan,
)

app = enforce(starlette_app)
