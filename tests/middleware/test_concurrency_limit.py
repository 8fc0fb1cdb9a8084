"""ConcurrencyLimitMiddleware with fixed limits: slots, the FIFO queue, 503s, groups,
websockets, no leaked slot (exceptions, cancellation, disconnects), metrics and logs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import structlog
from anyio import wait_all_tasks_blocked
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from asgikit.answers import DECISION_FIELD, DETAILS
from asgikit.contract import enforce
from asgikit.middleware.concurrency_limit import ConcurrencyLimitMiddleware
from asgikit.scopes import DECISION_KEY
from asgikit.testing import Response, http_scope, request, websocket
from asgikit.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.anyio


class Gate:
    """An app whose requests wait until released; it records the order they enter."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self.open = anyio.Event()
        self.fail: BaseException | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            self.entered.append(scope["path"])
            await self.open.wait()
            await send({"type": "websocket.close", "code": 1000})
            return
        self.entered.append(scope["path"] + "?" + scope["query_string"].decode())
        await self.open.wait()
        if self.fail is not None:
            raise self.fail
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Meter:
    """An SDK meter provider with an in-memory reader."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def values(self, name: str) -> dict[str, float]:
        data = self.reader.get_metrics_data()
        found: dict[str, float] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            found[str(point.attributes["asgikit.concurrency.group"])] = point.value
        return found


def limited(app: ASGIApp, **options: Any) -> ASGIApp:
    return enforce(ConcurrencyLimitMiddleware(enforce(app), **options))


async def ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def concurrently(
    calls: list[Callable[[], Awaitable[Response]]], gate: Gate
) -> list[Response]:
    """Start *calls* one after another (each reaches its waiting point before the next
    starts), open the gate, and return their responses in order."""
    results: list[Response | None] = [None] * len(calls)

    async def run(index: int) -> None:
        results[index] = await calls[index]()

    async with anyio.create_task_group() as tasks:
        for index in range(len(calls)):
            tasks.start_soon(run, index)
            await wait_all_tasks_blocked()
        gate.open.set()
    return [r for r in results if r is not None]


def get(app: ASGIApp, path: str = "/", **kwargs: Any) -> Callable[[], Awaitable[Response]]:
    return lambda: request(app, "GET", path, **kwargs)


# ---- construction ------------------------------------------------------------------------


def test_constructible_with_no_options() -> None:
    ConcurrencyLimitMiddleware(ok_app)


@pytest.mark.parametrize(
    ("options", "error", "start"),
    [
        ({"max_concurrency": 0}, ValueError, "max_concurrency"),
        ({"max_concurrency": "many"}, ValueError, "max_concurrency"),
        ({"max_concurrency": 2.5}, TypeError, "max_concurrency"),
        ({"queue_size": -1}, ValueError, "queue_size"),
        ({"max_wait": 0}, ValueError, "max_wait"),
        ({"retry_after": 0}, ValueError, "retry_after"),
        ({"include_websockets": 1}, TypeError, "include_websockets"),
        ({"log_interval": -1}, ValueError, "log_interval"),
        ({"meter_provider": object()}, TypeError, "meter_provider"),
        ({"exclude_paths": ["health"]}, ValueError, "exclude_paths"),
        ({"gradient": {"min_limit": 0}}, ValueError, "gradient.min_limit"),
        ({"rules": {"path": "/a"}}, TypeError, "rules"),
        ({"rules": ["/a"]}, TypeError, "rules[0]"),
        ({"rules": [{"path": "/a"}]}, ValueError, "rules[0].max_concurrency"),
        ({"rules": [{"path": "/a", "route": "/a", "max_concurrency": 1}]}, ValueError, "rules[0]"),
        ({"rules": [{"path": "a", "max_concurrency": 1}]}, ValueError, "rules[0].path"),
        ({"rules": [{"route": 3, "max_concurrency": 1}]}, ValueError, "rules[0].route"),
        ({"rules": [{"route": "a/{b}", "max_concurrency": 1}]}, ValueError, "rules[0].route"),
        ({"rules": [{"route": "/{b:x}", "max_concurrency": 1}]}, ValueError, "rules[0].route"),
        ({"rules": [{"route": "/{b", "max_concurrency": 1}]}, ValueError, "rules[0].route"),
        ({"rules": [{"path": "/a", "max_concurrency": 1, "x": 1}]}, ValueError, "rules[0]"),
        (
            {"rules": [{"path": "/a", "max_concurrency": 1, "name": ""}]},
            ValueError,
            "rules[0].name",
        ),
        (
            {"rules": [{"path": "/a", "max_concurrency": 1, "name": "default"}]},
            ValueError,
            "rules[0].name",
        ),
        (
            {
                "rules": [
                    {"path": "/a", "max_concurrency": 1},
                    {"path": "/a", "max_concurrency": 2},
                ]
            },
            ValueError,
            "rules[1].name",
        ),
        (
            {"rules": [{"path": "/a", "max_concurrency": 1, "methods": "GET"}]},
            TypeError,
            "rules[0]",
        ),
        ({"rules": [{"path": "/a", "max_concurrency": 1, "methods": []}]}, ValueError, "rules[0]"),
        (
            {"rules": [{"path": "/a", "max_concurrency": 1, "methods": ["G T"]}]},
            ValueError,
            "rules[0].methods",
        ),
        (
            {"rules": [{"path": "/a", "max_concurrency": 1, "queue_size": -1}]},
            ValueError,
            "rules[0]",
        ),
        ({"rules": [{"path": "/a", "max_concurrency": 1, "max_wait": -1}]}, ValueError, "rules[0]"),
    ],
)
def test_bad_options_fail_at_start_up_naming_the_option(
    options: dict[str, Any], error: type[Exception], start: str
) -> None:
    with pytest.raises(error) as raised:
        ConcurrencyLimitMiddleware(ok_app, **options)
    assert str(raised.value).startswith(start)


# ---- the fast path and pass-through ------------------------------------------------------


async def test_under_the_limit_the_app_gets_the_original_receive_and_send() -> None:
    seen: list[tuple[Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((receive, send))
        await ok_app(scope, receive, send)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    middleware = ConcurrencyLimitMiddleware(app, max_concurrency=2)
    await middleware(http_scope("GET", "/"), receive, send)
    assert seen == [(receive, send)]
    assert sent[0]["status"] == 200


@pytest.mark.parametrize("max_concurrency", [None, "off"])
async def test_no_default_limit_leaves_unmatched_requests_alone(max_concurrency: Any) -> None:
    gate = Gate()
    app = limited(gate, max_concurrency=max_concurrency, queue_size=0)
    responses = await concurrently([get(app) for _ in range(5)], gate)
    assert [r.status for r in responses] == [200] * 5


async def test_lifespan_and_websockets_pass_through_by_default() -> None:
    gate = Gate()
    gate.open.set()
    app = limited(gate, max_concurrency=1, queue_size=0)
    async with anyio.create_task_group() as tasks:
        for _ in range(3):
            tasks.start_soon(websocket, app, "/ws")
    assert gate.entered == ["/ws"] * 3


# ---- the limit, the queue, the 503 ------------------------------------------------------


async def test_over_the_limit_with_no_queue_a_fast_503_with_retry_after() -> None:
    gate = Gate()
    app = limited(gate, max_concurrency=2, queue_size=0)
    responses = await concurrently([get(app, f"/?{i}") for i in range(4)], gate)
    assert [r.status for r in responses] == [200, 200, 503, 503]
    shed = responses[2]
    assert shed.header("retry-after") == "1"
    assert shed.header("content-type") == "text/plain; charset=utf-8"
    assert shed.text == "Service Unavailable: too many requests in flight, retry later.\n"
    assert gate.entered == ["/?0", "/?1"]


async def test_queued_requests_are_served_first_come_first_served() -> None:
    gate = Gate()
    app = limited(gate, max_concurrency=1, queue_size=3, max_wait=30)
    responses = await concurrently([get(app, f"/?{i}") for i in range(4)], gate)
    assert [r.status for r in responses] == [200] * 4
    assert gate.entered == ["/?0", "/?1", "/?2", "/?3"]


async def test_a_full_queue_sheds_the_newcomer_not_the_waiters() -> None:
    gate = Gate()
    app = limited(gate, max_concurrency=1, queue_size=2, max_wait=30)
    responses = await concurrently([get(app, f"/?{i}") for i in range(5)], gate)
    assert [r.status for r in responses] == [200, 200, 200, 503, 503]


async def test_a_request_waits_at_most_max_wait() -> None:
    gate = Gate()
    app = limited(gate, max_concurrency=1, queue_size=4, max_wait=0.05)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(request, app)
        await wait_all_tasks_blocked()
        begin = anyio.current_time()
        response = await request(app, "GET", "/?late")
        waited = anyio.current_time() - begin
        gate.open.set()
    assert response.status == 503
    assert waited >= 0.05
    assert gate.entered == ["/?"]


async def test_a_fixed_retry_after_is_sent_as_configured() -> None:
    gate = Gate()
    app = limited(gate, max_concurrency=1, queue_size=0, retry_after=7)
    responses = await concurrently([get(app), get(app)], gate)
    assert responses[1].header("retry-after") == "7"


async def test_the_shed_decision_is_recorded_for_the_access_log() -> None:
    gate = Gate()
    app = limited(gate, max_concurrency=1, queue_size=0)
    holder: dict[str, Any] = {}
    scope = http_scope("GET", "/")
    scope[DECISION_KEY] = holder
    responses = await concurrently([get(app), lambda: request(app, scope=scope)], gate)
    assert responses[1].status == 503
    assert holder[DECISION_FIELD] == "shed"
    assert holder[DETAILS] == {
        "concurrency.group": "default",
        "concurrency.reason": "queue_full",
        "concurrency.limit": 1,
        "concurrency.in_flight": 1,
        "concurrency.queued": 0,
    }


async def test_a_wait_that_runs_out_is_recorded_as_such() -> None:
    gate = Gate()
    app = limited(gate, max_concurrency=1, queue_size=1, max_wait=0.01)
    holder: dict[str, Any] = {}
    scope = http_scope("GET", "/")
    scope[DECISION_KEY] = holder
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(request, app)
        await wait_all_tasks_blocked()
        assert (await request(app, scope=scope)).status == 503
        gate.open.set()
    assert holder[DETAILS]["concurrency.reason"] == "max_wait"


# ---- no leaked slot ---------------------------------------------------------------------


async def test_a_slot_is_given_back_when_the_app_raises() -> None:
    gate = Gate()
    gate.fail = RuntimeError("boom")
    app = limited(gate, max_concurrency=1, queue_size=0)
    gate.open.set()
    for _ in range(3):
        with pytest.raises(RuntimeError, match="boom"):
            await request(app)
    gate.fail = None
    assert (await request(app)).status == 200


async def test_a_slot_is_given_back_when_the_request_is_cancelled() -> None:
    gate = Gate()
    app = limited(gate, max_concurrency=1, queue_size=0)
    with anyio.move_on_after(0.01):
        await request(app)  # waits at the gate until cancelled
    gate.open.set()
    assert (await request(app)).status == 200


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    gate = Gate()
    meter = Meter()
    app = limited(gate, max_concurrency=1, queue_size=1, max_wait=30, meter_provider=meter.provider)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(request, app, "GET", "/?first")
        await wait_all_tasks_blocked()
        waiting = anyio.CancelScope()
        tasks.start_soon(_in_scope, waiting, request(app, "GET", "/?cancelled"))
        await wait_all_tasks_blocked()
        assert meter.values("asgikit.concurrency.queued") == {"default": 1}
        waiting.cancel()
        await wait_all_tasks_blocked()
        assert meter.values("asgikit.concurrency.queued") == {"default": 0}
        # The queue has room again: the next request waits instead of being shed.
        tasks.start_soon(request, app, "GET", "/?next")
        await wait_all_tasks_blocked()
        gate.open.set()
    assert gate.entered == ["/?first", "/?next"]
    assert meter.values("asgikit.concurrency.in_flight") == {"default": 0}


async def _in_scope(scope: anyio.CancelScope, call: Awaitable[Any]) -> None:
    with scope:
        await call


async def test_a_waiter_cancelled_as_its_slot_arrives_gives_the_slot_back() -> None:
    meter = Meter()
    waiting = anyio.CancelScope()
    hold = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await hold.wait()
        await ok_app(scope, receive, send)
        if scope["query_string"] == b"first":
            # No checkpoint between this and the slot's hand-over as the app returns:
            # the waiter is handed a slot it can no longer use.
            waiting.cancel()

    middleware = limited(
        app, max_concurrency=1, queue_size=1, max_wait=30, meter_provider=meter.provider
    )
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(request, middleware, "GET", "/?first")
        await wait_all_tasks_blocked()
        tasks.start_soon(_in_scope, waiting, request(middleware, "GET", "/?second"))
        await wait_all_tasks_blocked()
        hold.set()
    assert waiting.cancelled_caught
    assert meter.values("asgikit.concurrency.in_flight") == {"default": 0}
    assert (await request(middleware, "GET", "/?third")).status == 200


async def test_a_client_that_disconnects_while_queued_frees_its_place() -> None:
    gate = Gate()
    meter = Meter()
    app = limited(gate, max_concurrency=1, queue_size=1, max_wait=30, meter_provider=meter.provider)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(request, app, "GET", "/?first")
        await wait_all_tasks_blocked()
        with anyio.move_on_after(0.02):  # the server cancels the request of a gone client
            await request(app, "GET", "/?gone")
        assert meter.values("asgikit.concurrency.queued") == {"default": 0}
        gate.open.set()
    assert gate.entered == ["/?first"]


# ---- groups -----------------------------------------------------------------------------


async def test_each_rule_is_its_own_group_and_the_longest_path_wins() -> None:
    gate = Gate()
    rules = [
        {"path": "/reports", "max_concurrency": 1},
        {"name": "big", "path": "/reports/big", "max_concurrency": 2},
    ]
    app = limited(gate, max_concurrency=1, queue_size=0, rules=rules)
    paths = [
        "/",
        "/reports",
        "/reports/big/1",
        "/reports/big/2",
        "/reports/x",
        "/y",
        "/reports/big",
    ]
    responses = await concurrently([get(app, p) for p in paths], gate)
    assert [r.status for r in responses] == [200, 200, 200, 200, 503, 503, 503]


async def test_a_route_template_rule_and_methods() -> None:
    gate = Gate()
    rules = [{"route": "/items/{id:int}", "methods": ["POST"], "max_concurrency": 1}]
    app = limited(gate, max_concurrency=None, queue_size=0, rules=rules)
    calls = [
        lambda: request(app, "POST", "/items/1"),
        lambda: request(app, "POST", "/items/2"),  # same group: shed
        lambda: request(app, "GET", "/items/3"),  # other method: unlimited
        lambda: request(app, "POST", "/items/x"),  # not an int: unlimited
    ]
    responses = await concurrently(calls, gate)
    assert [r.status for r in responses] == [200, 503, 200, 200]


async def test_a_get_rule_also_counts_head() -> None:
    gate = Gate()
    rules = [{"path": "/a", "methods": ["get"], "max_concurrency": 1}]
    app = limited(gate, max_concurrency=None, queue_size=0, rules=rules)
    calls = [lambda: request(app, "GET", "/a"), lambda: request(app, "HEAD", "/a")]
    assert [r.status for r in await concurrently(calls, gate)] == [200, 503]


async def test_excluded_paths_are_never_shed() -> None:
    gate = Gate()
    app = limited(gate, max_concurrency=1, queue_size=0, exclude_paths=["/health"])
    paths = ["/", "/health", "/health/live", "/healthz"]
    responses = await concurrently([get(app, p) for p in paths], gate)
    assert [r.status for r in responses] == [200, 200, 200, 503]


# ---- websockets -------------------------------------------------------------------------


async def test_included_websockets_hold_a_slot_for_the_whole_connection() -> None:
    gate = Gate()
    app = limited(gate, max_concurrency=1, queue_size=0, include_websockets=True)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(websocket, app, "/ws")
        await wait_all_tasks_blocked()
        assert gate.entered == ["/ws"]
        refused = await websocket(app, "/ws", extensions={"websocket.http.response": {}})
        plain = await websocket(app, "/ws")
        busy = await request(app)
        gate.open.set()
    assert refused.denial is not None and refused.denial.status == 503
    assert refused.denial.header("retry-after") == "1"
    assert plain.close_code == 1013
    assert busy.status == 503
    assert (await request(app)).status == 200


# ---- metrics and logs -------------------------------------------------------------------


async def test_metrics_per_group() -> None:
    gate = Gate()
    meter = Meter()
    rules = [{"name": "reports", "path": "/reports", "max_concurrency": 1}]
    app = limited(gate, max_concurrency=3, queue_size=1, rules=rules, meter_provider=meter.provider)
    async with anyio.create_task_group() as tasks:
        for path in ["/reports", "/reports", "/", "/reports"]:
            tasks.start_soon(request, app, "GET", path)
            await wait_all_tasks_blocked()
        assert meter.values("asgikit.concurrency.in_flight") == {"reports": 1, "default": 1}
        assert meter.values("asgikit.concurrency.queued") == {"reports": 1, "default": 0}
        assert meter.values("asgikit.concurrency.limit") == {"reports": 1, "default": 3}
        assert meter.values("asgikit.concurrency.shed") == {"reports": 1}
        gate.open.set()
    assert meter.values("asgikit.concurrency.in_flight") == {"reports": 0, "default": 0}


async def test_shedding_warns_once_per_interval() -> None:
    gate = Gate()
    app = limited(gate, max_concurrency=1, queue_size=0, log_interval=3600)
    with structlog.testing.capture_logs() as logs:
        await concurrently([get(app) for _ in range(4)], gate)
    warnings = [e for e in logs if e["event"] == "concurrency_limit.shedding"]
    assert warnings == [
        {
            "event": "concurrency_limit.shedding",
            "log_level": "warning",
            "group": "default",
            "reason": "queue_full",
            "limit": 1,
            "in_flight": 1,
            "queued": 0,
            "suppressed": 0,
        }
    ]


async def test_shedding_warns_again_after_the_interval_with_the_count_left_out() -> None:
    gate = Gate()
    app = limited(gate, max_concurrency=1, queue_size=0, log_interval=0)
    with structlog.testing.capture_logs() as logs:
        await concurrently([get(app) for _ in range(3)], gate)
    assert [e["event"] for e in logs].count("concurrency_limit.shedding") == 2


async def test_text_prefix_and_root_rules() -> None:
    gate = Gate()
    rules = [
        {"name": "everything", "path": "/", "max_concurrency": 1},
        {"name": "files", "path": "/files*", "max_concurrency": 1},
    ]
    app = limited(gate, max_concurrency=None, queue_size=0, rules=rules)
    paths = ["/filesystem", "/files/a", "/other", "/"]
    responses = await concurrently([get(app, p) for p in paths], gate)
    assert [r.status for r in responses] == [200, 503, 200, 503]


async def test_a_rule_of_methods_only_covers_every_path() -> None:
    gate = Gate()
    rules = [
        {"name": "writes", "methods": ["POST"], "max_concurrency": 1},
        {"name": "uploads", "path": "/uploads", "methods": ["POST"], "max_concurrency": 1},
    ]
    app = limited(gate, max_concurrency=None, queue_size=0, rules=rules)
    calls = [
        lambda: request(app, "POST", "/a"),
        lambda: request(app, "POST", "/b"),  # the writes group: shed
        lambda: request(app, "POST", "/uploads/1"),  # the longer rule: its own group
        lambda: request(app, "GET", "/a"),  # no group: unlimited
    ]
    responses = await concurrently(calls, gate)
    assert [r.status for r in responses] == [200, 503, 200, 200]
