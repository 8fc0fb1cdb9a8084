"""Server-Timing: the total alone, or each layer's own time and the app's when the stack
is built by ``asgikit.middleware.server_timing.timed``; every figure within the measured
total, and never on a cross-origin response unless Timing-Allow-Origin allows the
origin."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from asgikit.contract import enforce
from asgikit.middleware.server_timing import ServerTimingMiddleware, timed
from asgikit.pipeline import Layer, Pipeline
from asgikit.testing import request, run_lifespan, websocket
from asgikit.timing import LayerTimer, figures, layer_names
from asgikit.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.anyio

APP_SLEEP = 0.06
LAYER_SLEEP = 0.03


def app_with(headers: list[tuple[bytes, bytes]] | None = None, size: int = 2) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        await anyio.sleep(APP_SLEEP)
        start = {"type": "http.response.start", "status": 200, "headers": headers or []}
        await send(start)
        await send({"type": "http.response.body", "body": b"x" * size})

    return app


class Sleepy:
    """A layer that takes its time before calling the app."""

    def __init__(self, app: ASGIApp, *, seconds: float = LAYER_SLEEP) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await anyio.sleep(self.seconds)
        await self.app(scope, receive, send)


def parsed(value: bytes) -> dict[str, float]:
    result = {}
    for part in value.decode().split(", "):
        name, duration = part.split(";dur=")
        result[name] = float(duration)
    return result


def server_timing(response: Any) -> dict[str, float] | None:
    values = [value for name, value in response.headers if name == b"server-timing"]
    assert len(values) <= 1
    return parsed(values[0]) if values else None


async def test_alone_it_gives_the_total() -> None:
    app = enforce(ServerTimingMiddleware(enforce(app_with())))
    timing = server_timing(await request(app, "GET", "/"))
    assert timing is not None and list(timing) == ["total"]
    assert timing["total"] >= APP_SLEEP * 1000


async def test_each_layers_figure_is_within_the_measured_total() -> None:
    pipeline = Pipeline([(Sleepy, {"seconds": LAYER_SLEEP}), "cors", "compression", Sleepy])
    app = enforce(timed(pipeline, enforce(app_with([(b"content-type", b"text/plain")], 4096))))
    response = await request(app, "GET", "/", headers={"accept-encoding": "gzip"})
    assert dict(response.headers)[b"content-encoding"] == b"gzip"
    timing = server_timing(response)
    assert timing is not None
    assert list(timing) == ["sleepy", "cors", "compression", "sleepy-2", "app", "total"]
    total = timing.pop("total")
    assert timing["sleepy"] >= LAYER_SLEEP * 1000 - 1  # rounding to 0.01 ms, timer grain
    assert timing["sleepy-2"] >= LAYER_SLEEP * 1000 - 1
    assert timing["app"] >= APP_SLEEP * 1000 - 1
    for figure in timing.values():
        assert 0 <= figure <= total
    assert abs(sum(timing.values()) - total) <= 0.05  # they add up (each rounded)


class Refuse:
    """A layer that answers every request itself, as a 429 or a 504 does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(LAYER_SLEEP)
        await send({"type": "http.response.start", "status": 429, "headers": []})
        await send({"type": "http.response.body", "body": b"slow down"})


async def test_a_layer_that_answers_itself_ends_the_figures() -> None:
    app = enforce(timed(Pipeline([Sleepy, Refuse, "compression"]), enforce(app_with())))
    response = await request(app, "GET", "/")
    assert response.status == 429
    timing = server_timing(response)
    assert timing is not None and list(timing) == ["sleepy", "refuse", "total"]
    assert timing["refuse"] >= LAYER_SLEEP * 1000 - 1
    assert timing["sleepy"] + timing["refuse"] == pytest.approx(timing["total"], abs=0.02)


async def test_an_empty_pipeline_gives_the_total() -> None:
    timing = server_timing(await request(enforce(timed(Pipeline(), app_with())), "GET", "/"))
    assert timing is not None and list(timing) == ["total"]


ORIGIN = "https://shop.example"


@pytest.mark.parametrize(
    ("headers", "allow", "shown"),
    [
        ({"origin": "https://evil.example"}, None, False),
        ({"origin": "https://evil.example"}, b"*", True),
        ({"origin": "https://evil.example"}, b"https://a.example, https://evil.example", True),
        ({"origin": "https://evil.example"}, b"https://a.example", False),
        ({"origin": ORIGIN}, None, True),  # the request's own origin
        ({"sec-fetch-site": "cross-site"}, None, False),
        ({"sec-fetch-site": "cross-site"}, b"*", True),
        ({"sec-fetch-site": "same-site"}, b"https://other.example", False),
        ({"sec-fetch-site": "same-origin"}, None, True),
        ({}, None, True),
    ],
)
async def test_never_on_cross_origin_responses_unless_allowed(
    headers: dict[str, str], allow: bytes | None, shown: bool
) -> None:
    extra = [(b"content-type", b"text/plain")]
    if allow is not None:
        extra.append((b"timing-allow-origin", allow))
    app = enforce(ServerTimingMiddleware(enforce(app_with(extra))))
    response = await request(
        app, "GET", "/", headers={"host": "shop.example", **headers}, scheme="https"
    )
    assert (server_timing(response) is not None) is shown


async def test_websockets_and_lifespan_pass_through() -> None:
    app = enforce(timed(Pipeline([Sleepy]), enforce(app_with())))
    session = await websocket(app, "/ws")
    assert session.close_code == 1000
    await run_lifespan(app)


async def test_a_timer_without_the_middleware_outside_does_nothing() -> None:
    response = await request(enforce(LayerTimer(enforce(app_with()), 0)), "GET", "/")
    assert server_timing(response) is None


def test_figures_of_a_start_that_never_came_back() -> None:
    # The layer under the first timer failed before answering: it gets all the time.
    marks: dict[int, list[float | None]] = {0: [1.0, None]}
    assert figures(["outer", "inner"], marks, 0.5) == [
        ("outer", 0.5),
        ("inner", 0.0),
        ("total", 0.5),
    ]


def test_layer_names_are_unique_tokens() -> None:
    layers = [
        Layer(Sleepy),
        Layer(Sleepy, name="app"),
        Layer(Sleepy, name="cors"),
        Layer(ServerTimingMiddleware),
    ]
    assert layer_names(layers) == ["sleepy", "app-2", "cors", "servertiming"]


@pytest.mark.parametrize(
    ("options", "error"),
    [({"decimals": 7}, ValueError), ({"layers": ["a b"]}, ValueError), ({"layers": 3}, TypeError)],
)
def test_bad_options(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match=f"^{next(iter(options))}"):
        ServerTimingMiddleware(app_with(), **options)
