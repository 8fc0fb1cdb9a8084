"""``add_outermost_middleware``: asgikit outside Starlette's and FastAPI's own error
handling, so that the 500 page gets the request id and the CORS headers too."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from asgikit.integrations.starlette import add_outermost_middleware
from asgikit.middleware import CORSMiddleware, RequestIDMiddleware

ORIGIN = "https://app.example.com"


def fails(request: Any) -> PlainTextResponse:
    raise RuntimeError("the handler failed")


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/fails")
    def failing() -> None:
        raise RuntimeError("the handler failed")

    @app.get("/ok")
    def ok() -> dict[str, bool]:
        return {"ok": True}

    return app


def starlette_app() -> Starlette:
    return Starlette(
        routes=[Route("/fails", fails), Route("/ok", lambda r: PlainTextResponse("ok"))]
    )


@pytest.mark.parametrize("make", [fastapi_app, starlette_app], ids=["fastapi", "starlette"])
def test_the_500_page_carries_the_request_id_and_cors_headers(make: Any) -> None:
    app = make()
    add_outermost_middleware(app, CORSMiddleware, allow_origins=[ORIGIN])
    add_outermost_middleware(app, RequestIDMiddleware)
    with TestClient(app, raise_server_exceptions=False) as client:
        failed = client.get("/fails", headers={"origin": ORIGIN})
        ok = client.get("/ok", headers={"origin": ORIGIN})
    assert failed.status_code == 500
    assert failed.headers["x-request-id"]
    assert failed.headers["access-control-allow-origin"] == ORIGIN
    assert ok.status_code == 200
    assert ok.headers["x-request-id"] != failed.headers["x-request-id"]


def test_add_middleware_leaves_the_500_page_without_them() -> None:
    """What the helper is for: Starlette's error page is sent from outside add_middleware."""
    app = fastapi_app()
    app.add_middleware(RequestIDMiddleware)
    with TestClient(app, raise_server_exceptions=False) as client:
        failed = client.get("/fails")
    assert failed.status_code == 500
    assert "x-request-id" not in failed.headers


def test_the_last_added_is_the_outermost() -> None:
    seen: list[str] = []

    def named(name: str) -> Any:
        def middleware(app: Any) -> Any:
            async def call(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] == "http":
                    seen.append(name)
                await app(scope, receive, send)

            return call

        return middleware

    app = starlette_app()
    add_outermost_middleware(app, named("inner"))
    add_outermost_middleware(app, named("outer"))
    with TestClient(app) as client:
        client.get("/ok")
    assert seen == ["outer", "inner"]


def test_it_refuses_what_it_cannot_wrap() -> None:
    with pytest.raises(TypeError, match="not a Starlette or FastAPI app"):
        add_outermost_middleware(object(), RequestIDMiddleware)
    app = starlette_app()
    with TestClient(app) as client:
        client.get("/ok")
    with pytest.raises(RuntimeError, match="after the app has started"):
        add_outermost_middleware(app, RequestIDMiddleware)
