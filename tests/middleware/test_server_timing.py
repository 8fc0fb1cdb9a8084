"""Server-Timing: the total alone, or each layer's own time and the app's when the stack
is built by ``asgikit.middleware.server_timing.timed``; every figure within the measured
total, and never on a cross-origin response unless Timing-Allow-Origin allows the
origin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from asgikit.config import ConfigError, load_config
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
    # The inner layer failed (or answered) before calling the app: the time below the
    # first timer, until the answer, is the inner layer's.
    marks: dict[int, list[float | None]] = {0: [0.1, None]}
    assert figures(["outer", "inner"], marks, 0.0, 0.5) == [
        ("outer", pytest.approx(0.1)),
        ("inner", pytest.approx(0.4)),
        ("total", 0.5),
    ]
    # Both were entered, the app was running when the outer layer answered: its time.
    marks = {0: [0.1, None], 1: [0.15, None]}
    assert figures(["outer", "inner"], marks, 0.0, 0.5) == [
        ("outer", pytest.approx(0.1)),
        ("inner", pytest.approx(0.05)),
        ("app", pytest.approx(0.35)),
        ("total", 0.5),
    ]


async def test_the_app_keeps_its_time_when_a_deadline_answers() -> None:
    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})

    pipeline = Pipeline(["server_timing", ("timeout", {"first_byte": 0.1}), "compression"])
    response = await request(enforce(pipeline.wrap(enforce(slow))), "GET", "/")
    assert response.status == 504
    timing = server_timing(response)
    assert timing is not None and list(timing) == ["timeout", "compression", "app", "total"]
    assert timing["app"] >= 90  # the app ran until the deadline: its time, not timeout's
    assert timing["timeout"] < timing["app"] and timing["compression"] < timing["app"]


def test_layer_names_are_unique_tokens() -> None:
    layers = [
        Layer(Sleepy),
        Layer(Sleepy, name="app"),
        Layer(Sleepy, name="cors"),
        Layer(ServerTimingMiddleware),
    ]
    assert layer_names(layers) == ["sleepy", "app-2", "cors", "servertiming"]


@pytest.mark.parametrize(("options", "error"), [({"decimals": 7}, ValueError)])
def test_bad_options(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match=f"^{next(iter(options))}"):
        ServerTimingMiddleware(app_with(), **options)


def test_layers_is_no_option() -> None:
    # timed() names the layers itself: a config file's `layers` is refused, not a crash.
    pipeline = Pipeline([("server_timing", {"layers": ["a"]}), "request_id"])
    with pytest.raises(TypeError, match=r"unexpected keyword argument .layers."):
        pipeline.wrap(app_with())


def test_layers_in_a_config_file_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "asgikit.toml"
    path.write_text(
        'app = "x:y"\n[[middleware]]\nuse = "server_timing"\nlayers = ["a"]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any("layers" in issue.message for issue in caught.value.issues)


def test_layer_names_of_factories_are_tokens() -> None:
    assert layer_names([Layer(lambda app: app), Layer(Sleepy, name="<>")]) == ["lambda", "layer"]


PROXIED = {"host": "shop.example", "origin": ORIGIN, "x-forwarded-proto": "https"}


@pytest.mark.parametrize(
    ("headers", "shown"),
    [
        (PROXIED, True),  # same origin once proxy_headers set the scheme
        ({**PROXIED, "origin": "https://evil.example"}, False),
        ({**PROXIED, "x-forwarded-proto": "http"}, False),
        ({**PROXIED, "origin": "https://evil.example", "sec-fetch-site": "same-origin"}, True),
        ({**PROXIED, "sec-fetch-site": "none"}, True),
        ({**PROXIED, "sec-fetch-site": "cross-site"}, False),
    ],
)
async def test_the_origin_is_compared_after_proxy_headers(
    headers: dict[str, str], shown: bool
) -> None:
    pipeline = Pipeline(["server_timing", "proxy_headers", "request_id"])
    app = enforce(pipeline.wrap(enforce(app_with())))
    response = await request(app, "GET", "/", headers=headers)  # plain http to the proxy
    assert (server_timing(response) is not None) is shown
