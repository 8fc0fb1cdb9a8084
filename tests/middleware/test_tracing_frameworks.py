"""TracingMiddleware around real frameworks: span names and http.route from their routing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from litestar import Litestar, get
from litestar.params import FromPath
from opentelemetry.trace import StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgikit.middleware.request_id import RequestIDMiddleware
from asgikit.testing import request, websocket
from asgikit.types import ASGIApp
from tests.middleware.test_tracing import Telemetry

pytestmark = pytest.mark.anyio


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


def starlette_app() -> Starlette:
    async def user(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.path_params["user_id"]))

    async def fail(request: Request) -> PlainTextResponse:
        raise RuntimeError("handler failed")

    async def room(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close()

    api = Starlette(routes=[Route("/users/{user_id:int}", user), Route("/fail", fail)])
    return Starlette(
        routes=[
            Mount("/api", app=api),
            Route("/plain", user),
            WebSocketRoute("/ws/{room}", room),
        ]
    )


def names_and_routes(telemetry: Telemetry) -> list[tuple[str, Any]]:
    return [(s.name, dict(s.attributes or {}).get("http.route")) for s in telemetry.spans()]


def metric_routes(telemetry: Telemetry) -> set[Any]:
    return {
        dict(p.attributes).get("http.route")
        for p in telemetry.points("http.server.request.duration")
    }


async def test_starlette_mount_route(telemetry: Telemetry) -> None:
    app = telemetry.wrap(starlette_app())
    response = await request(app, "GET", "/api/users/7")
    assert response.text == "7"
    await request(app, "GET", "/nowhere")
    assert names_and_routes(telemetry) == [
        ("GET /api/users/{user_id}", "/api/users/{user_id}"),
        ("GET", None),
    ]
    assert metric_routes(telemetry) == {"/api/users/{user_id}", None}
    unmatched = telemetry.spans()[1]
    assert dict(unmatched.attributes or {})["http.response.status_code"] == 404


async def test_starlette_route_seen_through_a_copying_middleware(telemetry: Telemetry) -> None:
    # RequestIDMiddleware copies the scope; the scope chain still shows the route.
    app = telemetry.wrap(RequestIDMiddleware(starlette_app()))
    await request(app, "GET", "/api/users/3")
    assert names_and_routes(telemetry) == [("GET /api/users/{user_id}", "/api/users/{user_id}")]


async def test_starlette_handler_exception(telemetry: Telemetry) -> None:
    with pytest.raises(RuntimeError):
        await request(telemetry.wrap(starlette_app()), "GET", "/api/fail")
    span = telemetry.span()
    assert span.name == "GET /api/fail"
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "RuntimeError"


async def test_starlette_websocket_route(telemetry: Telemetry) -> None:
    session = await websocket(telemetry.wrap(starlette_app()), "/ws/lobby")
    assert session.accepted
    span = telemetry.span()
    assert span.name == "WEBSOCKET /ws/{room}"
    assert dict(span.attributes or {})["http.route"] == "/ws/{room}"


async def test_fastapi_route(telemetry: Telemetry) -> None:
    api = FastAPI()

    @api.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    response = await request(telemetry.wrap(api), "GET", "/items/5")
    assert response.json() == {"item_id": 5}
    assert names_and_routes(telemetry) == [("GET /items/{item_id}", "/items/{item_id}")]
    assert metric_routes(telemetry) == {"/items/{item_id}"}


async def test_fastapi_routes_of_included_routers_keep_their_prefixes(
    telemetry: Telemetry,
) -> None:
    api, router, inner = FastAPI(), APIRouter(), APIRouter()

    @router.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @inner.get("/deep/{x}")
    async def deep(x: int) -> dict[str, int]:
        return {"x": x}

    router.include_router(inner, prefix="/in")
    api.include_router(router, prefix="/r")
    site = Starlette(routes=[Mount("/sub", app=api)])
    for app, path in ((api, "/r/items/5"), (api, "/r/in/deep/6"), (site, "/sub/r/items/7")):
        assert (await request(telemetry.wrap(app), "GET", path)).status == 200
    assert [route for _, route in names_and_routes(telemetry)] == [
        "/r/items/{item_id}",
        "/r/in/deep/{x}",
        "/sub/r/items/{item_id}",
    ]


async def test_litestar_route(telemetry: Telemetry) -> None:
    @get("/orders/{order_id:int}")
    async def order(order_id: FromPath[int]) -> str:
        return str(order_id)

    app: ASGIApp = Litestar(route_handlers=[order])
    response = await request(telemetry.wrap(app), "GET", "/orders/9")
    assert response.text == "9"
    [(name, route)] = names_and_routes(telemetry)
    assert route is not None and route.startswith("/orders/{order_id")
    assert name == f"GET {route}"
