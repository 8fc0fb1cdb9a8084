"""The adaptive limit: the gradient controller on a virtual clock (exact steps, and a
simulated server whose latency grows past its knee), then the middleware in real time."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from asgikit.answers import decide
from asgikit.contract import enforce
from asgikit.middleware.concurrency_limit import (
    ConcurrencyLimitMiddleware,
    GradientController,
    GradientParams,
)
from asgikit.middleware.concurrency_limit.adaptive import build_params, percentile
from asgikit.middleware.concurrency_limit.groups import Group
from asgikit.scopes import DECISION_KEY
from asgikit.testing import http_scope, request, websocket
from asgikit.types import Receive, Scope, Send

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def controller(clock: Clock, rand: Callable[[], float] = lambda: 0.0, **params: Any) -> Any:
    return GradientController(build_params(params), clock, rand)


def measured(clock: Clock, rtt: float = 0.01, **params: Any) -> Any:
    """A controller whose first min RTT window has ended with *rtt*."""
    c = controller(clock, **params)
    for _ in range(c.params.min_rtt_requests):  # or fewer: a window lasts a second at most
        clock.now += rtt
        c.sample(clock.now - rtt, 1)
        if not c.measuring:
            break
    assert not c.measuring
    return c


def interval(c: Any, clock: Clock, rtt: float, in_flight: int, count: int = 10) -> bool:
    """*count* requests admitted now that take *rtt* and end after one sample interval:
    whether the limit changed."""
    end = clock.now + max(rtt, c.params.sample_interval) * 1.01
    changed = False
    for index in range(count):
        clock.now = end + index * 1e-6
        changed = c.sample(clock.now - rtt, in_flight) or changed
    return changed


# ---- parameters -------------------------------------------------------------------------


def test_defaults_are_envoys_where_envoy_has_them() -> None:
    assert build_params(None) == GradientParams()
    p = GradientParams()
    assert (p.min_limit, p.max_limit, p.min_rtt_requests) == (3, 1000, 50)
    assert (p.jitter, p.buffer, p.percentile) == (0.1, 0.25, 50.0)


def test_the_initial_limit_defaults_within_the_bounds() -> None:
    assert build_params({"max_limit": 5}).initial_limit == 5
    assert build_params({"min_limit": 40}).initial_limit == 40


@pytest.mark.parametrize(
    ("spec", "error", "start"),
    [
        ([1], TypeError, "gradient:"),
        ({"limit": 1}, ValueError, "gradient: unknown parameter 'limit'"),
        ({"min_limit": 0}, ValueError, "gradient.min_limit"),
        ({"min_limit": 5, "max_limit": 4}, ValueError, "gradient.max_limit"),
        ({"initial_limit": 2000}, ValueError, "gradient.initial_limit"),
        ({"sample_interval": 0}, ValueError, "gradient.sample_interval"),
        ({"percentile": 101}, ValueError, "gradient.percentile"),
        ({"min_rtt_interval": -1}, ValueError, "gradient.min_rtt_interval"),
        ({"min_rtt_requests": 0}, ValueError, "gradient.min_rtt_requests"),
        ({"jitter": 2}, ValueError, "gradient.jitter"),
        ({"buffer": -0.1}, ValueError, "gradient.buffer"),
    ],
)
def test_bad_parameters(spec: Any, error: type[Exception], start: str) -> None:
    with pytest.raises(error) as raised:
        build_params(spec)
    assert str(raised.value).startswith(start)


def test_percentile_is_nearest_rank() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(list(values), 50) == 3.0
    assert percentile(list(values), 100) == 5.0
    assert percentile(list(values), 1) == 1.0
    assert percentile([7.0], 90) == 7.0


# ---- the controller, step by step -------------------------------------------------------


def test_the_first_window_pins_the_limit_then_restores_the_initial_limit() -> None:
    clock = Clock()
    c = controller(clock, min_rtt_requests=3)
    assert (c.limit, c.measuring, c.min_rtt) == (3, True, None)
    for rtt in (0.03, 0.01):
        clock.now += 0.1
        assert not c.sample(clock.now - rtt, 1)
    clock.now += 0.1
    assert c.sample(clock.now - 0.02, 1)  # the third sample ends the window
    assert (c.limit, c.measuring) == (20, False)
    assert c.min_rtt == pytest.approx(0.02)


def test_latency_within_the_buffer_grows_the_limit_with_headroom() -> None:
    clock = Clock()
    c = measured(clock, 0.01)
    clock.now += 0.01
    assert not c.sample(clock.now - 0.01, 20)  # a sample within the interval: no change
    assert interval(c, clock, 0.01, in_flight=20)
    # gradient 1.25 (the buffer): 20 * 1.25 = 25, plus sqrt(25) = 30.
    assert c.limit == 30
    assert c.sample_rtt == pytest.approx(0.01)


def test_growth_stops_at_twice_the_demand() -> None:
    clock = Clock()
    c = measured(clock, 0.01)
    assert interval(c, clock, 0.01, in_flight=12)
    assert c.limit == 24
    assert not interval(c, clock, 0.01, in_flight=6)  # demand fell: no growth, no shrink
    assert c.limit == 24


def test_latency_above_the_buffer_shrinks_the_limit_by_half_at_most() -> None:
    clock = Clock()
    c = measured(clock, 0.01)
    assert interval(c, clock, 0.025, in_flight=20)
    # gradient 0.0125 / 0.025 = 0.5: 20 * 0.5 = 10, plus sqrt(10) = 13.
    assert c.limit == 13
    assert interval(c, clock, 1.0, in_flight=13)  # far slower: still only halved
    assert c.limit == 9


def test_a_slow_app_is_updated_every_three_min_rtts() -> None:
    """Latencies of an interval shorter than a request would judge an older limit."""
    clock = Clock()
    c = measured(clock, 0.5)
    clock.now += 1.4  # fourteen sample intervals, under three min RTTs
    assert not c.sample(clock.now - 0.5, 20)
    clock.now += 0.2
    assert c.sample(clock.now - 0.5, 20)
    assert c.limit == 30


def test_the_limit_stays_within_its_bounds() -> None:
    clock = Clock()
    c = measured(clock, 0.01, max_limit=25, min_limit=2, min_rtt_interval=1000.0)
    assert interval(c, clock, 0.001, in_flight=100)
    assert c.limit == 25
    for _ in range(9):  # halved, plus headroom, each time: 25 16 10 7 5 4 3 2 2
        interval(c, clock, 10.0, in_flight=25)
    assert c.limit == 2


def test_five_updates_at_the_floor_start_a_new_min_rtt_window() -> None:
    clock = Clock()
    c = measured(clock, 0.01, initial_limit=3, min_rtt_requests=5)
    for _ in range(4):
        interval(c, clock, 1.0, in_flight=3)
        assert not c.measuring and c.limit == 3
    interval(c, clock, 1.0, in_flight=3)
    assert c.measuring  # the app became slower for good: measure it again
    started = clock.now
    # A request admitted before the window does not count in it.
    assert not c.sample(started - 5.0, 3)
    for _ in range(5):
        clock.now += 1.0
        c.sample(clock.now - 1.0, 1)
    assert (c.measuring, c.min_rtt, c.limit) == (False, 1.0, 3)


def test_a_new_window_starts_every_interval_with_jitter() -> None:
    clock = Clock()
    c = controller(clock, lambda: 0.5, min_rtt_requests=1, min_rtt_interval=10.0, jitter=0.2)
    clock.now = 1.0
    c.sample(0.99, 1)
    assert c.limit == 20
    clock.now = 1.0 + 10.0 * 1.1 - 0.01  # the interval plus half the jitter, not yet
    c.sample(clock.now - 0.01, 10)  # an update: no growth past twice the demand
    assert not c.measuring
    clock.now += 0.02
    assert c.sample(clock.now - 0.01, 20)
    assert c.measuring and c.limit == 3
    clock.now += 0.02
    assert c.sample(clock.now - 0.01, 1)
    assert c.limit == 20  # the limit from before the window


def test_a_busy_interval_keeps_a_bounded_sample() -> None:
    clock = Clock()
    c = measured(clock, 0.01)
    rand = random.Random(7)
    c2 = GradientController(c.params, clock, rand.random)
    for _ in range(50):
        clock.now += 0.001
        c2.sample(clock.now - 0.01, 1)
    for i in range(25_000):  # 10 000 fast samples, then 15 000 slow: the slow dominate
        clock.now += 1e-9
        c2.sample(clock.now - (0.01 if i < 10_000 else 0.04), 20)
    clock.now += 1.0
    assert c2.sample(clock.now - 0.04, 20)
    assert c2.sample_rtt == pytest.approx(0.04)
    assert c2.limit < 20


# ---- a simulated server: latency = base * max(1, in_flight / knee) ----------------------


def simulate(
    phases: list[tuple[float, int, int]], base: float = 0.02, seed: int = 1
) -> list[tuple[int, int]]:
    """Closed-loop clients against a server with *knee* workers, through the controller.

    Each phase is ``(seconds, knee, clients)``; a client over the limit is refused and
    retries after a pause. Returns, per phase, the least and greatest limit over its
    second half. Virtual time: a simulated minute takes a fraction of a second.
    """
    rand = random.Random(seed)
    clock = Clock()
    c = GradientController(GradientParams(), clock, rand.random)
    in_flight, order = 0, 0
    events: list[tuple[float, int, float | None]] = []
    end, found = 0.0, []
    for seconds, knee, clients in phases:
        begin, end = end, end + seconds
        events = [e for e in events if e[2] is not None]  # the old clients leave
        for _ in range(clients):
            order += 1
            heapq.heappush(events, (begin + rand.random() * 0.005, order, None))
        limits = []
        while events and events[0][0] < end:
            clock.now, _, started = heapq.heappop(events)
            order += 1
            if started is not None:  # a response: sample, then the client comes back
                c.sample(started, in_flight)
                in_flight -= 1
                heapq.heappush(events, (clock.now + rand.random() * 0.005, order, None))
            elif in_flight < c.limit:
                in_flight += 1
                latency = base * max(1.0, in_flight / knee)
                heapq.heappush(events, (clock.now + latency, order, clock.now))
            else:
                heapq.heappush(events, (clock.now + 0.005, order, None))
            if clock.now > begin + seconds / 2:
                limits.append(c.limit)
        found.append((min(limits), max(limits)))
    return found


@pytest.mark.parametrize("knee", [4, 10, 32])
def test_under_overload_the_limit_settles_between_the_knee_and_twice_it(knee: int) -> None:
    [(low, high)] = simulate([(20.0, knee, 8 * knee)])
    assert knee <= low <= high <= 2 * knee


def test_the_limit_follows_the_server_down_and_grows_back() -> None:
    found = simulate([(10.0, 10, 64), (10.0, 3, 64), (10.0, 10, 64), (10.0, 25, 64)])
    healthy, degraded, recovered, grown = found
    assert 10 <= healthy[0] <= healthy[1] <= 20
    assert 3 <= degraded[0] <= degraded[1] <= 6  # capacity fell: the limit with it
    assert 10 <= recovered[0] <= recovered[1] <= 20  # and it grows back
    assert 25 <= grown[0] <= grown[1] <= 50


def test_when_the_load_drops_the_limit_never_falls_below_the_demand() -> None:
    [_, light] = simulate([(10.0, 10, 64), (10.0, 10, 6)])
    assert light[0] >= 6  # six clients are never refused


# ---- the middleware, adaptive -----------------------------------------------------------


def test_retry_after_and_the_default_wait_follow_the_latency() -> None:
    clock = Clock()
    group = Group("g", measured(clock, 0.4, min_rtt_requests=2), queue_size=1, max_wait=None)
    assert group.wait_budget() == pytest.approx(0.1)  # buffer 0.25 x min RTT 0.4
    assert group.retry_after() == 1
    group.in_flight = 20
    interval(group.controller, clock, 2.5, in_flight=20)
    assert group.retry_after() == 3
    fixed = Group("f", 2, queue_size=1, max_wait=None)
    assert (fixed.wait_budget(), fixed.retry_after()) == (1.0, 1)
    unmeasured = Group("u", controller(clock), queue_size=1, max_wait=None)
    assert unmeasured.wait_budget() == 1.0


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.close", "code": 1000})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_limit_changes_are_logged_at_debug_level() -> None:
    app = enforce(ConcurrencyLimitMiddleware(enforce(ok), gradient={"min_rtt_requests": 2}))
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            assert (await request(app)).status == 200
    [changed] = [e for e in logs if e["event"] == "concurrency_limit.limit_changed"]
    assert changed["log_level"] == "debug"
    assert (changed["group"], changed["previous"], changed["limit"]) == ("default", 3, 20)
    assert changed["measuring"] is False and changed["min_rtt"] > 0


async def test_an_adaptive_group_gives_back_slots_of_failures_and_websockets() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/fail":
            raise RuntimeError("boom")
        await ok(scope, receive, send)

    middleware = ConcurrencyLimitMiddleware(
        enforce(app), include_websockets=True, gradient={"min_limit": 1}, queue_size=0
    )
    wrapped = enforce(middleware)
    for _ in range(3):  # the limit is 1 while the first window measures
        with pytest.raises(RuntimeError):
            await request(wrapped, "GET", "/fail")
        await websocket(wrapped, "/ws")
    assert (await request(wrapped)).status == 200


async def test_an_adaptive_group_hands_a_freed_slot_to_its_first_waiter() -> None:
    release = anyio.Event()
    entered: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        entered.append(scope["path"])
        await release.wait()
        if scope["path"] == "/fail":
            raise RuntimeError("boom")
        await ok(scope, receive, send)

    wrapped = enforce(
        ConcurrencyLimitMiddleware(
            enforce(app), gradient={"min_limit": 1}, queue_size=2, max_wait=30
        )
    )
    statuses: list[int] = []

    async def call(path: str) -> None:
        response = await request(wrapped, "GET", path, raise_app_exceptions=False)
        statuses.append(response.status if response.started else 0)

    async with anyio.create_task_group() as tasks:
        for path in ("/fail", "/a", "/b"):
            tasks.start_soon(call, path)
            await anyio.wait_all_tasks_blocked()
        assert entered == ["/fail"]  # the limit is 1 while the first window measures
        release.set()
    assert entered == ["/fail", "/a", "/b"]
    assert sorted(statuses) == [0, 200, 200]


@pytest.mark.parametrize(("decision", "sampled"), [("rate_limited", False), ("timed_out", True)])
async def test_an_inner_layers_own_answer_is_not_the_apps_latency(
    decision: str, sampled: bool
) -> None:
    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        decide(scope, decision)
        await ok(scope, receive, send)

    reader = InMemoryMetricReader()
    app = enforce(
        ConcurrencyLimitMiddleware(
            enforce(inner),
            gradient={"min_rtt_requests": 2},
            meter_provider=MeterProvider(metric_readers=[reader]),
        )
    )
    for _ in range(3):
        scope = http_scope("GET", "/")
        scope[DECISION_KEY] = {}  # an access log outside
        await request(app, scope=scope)
    assert await request(app) is not None  # no observer: sampled
    [limit] = limits(reader)
    # Two samples end the first window (limit 3 -> 20): only the timeouts and the last.
    assert limit == (20 if sampled else 3)


def limits(reader: InMemoryMetricReader) -> list[float]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "asgikit.concurrency.limit"
        for point in metric.data.data_points
    ]


async def test_real_time_overload_finds_a_limit_near_the_knee() -> None:
    """A server with 4 workers and 20 ms of work, 40 clients: the limit learnt stays
    far below the clients (the initial limit is 20), and the excess gets 503s."""
    knee, service = 4, 0.02
    workers = anyio.Semaphore(knee)

    async def server(scope: Scope, receive: Receive, send: Send) -> None:
        async with workers:
            await anyio.sleep(service)
        await ok(scope, receive, send)

    reader = InMemoryMetricReader()
    app = enforce(
        ConcurrencyLimitMiddleware(
            enforce(server),
            queue_size=0,
            gradient={"sample_interval": 0.05, "min_rtt_requests": 10},
            meter_provider=MeterProvider(metric_readers=[reader]),
        )
    )
    statuses: list[int] = []

    async def client() -> None:
        while True:
            response = await request(app)
            statuses.append(response.status)
            if response.status == 503:
                await anyio.sleep(0.01)

    with anyio.move_on_after(1.5):
        async with anyio.create_task_group() as tasks:
            for _ in range(10 * knee):
                tasks.start_soon(client)
    [limit] = limits(reader)
    # Generous: the clients share the event loop, whose lag inflates the min RTT.
    assert limit <= 4 * knee
    assert statuses.count(200) > 20
    assert statuses.count(503) > 0
    assert set(statuses) == {200, 503}
