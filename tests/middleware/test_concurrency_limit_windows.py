"""The adaptive limit's min RTT windows with long requests in flight (streams, long
polls), the caps on what long latencies make of Retry-After and the wait, a failing
limit_changed hook, and the metrics of two middlewares on one meter provider."""

from __future__ import annotations

import gc
import logging
from typing import Any

import anyio
import pytest
import structlog

from asgikit.contract import enforce
from asgikit.middleware.concurrency_limit import ConcurrencyLimitMiddleware, GradientController
from asgikit.middleware.concurrency_limit.adaptive import build_params
from asgikit.middleware.concurrency_limit.groups import Group
from asgikit.testing import request, websocket
from asgikit.types import Receive, Scope, Send

from .test_concurrency_limit import Meter

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def controller(clock: Clock, **params: Any) -> GradientController:
    return GradientController(build_params(params), clock, lambda: 0.0)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """/long stays open (a stream) until cancelled; the rest take a millisecond."""
    if scope["type"] == "websocket":
        await receive()
        await anyio.sleep_forever()
    await anyio.sleep(3600 if scope["path"] == "/long" else 0.001)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


# ---- the controller --------------------------------------------------------------------


def test_a_window_closes_after_a_second_with_the_samples_it_has() -> None:
    clock = Clock()
    c = controller(clock)
    for _ in range(3):
        clock.now += 0.2
        assert not c.sample(clock.now - 0.01, 1)
    assert c.measuring  # three samples of fifty, 0.4 s after the first
    clock.now += 0.7  # a second after the first sample
    assert c.sample(clock.now - 0.02, 1)
    assert (c.measuring, c.limit) == (False, 20)
    assert c.min_rtt == pytest.approx(0.01)


def test_a_window_that_measured_nothing_restores_the_limit_and_keeps_the_min_rtt() -> None:
    clock = Clock()
    c = controller(clock, min_rtt_requests=1, min_rtt_interval=10.0, jitter=0.0)
    clock.now += 0.01
    assert c.sample(clock.now - 0.01, 1)  # the first window: min RTT 10 ms
    clock.now += 10.0
    assert c.sample(clock.now - 10.0, 1)  # a new window opens: pinned to 3
    assert (c.measuring, c.limit) == (True, 3)
    assert not c.expire()  # not yet a second
    clock.now += 1.0
    assert c.expire()  # nothing admitted since completed: the limit in force before
    assert (c.measuring, c.limit) == (False, 20)
    assert c.min_rtt == pytest.approx(0.01)
    assert not c.expire()  # no window open


def test_a_first_window_that_measured_nothing_leaves_the_initial_limit_fixed() -> None:
    clock = Clock()
    c = controller(clock, min_rtt_interval=10.0, jitter=0.0)
    assert not c.expire()  # the first window's second starts now
    clock.now += 1.0
    assert c.expire()
    assert (c.measuring, c.limit, c.min_rtt) == (False, 20, None)
    clock.now += 5.0
    assert not c.sample(clock.now - 5.0, 30)  # no min RTT: nothing to judge latency by
    assert c.limit == 20
    clock.now += 5.0
    assert c.sample(clock.now - 0.01, 1)  # the next window, after min_rtt_interval
    assert c.measuring


def test_long_latencies_cap_retry_after_and_the_default_wait() -> None:
    clock = Clock()
    c = controller(clock, min_rtt_requests=1)
    clock.now += 600.0
    c.sample(clock.now - 600.0, 1)  # a ten-minute stream measured as the min RTT
    group = Group("g", c, queue_size=1, max_wait=None)
    assert group.retry_after() == 60
    assert group.wait_budget() == 1.0


# ---- the middleware --------------------------------------------------------------------


async def test_requests_in_flight_when_a_window_opens_do_not_starve_it() -> None:
    wrapped = enforce(
        ConcurrencyLimitMiddleware(
            enforce(app),
            include_websockets=True,
            gradient={"min_rtt_interval": 0.2, "jitter": 0.0, "min_rtt_requests": 5},
        )
    )
    async with anyio.create_task_group() as tasks:
        for _ in range(5):
            assert (await request(wrapped, "GET", "/fast")).status == 200  # first window
        for _ in range(3):
            tasks.start_soon(request, wrapped, "GET", "/long")
        tasks.start_soon(websocket, wrapped, "/ws")
        await anyio.sleep(0.3)  # past min_rtt_interval: the next completion opens a window
        statuses = [(await request(wrapped, "GET", "/fast")).status for _ in range(20)]
        tasks.cancel_scope.cancel()
    # Before: the window pinned the limit to 3 with 4 slots held, and refused all.
    assert statuses == [200] * 20


async def test_long_requests_admitted_in_the_first_window_hold_it_a_second_at_most() -> None:
    wrapped = enforce(ConcurrencyLimitMiddleware(enforce(app), queue_size=4))
    statuses: list[int] = []

    async def fast() -> None:
        statuses.append((await request(wrapped, "GET", "/fast")).status)

    async with anyio.create_task_group() as tasks:
        for _ in range(3):  # min_limit: the first window's every slot
            tasks.start_soon(request, wrapped, "GET", "/long")
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(30):
            async with anyio.create_task_group() as inner:
                for _ in range(4):
                    inner.start_soon(fast)
        tasks.cancel_scope.cancel()
    # The queued ones waited for the window's end (a second) and got in; before, the
    # window never closed and every request got a 503.
    assert statuses == [200] * 4


class Broken:
    """A structlog logger whose output fails (a closed stdout)."""

    def msg(self, *args: Any, **kwargs: Any) -> None:
        raise BrokenPipeError("stdout closed")

    debug = info = warning = error = msg


async def test_a_request_after_a_window_timed_out_with_nobody_queued_gets_in() -> None:
    wrapped = enforce(ConcurrencyLimitMiddleware(enforce(app), queue_size=0))
    async with anyio.create_task_group() as tasks:
        for _ in range(3):
            tasks.start_soon(request, wrapped, "GET", "/long")
        await anyio.wait_all_tasks_blocked()
        assert (await request(wrapped, "GET", "/fast")).status == 503  # the window's second
        await anyio.sleep(1.1)
        assert (await request(wrapped, "GET", "/fast")).status == 200
        tasks.cancel_scope.cancel()


async def test_a_failing_limit_changed_log_costs_no_slot_and_no_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrapped = enforce(ConcurrencyLimitMiddleware(enforce(app), gradient={"min_rtt_requests": 1}))
    structlog.configure(logger_factory=lambda *args: Broken(), cache_logger_on_first_use=False)
    try:
        with caplog.at_level(logging.ERROR, "asgikit.concurrency_limit"):
            statuses = [(await request(wrapped, "GET", "/fast")).status for _ in range(3)]
    finally:
        structlog.reset_defaults()
    assert statuses == [200] * 3  # before, the first raised BrokenPipeError
    [record] = caplog.records  # logged once, with the hook's exception
    assert record.exc_info is not None and record.exc_info[0] is BrokenPipeError


def test_a_failing_hook_gives_the_slot_back_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    c = controller(clock, min_rtt_requests=1, min_rtt_interval=10.0, jitter=0.0)
    group = Group("g", c, queue_size=0, max_wait=None)

    def broken(group: Group, previous: int) -> None:
        raise RuntimeError("hook")

    group.on_change = broken
    with caplog.at_level(logging.ERROR, "asgikit.concurrency_limit"):
        group.in_flight = 2
        clock.now += 0.01
        group.finished(clock.now - 0.01, {"type": "http"})  # the window ends: 3 -> 20
        assert (group.in_flight, group.limit) == (1, 20)
        clock.now += 10.0
        group.finished(clock.now - 0.01, {"type": "http"})  # a window opens: 3 + 1 apart
        assert (group.in_flight, group.limit) == (0, 3)
    assert len(caplog.records) == 1


def test_a_window_that_leaves_the_limit_as_it_was_still_sets_apart_the_requests() -> None:
    clock = Clock()
    c = controller(clock, min_rtt_requests=1, initial_limit=5, min_rtt_interval=10.0, jitter=0.0)
    group = Group("g", c, queue_size=0, max_wait=None)
    group.in_flight = 1
    clock.now += 0.01
    group.finished(clock.now - 0.01, {"type": "http"})
    assert group.limit == 5
    group.in_flight = 2  # a long request, and the one that ends now
    clock.now += 10.0
    group.finished(clock.now - 0.01, {"type": "http"})  # a window opens: 3 + 2 apart
    assert (group.in_flight, group.limit) == (1, 4)  # the one that ended is not apart
    group.release(clock.now - 60.0)  # the long one, admitted before the window, ends
    assert (group.in_flight, group.limit) == (0, 3)
    group.in_flight = 1
    group.release(clock.now + 0.5)  # one admitted in the window frees a window slot
    assert (group.in_flight, group.limit) == (0, 3)


async def test_a_window_that_timed_out_on_a_full_group_still_refuses() -> None:
    clock = Clock()
    group = Group("g", controller(clock, initial_limit=3), queue_size=0, max_wait=None)
    group.in_flight = 3
    assert await group.wait() == "queue_full"  # the first window's second starts
    clock.now += 1.0
    assert await group.wait() == "queue_full"  # closed, but the initial limit is full too
    assert group.controller is not None and not group.controller.measuring


async def test_two_middlewares_on_one_meter_provider_are_both_observed() -> None:
    meter = Meter()
    first = ConcurrencyLimitMiddleware(app, max_concurrency=5, meter_provider=meter.provider)
    second = ConcurrencyLimitMiddleware(
        app,
        max_concurrency=7,
        rules=[{"name": "api", "path": "/api", "max_concurrency": 2}],
        meter_provider=meter.provider,
    )
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(request, enforce(second), "GET", "/api/long")
        tasks.start_soon(request, enforce(first), "GET", "/long")
        tasks.start_soon(request, enforce(second), "GET", "/long")
        await anyio.wait_all_tasks_blocked()
        # Same-named groups add up; before, only the first middleware was observed.
        assert meter.values("asgikit.concurrency.limit") == {"default": 12, "api": 2}
        assert meter.values("asgikit.concurrency.in_flight") == {"default": 2, "api": 1}
        tasks.cancel_scope.cancel()
    del first
    gc.collect()
    assert meter.values("asgikit.concurrency.limit") == {"default": 7, "api": 2}
