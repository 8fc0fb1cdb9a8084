"""Counted statuses taken before the app, charges shielded from cancellation, requests
that can never fit, a rate function's burst, and the metrics' hold on meter providers."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import anyio
import pytest
import structlog
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider

from asgikit.contract import enforce
from asgikit.middleware.rate_limit import USAGE_KEY, RateLimitMiddleware
from asgikit.middleware.rate_limit.store import CHARGE, MemoryStore
from asgikit.testing import request, websocket
from asgikit.types import Receive, Scope, Send
from tests.middleware.test_rate_limit_weighted import HERE, members

pytestmark = pytest.mark.anyio

LOGIN = {"name": "login", "path": "/login", "rate": "3/minute", "count_status": [401]}


class SignIn:
    """Checks a password slowly; answers ``x-status`` (401 by default), maybe after an
    early hint, maybe raising instead of answering."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        headers = dict(scope["headers"])
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        await anyio.sleep(0.01)  # checking the password
        if b"x-raise" in headers:
            raise RuntimeError("upstream down")
        if "http.response.early_hint" in (scope.get("extensions") or {}):
            hint = {"type": "http.response.early_hint", "links": [b"</a.css>; rel=preload"]}
            await send(hint)
        status = int(headers.get(b"x-status", b"401"))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})


def limited(**options: Any) -> tuple[Any, RateLimitMiddleware, SignIn]:
    app = SignIn()
    middleware = RateLimitMiddleware(enforce(app), **options)
    return enforce(middleware), middleware, app


# ---- count_status: taken before the app, given back when the status does not count ----


async def test_parallel_failed_attempts_are_bounded_by_the_limit() -> None:
    asgi, _, app = limited(rules=[LOGIN])
    statuses: list[int] = []

    async def attempt() -> None:
        statuses.append((await request(asgi, "POST", "/login")).status)

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(attempt)
    assert app.calls == 3  # not 50: each attempt held its cell while the app ran
    assert sorted(statuses) == [401] * 3 + [429] * 47
    assert (await request(asgi, "POST", "/login")).status == 429


async def test_attempts_whose_status_does_not_count_give_their_cells_back() -> None:
    asgi, _, app = limited(rules=[LOGIN])
    ok = {"x-status": "200"}

    async def attempt() -> None:
        assert (await request(asgi, "POST", "/login", headers=ok)).status == 200

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(attempt)
    # Three successes at once filled the bucket while they ran, then gave it back.
    after = [(await request(asgi, "POST", "/login", headers=ok)).status for _ in range(10)]
    assert after == [200] * 10
    assert [(await request(asgi, "POST", "/login")).status for _ in range(4)] == [
        401,
        401,
        401,
        429,
    ]
    assert app.calls == 16


async def test_an_early_hint_does_not_decide_the_status() -> None:
    asgi, _, _ = limited(rules=[LOGIN])
    hints = {"http.response.early_hint": {}}
    responses = [await request(asgi, "POST", "/login", extensions=hints) for _ in range(4)]
    assert [r.status for r in responses] == [401, 401, 401, 429]
    ok = await request(asgi, "POST", "/other", extensions=hints)  # the rule does not match
    assert ok.status == 401


@pytest.mark.parametrize(("counted", "expected"), [(["5xx"], 429), ([401], 500)])
async def test_an_app_that_raises_counts_as_the_500_the_server_answers(
    counted: list[Any], expected: int
) -> None:
    rule = {**LOGIN, "rate": "2/minute", "count_status": counted}
    asgi, _, app = limited(rules=[rule])
    outcomes = []
    for _ in range(3):
        response = await request(
            asgi, "POST", "/login", headers={"x-raise": "1"}, raise_app_exceptions=False
        )
        outcomes.append(500 if response.exception is not None else response.status)
    # 5xx counted: the third attempt is refused; 401 counted: a 500 gives its cell back.
    assert outcomes == [500, 500, expected]
    assert app.calls == (2 if expected == 429 else 3)


async def test_a_cancelled_attempt_keeps_its_cell() -> None:
    asgi, _, app = limited(rules=[LOGIN])
    with anyio.move_on_after(0.005):  # before the app answers: the outcome is unknown
        await request(asgi, "POST", "/login", headers={"x-status": "200"})
    ok = await request(asgi, "POST", "/login", headers={"x-status": "200"})
    assert members(ok)["login"]["r"] == 1  # the cancelled attempt's cell, and this one's
    assert app.calls == 2


async def test_a_websocket_closed_before_accepting_counts_as_403() -> None:
    rule = {"rate": "2/hour", "count_status": [403]}
    asgi, _, _ = limited(rules=[rule])
    for _ in range(2):
        assert not (await websocket(asgi)).accepted
    denied = await websocket(asgi)
    assert denied.close_code == 1013  # refused by the limit, not the app's 1008


async def test_a_refund_that_fails_is_logged_and_the_response_stands() -> None:
    asgi, middleware, _ = limited(rules=[LOGIN])
    inner = middleware.store

    class RefundsFail:
        round_trips = 0

        async def open(self) -> None: ...

        async def close(self) -> None: ...

        async def acquire(self, checks: Any) -> Any:
            if checks[0][2] == CHARGE:
                from asgikit.middleware.rate_limit.store import StoreError

                raise StoreError("down")
            return await inner.acquire(checks)

    middleware.store = RefundsFail()
    with structlog.testing.capture_logs() as logs:
        response = await request(asgi, "POST", "/login", headers={"x-status": "200"})
    assert response.status == 200 and middleware.backend_errors == 1
    assert [log["event"] for log in logs] == ["rate_limit.backend_error"]


# ---- charges shielded from cancellation ------------------------------------------------


class CancelledDuringCharges:
    """A memory store that cancels the request while a charge is on its way."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.round_trips = 0
        self.cancel: anyio.CancelScope | None = None
        self.stall = False

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def acquire(self, checks: Any) -> Any:
        if checks[0][2] == CHARGE:
            assert self.cancel is not None
            self.cancel.cancel()  # the client went away now
            await anyio.sleep(1.0 if self.stall else 0)  # a round trip
        return await self.inner.acquire(checks)


async def usage_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
    scope[USAGE_KEY].charge(40)


async def test_a_usage_charge_survives_the_request_being_cancelled() -> None:
    rule = {"rate": "100/hour", "usage": True}
    middleware = RateLimitMiddleware(enforce(usage_app), rules=[rule])
    store = middleware.store = CancelledDuringCharges()
    asgi = enforce(middleware)
    with anyio.CancelScope() as cancel:
        store.cancel = cancel
        await request(asgi)
    assert cancel.cancel_called
    with anyio.CancelScope() as store.cancel:
        after = await request(asgi)
    assert members(after)["default"]["r"] == 100 - 1 - 40 - 1


async def test_a_stalled_charge_gives_up_within_the_store_budget() -> None:
    rule = {"rate": "100/hour", "usage": True}
    middleware = RateLimitMiddleware(
        enforce(usage_app), rules=[rule], timeout=0.01, connect_timeout=0.01
    )
    store = middleware.store = CancelledDuringCharges()
    store.stall = True
    with anyio.fail_after(0.9), anyio.CancelScope() as store.cancel:  # not the 1 s stall
        await request(enforce(middleware))
    assert middleware.backend_errors == 1


# ---- a request that can never fit ---------------------------------------------------------


def header_cost(scope: Scope) -> int:
    return int(dict(scope["headers"]).get(b"x-cost", b"1"))


@pytest.mark.parametrize("accept", ["text/plain", "application/json"])
async def test_a_cost_above_the_burst_gets_no_retry_after(accept: str) -> None:
    rules = [{"rate": "10/minute", "burst": 5, "cost": f"{HERE}:header_cost"}]
    asgi, _, _ = limited(rules=rules)
    headers = {"x-cost": "6", "x-status": "200", "accept": accept}
    never = await request(asgi, headers=headers)
    assert never.status == 429 and never.header("retry-after") is None
    assert b"retry in" not in never.body
    assert (b'"retry_after":null' in never.body) == (accept == "application/json")
    for _ in range(5):  # a request that fits, then waits, is promised a retry
        await request(asgi, headers={**headers, "x-cost": "1"})
    later = await request(asgi, headers={**headers, "x-cost": "1"})
    assert later.status == 429 and later.header("retry-after") == "6"


def test_a_fixed_cost_above_the_burst_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match=r"^rules\[0\]\.cost: 6 is more than the burst \(5\)"):
        RateLimitMiddleware(SignIn(), rules=[{"rate": "10/minute", "burst": 5, "cost": 6}])
    RateLimitMiddleware(SignIn(), rules=[{"rate": "10/minute", "burst": 5, "cost": 5}])


# ---- a rate function's plain rate gets the rule's burst ------------------------------------


def hundred_a_minute(scope: Scope) -> object:
    return "100/minute"


def with_own_burst(scope: Scope) -> object:
    return ("100/minute", 4)


async def test_a_rate_functions_plain_rate_gets_the_rules_burst() -> None:
    rules = [{"rate": hundred_a_minute, "burst": 2}]
    asgi, _, _ = limited(rules=rules)
    ok = {"x-status": "200"}
    assert [(await request(asgi, headers=ok)).status for _ in range(4)] == [200, 200, 429, 429]
    own, _, _ = limited(rules=[{"rate": with_own_burst, "burst": 2}])  # its own burst wins
    assert [(await request(own, headers=ok)).status for _ in range(5)] == [200] * 4 + [429]
    bare, _, _ = limited(rules=[{"rate": hundred_a_minute}])  # no burst: the count
    assert [(await request(bare, headers=ok)).status for _ in range(5)] == [200] * 5


def test_a_rate_functions_burst_is_checked_at_start_up() -> None:
    with pytest.raises(ValueError, match=r"^rules\[0\]\.burst: "):
        RateLimitMiddleware(SignIn(), rules=[{"rate": hundred_a_minute, "burst": 0}])


# ---- the metrics hold no meter provider --------------------------------------------------


def test_meter_providers_are_not_kept_alive() -> None:
    refs = []
    for _ in range(20):
        provider = MeterProvider(shutdown_on_exit=False)  # no atexit hook holding it
        RateLimitMiddleware(SignIn(), rate="10/second", meter_provider=provider)
        refs.append(weakref.ref(provider))
        del provider
    gc.collect()
    assert [ref for ref in refs if ref() is not None] == []


freed: list[int] = []


class SlottedProvider:
    """A provider that takes no weak reference; counts its meters and its end."""

    __slots__ = ("inner", "meters")

    def __init__(self) -> None:
        self.inner = NoOpMeterProvider()
        self.meters = 0

    def get_meter(self, *args: Any, **kwargs: Any) -> Any:
        self.meters += 1
        return self.inner.get_meter(*args, **kwargs)

    def __del__(self, freed: list[int] = freed) -> None:  # kept past module teardown
        freed.append(1)


def test_providers_without_weak_references_are_held_boundedly() -> None:
    freed.clear()
    providers = [SlottedProvider() for _ in range(100)]
    for provider in providers:
        for _ in range(2):  # one counter per provider, however many middleware
            RateLimitMiddleware(SignIn(), rate="10/second", meter_provider=provider)
    assert {provider.meters for provider in providers} == {1}
    del providers, provider
    gc.collect()
    assert len(freed) >= 100 - 64  # all but the most recent few are let go
