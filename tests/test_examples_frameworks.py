"""The framework examples: one config file (examples/frameworks.toml) wraps each of them.

``$ASGIKIT_APP`` picks the app; the middleware are the same for all. Each app answers
through the whole pipeline in-process, behind the contract checker where the framework
keeps the ASGI contract (Django sends mixed-case header names: see
docs/compatibility.md). The hook helpers of the examples wrap them the frameworks' way.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, cast

import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from asgikit.config import build, load_config
from asgikit.contract import enforce
from asgikit.pipeline import CANONICAL_ORDER, Pipeline
from asgikit.testing import lifespan, request, websocket
from asgikit.types import ASGIApp

pytest.importorskip("fastapi", reason="fastapi is not installed")
pytest.importorskip("litestar", reason="litestar is not installed")
pytest.importorskip("django", reason="django is not installed")
pytest.importorskip("quart", reason="quart is not installed")

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "frameworks.toml"
ORIGIN = "http://localhost:5173"  # allowed by the example config

# (import string, route template of /items/42, keeps the ASGI contract, websocket)
APPS = {
    "fastapi": ("examples.fastapi_app:app", "/items/{item_id}", True, True),
    "litestar": ("examples.litestar_app:app", "/items/{item_id}", True, True),
    "django": ("examples.django_app.asgi:app", "/items/<str:item_id>", False, False),
    "quart": ("examples.quart_app:app", "/items/<item_id>", True, True),
    "starlette": ("examples.hello:app", None, True, True),
}


def test_the_config_follows_the_canonical_order_without_warnings() -> None:
    config = load_config(CONFIG, environ={})
    names = [entry.resolved.name for entry in config.middleware]
    assert names == sorted(names, key=lambda name: CANONICAL_ORDER.index(str(name)))
    assert {"request_id", "access_log", "cors", "compression"} <= set(names)
    assert config.app == "examples.fastapi_app:app"  # the default of ${ASGIKIT_APP:-...}
    assert not config.warnings


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # Django and Quart: asyncio only
@pytest.mark.parametrize("framework", list(APPS))
async def test_each_framework_answers_through_the_same_config(framework: str) -> None:
    target, route, keeps_contract, _ = APPS[framework]
    config = load_config(CONFIG, environ={"ASGIKIT_APP": target})
    assert config.app == target
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        app: ASGIApp = build(config)
    if keeps_contract:
        app = enforce(app)
    state: dict[str, Any] = {}
    with capture_logs(processors=[merge_contextvars]) as lines:
        if framework == "django":  # Django refuses the lifespan scope
            response = await request(app, "GET", "/items/42", headers={"origin": ORIGIN})
        else:
            async with lifespan(app, state=state):
                path = "/?name=you" if framework == "starlette" else "/items/42"
                response = await request(app, "GET", path, headers={"origin": ORIGIN}, state=state)
    assert response.status == 200
    assert response.header("access-control-allow-origin") == ORIGIN
    request_id = response.header("x-request-id")
    (line,) = [line for line in lines if line.get("request_id") == request_id]
    assert line["event"] == "http.request" and line.get("http.route") == (route or "/")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("framework", [name for name, app in APPS.items() if app[3]])
async def test_websocket_echo_through_the_config(framework: str) -> None:
    target = APPS[framework][0]
    app = build(load_config(CONFIG, environ={"ASGIKIT_APP": target}))
    if framework != "quart":  # Quart reads before it accepts: asgikit.enforce's rule W1
        app = enforce(app)
    path = "/echo" if framework == "starlette" else "/ws"
    state: dict[str, Any] = {}
    # The driver closes right after its last frame; Quart cancels its handler at the close
    # while later frames are still queued, so it gets one frame.
    frames = ["ping"] if framework == "quart" else ["ping", "pong"]
    async with lifespan(app, state=state):
        session = await websocket(app, path, frames=frames, state=state)
    assert session.accepted and session.sent == frames
    assert session.denial is None


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_examples_hook_helpers_wrap_outermost_first() -> None:
    from examples import fastapi_app, litestar_app, quart_app
    from examples.django_app import asgi as django_asgi

    layers = Pipeline(["request_id", ("cors", {"allow_origins": [ORIGIN]})]).layers
    apps: list[ASGIApp] = [
        fastapi_app.add_middleware(fastapi_app.create_app(), layers),
        cast(ASGIApp, litestar_app.create_app(layers)),
        cast(ASGIApp, quart_app.add_middleware(quart_app.create_app(), layers)),
        django_asgi.wrapped(layers),
    ]
    for app in apps:
        home = await request(app, "GET", "/")
        assert home.status == 200 and home.json() == {"hello": "world"}
        missing = await request(app, "GET", "/no-such-page")
        assert missing.status == 404
        response = await request(app, "GET", "/items/7", headers={"origin": ORIGIN})
        assert response.status == 200 and response.json() == {"item_id": "7"}
        assert response.header("access-control-allow-origin") == ORIGIN
        # request_id is outside cors: CORS exposes nothing, but the id is on the response.
        assert response.header("x-request-id")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_django_example_answers_its_other_views() -> None:
    from examples.django_app import asgi as django_asgi

    home = await request(django_asgi.app, "GET", "/")
    assert home.status == 200 and home.json() == {"hello": "world"}
    wrong = await request(django_asgi.app, "GET", "/echo")
    assert wrong.status == 405 and wrong.header("allow") == "POST"
    echoed = await request(django_asgi.app, "POST", "/echo", body=b"hi")
    assert echoed.status == 200 and echoed.body == b"hi"
