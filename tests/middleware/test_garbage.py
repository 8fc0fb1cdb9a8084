"""No middleware leaves reference cycles behind a request.

A cycle per request (a scope chain whose scopes hold the chain, a closure that refers to
itself) is freed only by the garbage collector, and the collections it triggers cost
every request: at one cycle per request the full stack spent a third of its time there.
This runs every built-in together and alone, with the collector off, and counts what it
would have had to free.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from asgikit.pipeline import CANONICAL_ORDER, Pipeline
from asgikit.testing import request

ORIGIN = "https://app.example.com"
HEADERS = {"accept-encoding": "gzip", "origin": ORIGIN}
# Every request arrives over https: https_redirect (and its HSTS header) passes it on.


async def item(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["item_id"], "text": "x" * 2000})


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for number in range(3):
            yield b"data: %d %s\n\n" % (number, b"y" * 600)

    return StreamingResponse(chunks(), media_type="text/event-stream")


def options(name: str) -> dict[str, Any]:
    return {
        "tracing": {
            "tracer_provider": TracerProvider(),
            "meter_provider": MeterProvider(metric_readers=[InMemoryMetricReader()]),
        },
        "cors": {"allow_origins": [ORIGIN]},
        "rate_limit": {"rate": "2/hour"},  # the third request of a client gets a 429
        "inspector": {"allow_non_loopback": True},
        "https_redirect": {"hsts": True},
    }.get(name, {})


def cycles_freed() -> int:
    """How many objects only the garbage collector could free."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = len(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found


@pytest.mark.anyio
@pytest.mark.parametrize("names", [CANONICAL_ORDER, *[(name,) for name in CANONICAL_ORDER]])
async def test_requests_leave_no_reference_cycles(names: tuple[str, ...]) -> None:
    app = Starlette(routes=[Route("/items/{item_id}", item), Route("/events", stream)])
    served = Pipeline([(name, options(name)) for name in names]).wrap(app)
    paths = ("/items/1", "/events", "/items/2", "/items/3")
    for path in paths:  # first use: caches and lazy set-up, not per request
        await request(served, "GET", path, headers=HEADERS, scheme="https")
    gc.collect()
    gc.disable()
    try:
        statuses = []
        for path in paths * 3:
            response = await request(served, "GET", path, headers=HEADERS, scheme="https")
            statuses.append(response.status)
        found = cycles_freed()
    finally:
        gc.enable()
    assert statuses[:2] == [200, 200] or "rate_limit" in names
    if "rate_limit" in names:
        assert 429 in statuses  # the rejection path ran too
    assert found == 0


async def boom(request: Request) -> JSONResponse:
    raise RuntimeError("boom")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "names",
    # The access log is left out: rendering a traceback (structlog's exception
    # formatter) leaves cyclic garbage of its own, whatever the middleware does.
    [(), *[(name,) for name in CANONICAL_ORDER if name != "access_log"]],
)
async def test_an_app_exception_leaves_no_reference_cycle(names: tuple[str, ...]) -> None:
    # The frame that ran the app is in the exception's traceback: if it keeps the
    # exception (a local, or the exchange holding it), that is a cycle, and every object
    # of the failed request stays alive until the garbage collector runs.
    app = Starlette(routes=[Route("/boom", boom)])
    chosen = {name: options(name) for name in names}
    if "rate_limit" in chosen:
        chosen["rate_limit"] = {"rate": "100/hour"}  # every request reaches the app
    served = Pipeline(list(chosen.items())).wrap(app)
    with pytest.raises(RuntimeError):  # first use: caches and lazy set-up
        await request(served, "GET", "/boom", headers=HEADERS, scheme="https")
    gc.collect()
    gc.disable()
    try:
        for _ in range(2):
            with pytest.raises(RuntimeError, match="boom"):
                await request(served, "GET", "/boom", headers=HEADERS, scheme="https")
        found = cycles_freed()
    finally:
        gc.enable()
    assert found == 0
