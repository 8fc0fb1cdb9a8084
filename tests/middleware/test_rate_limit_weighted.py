"""Cost-weighted rules, post-response charges, counted statuses, callers' own rates,
decision metrics and websocket message rates, on the memory store.

(The same accounting on Redis and Redis Cluster: test_rate_limit_weighted_redis.py.)
"""

from __future__ import annotations

import functools
from typing import Any

import anyio
import pytest
import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from asgikit.contract import enforce
from asgikit.middleware.rate_limit import USAGE_KEY, RateLimitMiddleware, Usage
from asgikit.middleware.rate_limit.dynamic import QuotaCache
from asgikit.middleware.rate_limit.rules import build_rules
from asgikit.middleware.rate_limit.store import CHARGE, MemoryStore, Quota, StoreError
from asgikit.testing import request, websocket
from asgikit.types import Message, Receive, Scope, Send
from tests.middleware.test_rate_limit import parse_sf_list

pytestmark = pytest.mark.anyio

HERE = "tests.middleware.test_rate_limit_weighted"


class MeteredApp:
    """Answers ``x-status`` (200 by default), then charges ``x-used`` cells of usage."""

    def __init__(self) -> None:
        self.calls = 0
        self.usage_seen: list[object] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        headers = dict(scope["headers"])
        usage = scope.get(USAGE_KEY)
        self.usage_seen.append(usage)
        if scope["type"] == "websocket":
            await websocket_echo(receive, send)
            return
        status = int(headers.get(b"x-status", b"200"))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        if usage is not None and b"x-used" in headers:
            usage.charge(int(headers[b"x-used"]))
        if b"x-raise" in headers:
            raise RuntimeError("boom")


async def websocket_echo(receive: Receive, send: Send) -> None:
    await receive()  # connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            if message.get("code") == 1008:  # closed by the limiter: this must be dropped
                await send({"type": "websocket.send", "text": "late"})
            return
        await send({"type": "websocket.send", "text": message.get("text") or ""})


def header_cost(scope: Scope) -> int:
    return int(dict(scope["headers"]).get(b"x-cost", b"1"))


PLANS: dict[bytes, object] = {b"free": "2/minute", b"pro": ("10/minute", 5), b"internal": None}
rate_calls: list[bytes] = []


def plan_rate(scope: Scope) -> object:
    plan = dict(scope["headers"]).get(b"x-plan", b"free")
    rate_calls.append(plan)
    if plan == b"broken":
        raise LookupError("no such plan")
    return PLANS.get(plan, "not a rate")


def limited(**options: Any) -> tuple[Any, RateLimitMiddleware, MeteredApp]:
    app = MeteredApp()
    middleware = RateLimitMiddleware(enforce(app), **options)
    return enforce(middleware), middleware, app


def members(response: Any) -> dict[str, dict[str, Any]]:
    return dict(parse_sf_list(response.header("ratelimit")))


# ---- cost -----------------------------------------------------------------------------


async def test_a_fixed_cost_takes_that_many_cells() -> None:
    asgi, _, app = limited(rules=[{"rate": "10/minute", "cost": 3}])
    first = await request(asgi)
    assert members(first)["default"]["r"] == 7  # in cells, not requests
    assert [(await request(asgi)).status for _ in range(3)] == [200, 200, 429]
    assert app.calls == 3


async def test_a_cost_function_weighs_each_request_exactly_under_concurrency() -> None:
    asgi, _, _ = limited(rules=[{"rate": "100/hour", "cost": f"{HERE}:header_cost"}])
    statuses: list[int] = []

    async def one(cost: int) -> None:
        statuses.append((await request(asgi, headers={"x-cost": str(cost)})).status)

    async with anyio.create_task_group() as tg:
        for _ in range(30):
            tg.start_soon(one, 4)  # 30 x 4 = 120 > 100: exactly 25 fit
    assert statuses.count(200) == 25 and statuses.count(429) == 5
    zero = await request(asgi, headers={"x-cost": "0"})  # costs nothing, still checked
    assert zero.status == 200 and members(zero)["default"]["r"] == 0


async def test_a_cost_over_the_burst_is_never_allowed() -> None:
    asgi, _, app = limited(rules=[{"rate": "5/minute", "cost": f"{HERE}:header_cost"}])
    assert (await request(asgi, headers={"x-cost": "6"})).status == 429
    assert app.calls == 0


@pytest.mark.parametrize("cost", ["-1", "x", "raise"])
@pytest.mark.parametrize("mode", ["allow", "deny"])
async def test_a_failing_cost_function_follows_the_fail_mode(cost: str, mode: str) -> None:
    def bad_cost(scope: Scope) -> object:
        if cost == "raise":
            raise ValueError("no cost")
        return int(cost) if cost != "x" else cost

    asgi, middleware, app = limited(
        rules=[{"rate": "5/minute", "cost": bad_cost}], on_backend_error=mode
    )
    with structlog.testing.capture_logs() as logs:
        responses = [await request(asgi) for _ in range(3)]
    expected = 200 if mode == "allow" else 503
    assert [r.status for r in responses] == [expected] * 3
    assert all(r.header("ratelimit") is None for r in responses)
    assert middleware.rule_errors == 3 and middleware.backend_errors == 0
    assert [log["event"] for log in logs] == ["rate_limit.rule_error"]  # once per period
    assert app.calls == (3 if mode == "allow" else 0)


# ---- post-response usage ----------------------------------------------------------------


async def test_usage_charged_after_the_response_counts_against_the_rule() -> None:
    asgi, _, app = limited(rules=[{"rate": "100/hour", "usage": True}])
    first = await request(asgi, headers={"x-used": "40"})
    assert members(first)["default"]["r"] == 99  # before the charge
    assert isinstance(app.usage_seen[0], Usage)
    second = await request(asgi, headers={"x-used": "70"})  # 1 + 40 + 1 = 42 taken: fits
    assert members(second)["default"]["r"] == 58
    # Now 112 taken, 12 over: in debt, refused until paid back.
    denied = await request(asgi)
    assert denied.status == 429 and int(denied.header("retry-after")) > 400


async def test_usage_charges_are_exact_under_concurrency() -> None:
    asgi, _, _ = limited(rules=[{"rate": "1000/hour", "usage": True}])
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(functools.partial(request, asgi, headers={"x-used": "9"}))
    after = await request(asgi)
    assert members(after)["default"]["r"] == 1000 - 50 * 10 - 1


async def test_usage_is_charged_when_the_app_raises() -> None:
    asgi, _, _ = limited(rules=[{"rate": "100/hour", "usage": True}])
    with pytest.raises(RuntimeError):
        await request(asgi, headers={"x-used": "50", "x-raise": "1"})
    assert members(await request(asgi))["default"]["r"] == 100 - 51 - 1


async def test_no_usage_object_without_a_usage_rule() -> None:
    asgi, _, app = limited(rate="10/minute", rules=())
    await request(asgi, headers={"x-used": "5"})
    assert app.usage_seen == [None]


def test_usage_charge_takes_whole_cells() -> None:
    usage = Usage()
    usage.charge(2)
    usage.charge(0)
    assert usage.used == 2
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match=r"^charge: "):
            usage.charge(bad)  # type: ignore[arg-type]


class ChargesFail:
    """A memory store whose calls after the first fail, as a Redis going down would."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.round_trips = 0

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def acquire(self, checks: Any) -> Any:
        self.round_trips += 1
        if self.round_trips > 1:
            raise StoreError("down")
        return await self.inner.acquire(checks)


async def test_a_failing_store_on_a_charge_is_logged_and_the_response_stands() -> None:
    asgi, middleware, _ = limited(rules=[{"rate": "100/hour", "usage": True}])
    middleware.store = ChargesFail()
    with structlog.testing.capture_logs() as logs:
        response = await request(asgi, headers={"x-used": "5"})
    assert response.status == 200 and middleware.backend_errors == 1
    assert [log["event"] for log in logs] == ["rate_limit.backend_error"]


async def test_a_refund_down_to_nothing_forgets_the_key() -> None:
    store = MemoryStore()
    quota = Quota(limit=10, period=60.0, burst=10)
    await store.acquire([("k", quota, 3, 3)])
    (refund,) = await store.acquire([("k", quota, CHARGE, -5)])
    assert refund.allowed and refund.remaining == 10 and len(store) == 0


def test_the_variants_of_a_rule_are_bounded() -> None:
    quotas = QuotaCache(max_keys=10_000)
    (rule,) = build_rules(
        [{"rate": plan_rate}], rate=None, burst=None, key="client", ipv6_prefix=64
    ).rules
    for count in range(1, 1100):  # a rate function answering something new every time
        scope: Scope = {"headers": [(b"x-plan", b"pro")]}
        PLANS[b"many"] = f"{count}/minute"
        scope["headers"] = [(b"x-plan", b"many")]
        variant = quotas.rule_for(rule, f"k{count}", scope)
        assert variant is not None and variant.quota.limit == count
    del PLANS[b"many"]


# ---- counted statuses -----------------------------------------------------------------


async def test_only_failures_count_and_the_check_comes_before_the_app() -> None:
    rule = {"name": "login", "path": "/login", "rate": "3/hour", "count_status": [401, 403]}
    asgi, _, app = limited(rules=[rule])
    for _ in range(5):  # successes never count
        assert (await request(asgi, "POST", "/login")).status == 200
    failures = [
        await request(asgi, "POST", "/login", headers={"x-status": "401"}) for _ in range(3)
    ]
    assert [r.status for r in failures] == [401, 401, 401]
    assert members(failures[0])["login"]["r"] == 2  # taken before, kept: a 401 counts
    calls = app.calls
    blocked = await request(asgi, "POST", "/login")  # even a right password now waits
    assert blocked.status == 429 and app.calls == calls


async def test_status_classes_and_concurrent_failures_debit_exactly() -> None:
    rule = {"rate": "100/hour", "count_status": ["5xx"], "cost": 2}
    asgi, _, _ = limited(rules=[rule])
    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(functools.partial(request, asgi, headers={"x-status": "503"}))
        for _ in range(20):
            tg.start_soon(functools.partial(request, asgi, headers={"x-status": "404"}))
    # The 404s were given back; this request's own 2 cells are held until its status.
    assert members(await request(asgi))["default"]["r"] == 100 - 20 * 2 - 2


async def test_counted_websocket_outcomes() -> None:
    rule = {"rate": "2/hour", "count_status": [101]}  # count accepted connections only
    asgi, _, _ = limited(rules=[rule])
    for _ in range(2):
        assert (await websocket(asgi, frames=["a"])).accepted
    denied = await websocket(asgi)
    assert not denied.accepted and denied.close_code == 1013


# ---- callers' own rates ---------------------------------------------------------------


async def test_each_plan_gets_its_own_rate() -> None:
    rate_calls.clear()
    rules = [{"rate": f"{HERE}:plan_rate", "key": "header:x-key", "cache": 60}]
    asgi, _, _ = limited(rules=rules)

    async def statuses(key: str, plan: str, count: int) -> list[int]:
        headers = {"x-key": key, "x-plan": plan}
        return [(await request(asgi, headers=headers)).status for _ in range(count)]

    assert await statuses("a", "free", 3) == [200, 200, 429]
    pro = await request(asgi, headers={"x-key": "b", "x-plan": "pro"})
    assert pro.header("ratelimit-policy") == '"default";q=10;w=60'
    assert members(pro)["default"]["r"] == 4  # burst 5
    assert await statuses("c", "internal", 20) == [200] * 20  # None: no limit
    assert rate_calls.count(b"free") == 1 and rate_calls.count(b"internal") == 1  # cached


async def test_the_caller_cache_expires_and_is_bounded() -> None:
    now = [0.0]
    quotas = QuotaCache(max_keys=2, clock=lambda: now[0])
    (rule,) = build_rules(
        [{"rate": plan_rate, "cache": 10}], rate=None, burst=None, key="client", ipv6_prefix=64
    ).rules
    rate_calls.clear()
    scope: Scope = {"headers": [(b"x-plan", b"pro")]}
    assert quotas.rule_for(rule, "k1", scope) is quotas.rule_for(rule, "k1", scope)
    now[0] = 11.0
    quotas.rule_for(rule, "k1", scope)
    assert len(rate_calls) == 2  # expired after 10 s
    for key in ("k2", "k3", "k1"):
        quotas.rule_for(rule, key, scope)
    assert len(rate_calls) == 5  # k1 was pushed out by k2 and k3


@pytest.mark.parametrize("plan", ["broken", "odd"])
async def test_a_failing_rate_function_follows_the_fail_mode(plan: str) -> None:
    asgi, middleware, _ = limited(
        rules=[{"rate": f"{HERE}:plan_rate", "cache": 0}],
        on_backend_error="deny",
        log_interval=3600,
    )
    with structlog.testing.capture_logs() as logs:
        statuses = [(await request(asgi, headers={"x-plan": plan})).status for _ in range(2)]
    assert statuses == [503, 503] and middleware.rule_errors == 2
    assert len(logs) == 1 and logs[0]["event"] == "rate_limit.rule_error"
    assert logs[0]["log_level"] == "warning"


# ---- metrics ----------------------------------------------------------------------------


def decision_counts(reader: InMemoryMetricReader) -> dict[tuple[str, str], int]:
    data = reader.get_metrics_data()
    counts: dict[tuple[str, str], int] = {}
    for resource in data.resource_metrics if data else ():
        for scope_metrics in resource.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name != "asgikit.rate_limit.decisions":
                    continue
                for point in metric.data.data_points:
                    attributes = point.attributes or {}
                    key = (
                        str(attributes["asgikit.rate_limit.rule"]),
                        str(attributes["asgikit.rate_limit.outcome"]),
                    )
                    counts[key] = int(point.value)
    return counts


async def test_decisions_are_counted_per_rule_and_outcome() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    rules = [
        {"name": "all", "rate": "100/minute"},
        {"name": "login", "path": "/login", "rate": "1/minute"},
    ]
    asgi, _, _ = limited(rules=rules, meter_provider=provider)
    for _ in range(2):
        await request(asgi, "GET", "/login")
    await request(asgi, "GET", "/")
    assert decision_counts(reader) == {
        ("all", "allowed"): 2,
        ("login", "allowed"): 1,
        ("login", "limited"): 1,
    }


async def test_failures_and_report_only_are_counted() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    rules = [{"rate": f"{HERE}:plan_rate", "cache": 0}]
    asgi, _, _ = limited(rules=rules, meter_provider=provider, log_interval=0)
    await request(asgi, headers={"x-plan": "broken"})
    shadow, _, _ = limited(rate="1/minute", meter_provider=provider, report_only=True)
    for _ in range(2):
        await request(shadow)
    assert decision_counts(reader) == {
        ("default", "failed_open"): 1,
        ("default", "allowed"): 1,
        ("default", "would_limit"): 1,
    }


def test_meter_provider_is_checked() -> None:
    with pytest.raises(TypeError, match=r"^meter_provider: "):
        RateLimitMiddleware(MeteredApp(), rate="1/second", meter_provider=object())


# ---- websocket messages ---------------------------------------------------------------


async def test_a_websocket_sending_too_fast_is_closed_with_1008() -> None:
    asgi, _, _ = limited(rate="100/minute", websocket_message_rate="3/minute")
    session = await websocket(asgi, frames=["1", "2", "3", "4", "5"])
    assert session.sent == ["1", "2", "3"]  # the app got three; "late" was dropped
    closes = [m for m in session.messages if m["type"] == "websocket.close"]
    assert closes == [
        {"type": "websocket.close", "code": 1008, "reason": "message rate limit exceeded"}
    ]


async def test_the_message_rate_is_per_connection_and_burst_sized() -> None:
    asgi, _, _ = limited(
        rate="100/minute", websocket_message_rate="1/minute", websocket_message_burst=2
    )
    for _ in range(2):
        session = await websocket(asgi, frames=["1", "2", "3"])
        assert session.sent == ["1", "2"] and session.close_code == 1008


async def test_receiving_again_after_the_close_says_disconnect_again() -> None:
    seen: list[Message] = []

    async def keeps_reading(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        # Receiving after the disconnect is not what an app should do (contract W4).
        seen.extend([await receive() for _ in range(3)])

    middleware = RateLimitMiddleware(
        keeps_reading, rate="100/minute", websocket_message_rate="1/minute"
    )
    await websocket(enforce(middleware), frames=["1", "2", "3", "4"])
    assert [m["type"] for m in seen] == ["websocket.receive", *["websocket.disconnect"] * 2]
    assert seen[-1]["code"] == 1008


async def test_excluded_websockets_and_http_are_not_message_limited() -> None:
    asgi, _, _ = limited(
        rate="100/minute", websocket_message_rate="1/minute", exclude_paths=["/free"]
    )
    session = await websocket(asgi, "/free", frames=["1", "2", "3"])
    assert session.sent == ["1", "2", "3"]
    assert (await request(asgi)).status == 200


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"websocket_message_rate": "often"}, "^websocket_message_rate: expected"),
        (
            {"websocket_message_rate": "1/s", "websocket_message_burst": 0},
            "^websocket_message_burst: ",
        ),
        ({"websocket_message_burst": 3}, "^websocket_message_burst: only with"),
    ],
)
def test_message_rate_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimitMiddleware(MeteredApp(), rate="1/second", **options)


# ---- rule options -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "error", "message"),
    [
        ({"rate": "1/s", "cost": -1}, ValueError, r"^rules\[0\]\.cost: "),
        ({"rate": "1/s", "cost": 2.5}, TypeError, r"^rules\[0\]\.cost: expected a callable"),
        (
            {"rate": "1/s", "cost": "nowhere.at_all:f"},
            ValueError,
            r"^rules\[0\]\.cost: cannot import",
        ),
        ({"rate": f"{HERE}:PLANS"}, TypeError, r"^rules\[0\]\.rate: .* is not callable"),
        ({"rate": "1/s", "usage": "yes"}, TypeError, r"^rules\[0\]\.usage: "),
        ({"rate": "1/s", "cache": -1}, ValueError, r"^rules\[0\]\.cache"),
        ({"rate": "1/s", "count_status": 401}, TypeError, r"^rules\[0\]\.count_status: "),
        ({"rate": "1/s", "count_status": []}, TypeError, r"^rules\[0\]\.count_status: "),
        ({"rate": "1/s", "count_status": [600]}, ValueError, r"^rules\[0\]\.count_status: 600"),
        ({"rate": "1/s", "count_status": ["4XX"]}, ValueError, r"^rules\[0\]\.count_status: "),
        ({"rate": "1/s", "count_status": [True]}, ValueError, r"^rules\[0\]\.count_status: "),
    ],
)
def test_rule_options_are_checked(rule: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        RateLimitMiddleware(MeteredApp(), rules=[rule])
