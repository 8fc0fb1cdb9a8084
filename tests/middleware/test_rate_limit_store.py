"""Rate-limit stores: parse_rate, Quota, GCRA arithmetic, MemoryStore and RedisStore.

Memory tests inject a clock, so every figure is checked against values computed by
hand. Redis tests run against a real redis-server (tests/_redis.py) on asyncio, where
the time is Redis's own, so figures are checked against bounds.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import tracemalloc
import warnings
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from asgikit.middleware.rate_limit.backends import open_store
from asgikit.middleware.rate_limit.redis_store import RedisStore
from asgikit.middleware.rate_limit.store import (
    Decision,
    MemoryStore,
    Quota,
    Store,
    StoreError,
    parse_rate,
)
from tests._processes import free_port
from tests._redis import (  # noqa: F401
    RedisServer,
    needs_redis,
    private_redis_fixture,
    redis_server_fixture,
    redis_url_fixture,
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- parse_rate -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/minute", (100, 60.0)),
        ("10/second", (10, 1.0)),
        ("10/s", (10, 1.0)),
        ("5/10s", (5, 10.0)),
        ("1000/2h", (1000, 7200.0)),
        ("3/day", (3, 86400.0)),
        ("3/2days", (3, 172800.0)),
        ("7 / 30 Seconds", (7, 30.0)),
        ("1/0.5sec", (1, 0.5)),
        ("60/mins", (60, 60.0)),
        ("2/hours", (2, 3600.0)),
        ("1/m", (1, 60.0)),
        ("1/d", (1, 86400.0)),
    ],
)
def test_parse_rate(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    "text", ["", "100", "/minute", "x/minute", "5/fortnight", "5/ms", "5/-1s", "5/minute extra"]
)
def test_parse_rate_rejects_what_is_not_a_rate(text: str) -> None:
    with pytest.raises(ValueError, match=r"^expected '<count>/<period>'"):
        parse_rate(text)


def test_parse_rate_rejects_a_zero_count_or_period_and_non_strings() -> None:
    with pytest.raises(ValueError, match=r"^the count must be at least 1"):
        parse_rate("0/minute")
    with pytest.raises(ValueError, match=r"^the period must be more than 0"):
        parse_rate("5/0s")
    with pytest.raises(ValueError, match=r"^expected"):
        parse_rate(100)  # type: ignore[arg-type]


@given(count=st.integers(1, 10**6), n=st.integers(1, 1000), unit=st.sampled_from("smhd"))
def test_parse_rate_round_trips_any_rate(count: int, n: int, unit: str) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_rate(f"{count}/{n}{unit}") == (count, float(n * seconds))


# --- Quota ------------------------------------------------------------------------------


def test_quota_derives_interval_and_tolerance_in_microseconds() -> None:
    quota = Quota(limit=100, period=60.0, burst=100)
    assert (quota.interval_us, quota.tolerance_us) == (600_000, 60_000_000)
    quota = Quota(limit=7, period=60.0, burst=3)
    assert (quota.interval_us, quota.tolerance_us) == (8_571_429, 25_714_287)
    # Faster than a request per microsecond still moves time forward.
    assert Quota(limit=10**9, period=1, burst=1).interval_us == 1
    assert Quota(100, 60.0, 100) == Quota(100, 60, 100)
    assert repr(Quota(1, 2.0, 3)) == "Quota(limit=1, period=2.0, burst=3)"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"limit": 0}, ValueError, "^limit: "),
        ({"limit": True}, TypeError, "^limit: "),
        ({"limit": 1.5}, TypeError, "^limit: "),
        ({"period": 0}, ValueError, "^period: "),
        ({"period": float("inf")}, ValueError, "^period: "),
        ({"period": float("nan")}, ValueError, "^period: "),
        ({"period": "60"}, TypeError, "^period: "),
        ({"period": False}, TypeError, "^period: "),
        ({"burst": 0}, ValueError, "^burst: "),
        ({"burst": True}, TypeError, "^burst: "),
    ],
)
def test_quota_validates(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    options: dict[str, object] = {"limit": 10, "period": 60.0, "burst": 10, **kwargs}
    with pytest.raises(error, match=message):
        Quota(**options)  # type: ignore[arg-type]


# --- MemoryStore: GCRA arithmetic -------------------------------------------------------


@pytest.mark.anyio
async def test_memory_gcra_figures_match_hand_computed_values() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    quota = Quota(limit=10, period=10.0, burst=5)  # T = 1 s, tau = 5 s

    # A fresh key: TAT = now, each request pushes it 1 s further.
    for n in range(1, 6):
        assert await store.acquire([("k", quota)]) == [Decision(True, 5 - n, float(n), 0.0)]
    # Full: TAT = now + 5; one more would need TAT + 1 - now <= 5.
    assert await store.acquire([("k", quota)]) == [Decision(False, 0, 5.0, 1.0)]
    clock.now += 0.25
    assert await store.acquire([("k", quota)]) == [Decision(False, 0, 4.75, 0.75)]
    clock.now += 0.75
    assert await store.acquire([("k", quota)]) == [Decision(True, 0, 5.0, 0.0)]
    clock.now += 2.5
    assert await store.acquire([("k", quota)]) == [
        Decision(True, 1, 3.5, 0.0)
    ]  # 1.5 s of room: one more
    # Once the TAT is in the past the key is as good as new.
    clock.now += 3.5
    assert await store.acquire([("k", quota)]) == [Decision(True, 4, 1.0, 0.0)]
    clock.now += 100
    assert await store.acquire([("k", quota)]) == [Decision(True, 4, 1.0, 0.0)]


@pytest.mark.anyio
async def test_memory_burst_equal_to_limit_allows_exactly_limit_at_once() -> None:
    clock = FakeClock(12345.678901)
    store = MemoryStore(clock=clock)
    quota = Quota(limit=100, period=60.0, burst=100)
    decisions = [(await store.acquire([("k", quota)]))[0] for _ in range(150)]
    assert [d.allowed for d in decisions] == [True] * 100 + [False] * 50
    assert [d.remaining for d in decisions[:100]] == list(range(99, -1, -1))
    assert decisions[99].reset == pytest.approx(60.0)
    assert decisions[100] == Decision(False, 0, 60.0, 0.6)
    clock.now += 0.6
    assert (await store.acquire([("k", quota)]))[0].allowed


@pytest.mark.anyio
async def test_memory_default_clock_is_monotonic() -> None:
    store = MemoryStore()
    quota = Quota(limit=2, period=3600.0, burst=2)
    decisions = [(await store.acquire([("k", quota)]))[0] for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert 1790 < decisions[2].retry_after <= 1800


@settings(max_examples=50, deadline=None)
@given(
    limit=st.integers(1, 50),
    period=st.sampled_from([0.5, 1.0, 7.0, 60.0]),
    burst=st.integers(1, 20),
    steps=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=60),
)
def test_memory_remaining_and_retry_after_are_exact(
    limit: int, period: float, burst: int, steps: list[float]
) -> None:
    """Whatever happened before, ``remaining`` more requests now are allowed and the
    next one is not; after ``retry_after`` exactly one more is."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    quota = Quota(limit=limit, period=period, burst=burst)

    async def check() -> None:
        for step in steps:
            clock.now += step
            (first,) = await store.acquire([("k", quota)])
            if first.allowed:
                for n, left in enumerate(range(first.remaining - 1, -1, -1), 1):
                    (next_one,) = await store.acquire([("k", quota)])
                    assert (next_one.allowed, next_one.remaining) == (True, left)
                    assert next_one.reset == pytest.approx(
                        first.reset + n * quota.interval_us / 1e6
                    )
                (first,) = await store.acquire([("k", quota)])
            assert not first.allowed
            assert first.remaining == 0
            assert 0 < first.retry_after <= quota.interval_us / 1e6
            clock.now += first.retry_after
            (after,) = await store.acquire([("k", quota)])
            assert after.allowed
            assert after.remaining == 0

    anyio.run(check)


# --- MemoryStore: all-or-nothing, concurrency, bounds -----------------------------------


@pytest.mark.anyio
async def test_memory_rejection_by_one_check_consumes_no_other() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    wide = Quota(limit=10, period=10.0, burst=5)
    narrow = Quota(limit=1, period=10.0, burst=1)
    assert await store.acquire([("wide", wide), ("narrow", narrow)]) == [
        Decision(True, 4, 1.0, 0.0),
        Decision(True, 0, 10.0, 0.0),
    ]
    assert await store.acquire([("wide", wide), ("narrow", narrow), ("new", wide)]) == [
        Decision(True, 3, 2.0, 0.0),
        Decision(False, 0, 10.0, 10.0),
        Decision(True, 4, 1.0, 0.0),
    ]
    assert len(store) == 2  # "new" was not stored
    # "wide" still has 4 left: the rejected request consumed nothing.
    assert await store.acquire([("wide", wide)]) == [Decision(True, 3, 2.0, 0.0)]


@pytest.mark.anyio
async def test_memory_a_key_checked_twice_counts_twice() -> None:
    store = MemoryStore(clock=FakeClock())
    quota = Quota(limit=3, period=3.0, burst=3)
    assert [d.remaining for d in await store.acquire([("k", quota), ("k", quota)])] == [2, 1]
    decisions = await store.acquire([("k", quota), ("k", quota)])
    assert [d.allowed for d in decisions] == [True, False]
    assert await store.acquire([("k", quota)]) == [Decision(True, 0, 3.0, 0.0)]


@pytest.mark.anyio
async def test_memory_empty_checks_and_round_trips() -> None:
    store: Store = MemoryStore()
    await store.open()
    await store.open()
    assert await store.acquire([]) == []
    assert store.round_trips == 0
    quota = Quota(limit=5, period=1.0, burst=5)
    await store.acquire([("a", quota), ("b", quota)])
    await store.acquire([("a", quota)])
    assert store.round_trips == 2
    await store.close()
    await store.close()


@pytest.mark.anyio
async def test_memory_concurrent_tasks_share_one_bucket_exactly() -> None:
    store = MemoryStore()
    quota = Quota(limit=100, period=3600.0, burst=100)
    allowed = 0

    async def one() -> None:
        nonlocal allowed
        await anyio.lowlevel.checkpoint()
        (decision,) = await store.acquire([("k", quota)])
        allowed += decision.allowed

    async with anyio.create_task_group() as tg:
        for _ in range(300):
            tg.start_soon(one)
    assert allowed == 100


@pytest.mark.anyio
async def test_memory_evicts_the_least_recently_consumed_key() -> None:
    clock = FakeClock()
    store = MemoryStore(max_keys=3, clock=clock)
    quota = Quota(limit=10, period=10.0, burst=10)
    for key in "abc":
        await store.acquire([(key, quota)])
    await store.acquire([("a", quota)])  # b is now the least recently consumed
    await store.acquire([("d", quota)])
    assert (len(store), store.evictions) == (3, 1)
    assert (await store.acquire([("a", quota)]))[0].remaining == 7  # a was kept
    assert (await store.acquire([("b", quota)]))[0].remaining == 9  # b starts fresh
    assert (len(store), store.evictions) == (3, 2)  # and pushed out c
    assert (await store.acquire([("c", quota)]))[0].remaining == 9


@pytest.mark.anyio
async def test_memory_random_keys_stay_within_the_bound() -> None:
    bound = 1_000
    store = MemoryStore(max_keys=bound)
    quota = Quota(limit=10, period=60.0, burst=10)

    async def fill(count: int, tag: str) -> int:
        for i in range(count):
            await store.acquire([(f"{tag}:{i:064x}", quota)])
        size: int = tracemalloc.get_traced_memory()[0]
        return size

    tracemalloc.start()
    try:
        at_bound = await fill(bound, "a")
        after_many = await fill(20 * bound, "b")
    finally:
        tracemalloc.stop()
    assert len(store) == bound
    assert store.evictions == 20 * bound
    # 20 times more keys than the bound holds, and memory is no larger than at the bound.
    assert after_many < at_bound * 1.2


def test_memory_store_validates_max_keys() -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError, match=r"^max_keys: "):
            MemoryStore(max_keys=bad)
    for wrong in (True, 1.5):
        with pytest.raises(TypeError, match=r"^max_keys: "):
            MemoryStore(max_keys=wrong)  # type: ignore[arg-type]


# --- open_store -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_open_store_memory() -> None:
    quota = Quota(limit=10, period=60.0, burst=10)

    async def filled(url: str, keys: int, **options: Any) -> tuple[int, int]:
        """(keys kept, keys evicted) once a fresh store has been given *keys* keys."""
        store = open_store(url, **options)
        assert isinstance(store, MemoryStore)
        await store.acquire([(f"k{i}", quota) for i in range(keys)])
        return len(store), store.evictions

    # The default bound, 100 000 keys: all kept, and one more evicts one.
    assert await filled("memory://", 100_000) == (100_000, 0)
    assert await filled("memory://", 100_001) == (100_000, 1)
    # A bound given as an option or in the URL.
    assert await filled("memory://", 5, max_keys=5) == (5, 0)
    assert await filled("memory://", 6, max_keys=5) == (5, 1)
    assert await filled("MEMORY://?max_keys=7", 7) == (7, 0)
    assert await filled("MEMORY://?max_keys=7", 8) == (7, 1)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memory://host", "^expected 'memory://'"),
        ("memory:///path", "^expected 'memory://'"),
        ("memory://#x", "^expected 'memory://'"),
        ("memory://?size=3", "^unknown memory:// option 'size'"),
        ("memory://?max_keys=", "^max_keys: expected an integer"),
        ("memory://?max_keys=-3", "^max_keys: expected an integer"),
        ("memory://?max_keys=0", "^max_keys: expected an integer of at least 1"),
        ("memcached://localhost", "^unsupported storage URL 'memcached://localhost'"),
        ("localhost:6379", "^unsupported storage URL"),
        ("", "^unsupported storage URL"),
    ],
)
def test_open_store_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_open_store_redis_without_redis_py_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "redis.asyncio", raising=False)
    monkeypatch.delitem(sys.modules, "asgikit.middleware.rate_limit.redis_store", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'asgikit\[redis\]'"):
        open_store("redis://127.0.0.1:6379/0")


def test_store_error_is_an_exception() -> None:
    assert issubclass(StoreError, Exception)


# --- RedisStore (a real redis-server; asyncio only) -------------------------------------

asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])
# How late a failure may come after the budget, on a busy machine.
MARGIN = 0.25
# Commands a script runs inside Redis: counted by Redis, but not round trips.
SCRIPT_COMMANDS = frozenset({"time", "get", "set"})


def command_calls(inspect: redis.Redis) -> dict[str, int]:
    """Calls per command name from INFO commandstats (*inspect* is already connected)."""
    stats = inspect.info("commandstats")
    return {name.removeprefix("cmdstat_"): entry["calls"] for name, entry in stats.items()}


def round_trips_seen_by(inspect: redis.Redis, before: dict[str, int]) -> dict[str, int]:
    """Commands clients sent since *before*, leaving out script internals and INFO."""
    after = command_calls(inspect)
    return {
        name: count - before.get(name, 0)
        for name, count in after.items()
        if name not in SCRIPT_COMMANDS | {"info"} and count != before.get(name, 0)
    }


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_gcra_figures_within_bounds(redis_url: str) -> None:
    store = RedisStore(redis_url, timeout=1.0)
    quota = Quota(limit=10, period=10.0, burst=5)  # T = 1 s, tau = 5 s
    for n in range(1, 6):
        (decision,) = await store.acquire([("k", quota)])
        assert (decision.allowed, decision.remaining, decision.retry_after) == (True, 5 - n, 0.0)
        assert n - 0.5 < decision.reset <= n
    (denied,) = await store.acquire([("k", quota)])
    assert (denied.allowed, denied.remaining) == (False, 0)
    assert 4.5 < denied.reset <= 5.0
    assert 0.5 < denied.retry_after <= 1.0
    assert denied.reset - denied.retry_after == pytest.approx(4.0)
    await store.close()


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_concurrent_burst_allows_exactly_the_limit(redis_url: str) -> None:
    store = RedisStore(redis_url, timeout=2.0)
    quota = Quota(limit=100, period=3600.0, burst=100)
    results: list[Decision] = []

    async def one() -> None:
        results.extend(await store.acquire([("k", quota)]))

    async with anyio.create_task_group() as tg:
        for _ in range(250):
            tg.start_soon(one)
    assert sum(d.allowed for d in results) == 100
    assert sorted(d.remaining for d in results if d.allowed) == list(range(100))
    await store.close()


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_rejection_by_one_check_consumes_no_other(
    redis_url: str, redis_server: RedisServer
) -> None:
    store = RedisStore(redis_url, timeout=1.0, prefix="t:")
    wide = Quota(limit=10, period=10.0, burst=5)
    narrow = Quota(limit=1, period=10.0, burst=1)
    assert [d.allowed for d in await store.acquire([("wide", wide), ("narrow", narrow)])] == [
        True,
        True,
    ]
    inspect = redis_server.client()
    stored = inspect.get("t:wide")
    decisions = await store.acquire([("wide", wide), ("narrow", narrow), ("new", wide)])
    assert [(d.allowed, d.remaining) for d in decisions] == [(True, 3), (False, 0), (True, 4)]
    assert inspect.get("t:wide") == stored
    assert inspect.exists("t:new") == 0
    (after,) = await store.acquire([("wide", wide)])
    assert (after.allowed, after.remaining) == (True, 3)  # still 4 left before this one
    inspect.close()
    await store.close()


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_a_key_checked_twice_counts_twice(redis_url: str) -> None:
    store = RedisStore(redis_url, timeout=1.0)
    quota = Quota(limit=3, period=300.0, burst=3)
    assert [d.remaining for d in await store.acquire([("k", quota), ("k", quota)])] == [2, 1]
    decisions = await store.acquire([("k", quota), ("k", quota)])
    assert [d.allowed for d in decisions] == [True, False]
    assert [d.remaining for d in await store.acquire([("k", quota)])] == [0]
    await store.close()


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_stores_the_tat_with_a_ttl_until_full(
    redis_url: str, redis_server: RedisServer
) -> None:
    store = open_store(redis_url, timeout=1.0, prefix="ttl:")
    quota = Quota(limit=10, period=100.0, burst=10)  # T = 10 s
    inspect = redis_server.client()
    await store.acquire([("k", quota)])
    seconds, micros = inspect.time()
    tat = int(inspect.get("ttl:k") or 0)
    assert 0 < tat - (seconds * 1_000_000 + micros) <= 10_000_000
    assert 9_000 < inspect.pttl("ttl:k") <= 10_000
    for _ in range(4):
        await store.acquire([("k", quota)])
    assert 49_000 < inspect.pttl("ttl:k") <= 50_000
    assert inspect.ttl("ttl:k") == 50
    inspect.close()
    await store.close()


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_one_round_trip_per_acquire(redis_url: str, redis_server: RedisServer) -> None:
    store = RedisStore(redis_url, timeout=1.0)
    quotas = [Quota(limit=1000, period=60.0, burst=50), Quota(limit=5, period=1.0, burst=5)]
    inspect = redis_server.client()
    await store.acquire([("warm", quotas[0])])  # connects and loads the script
    before_trips, before = store.round_trips, command_calls(inspect)
    for i in range(20):
        await store.acquire([(f"a{i % 3}", quotas[0]), (f"b{i % 2}", quotas[1]), ("c", quotas[0])])
    assert store.round_trips - before_trips == 20
    # Nothing else either: no new connection (HELLO), no SCRIPT LOAD, no PING.
    assert round_trips_seen_by(inspect, before) == {"evalsha": 20}
    assert await store.acquire([]) == []
    assert store.round_trips - before_trips == 20
    inspect.close()
    await store.close()


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_noscript_costs_one_more_round_trip(
    redis_url: str, redis_server: RedisServer
) -> None:
    store = RedisStore(redis_url, timeout=1.0)
    quota = Quota(limit=10, period=10.0, burst=5)
    inspect = redis_server.client()
    await store.acquire([("k", quota)])  # the fixture flushed the scripts: EVALSHA + EVAL
    assert store.round_trips == 2
    await store.acquire([("k", quota)])
    assert store.round_trips == 3
    inspect.script_flush()
    before = command_calls(inspect)
    (decision,) = await store.acquire([("k", quota)])
    assert (decision.allowed, decision.remaining) == (True, 2)
    assert store.round_trips == 5
    assert round_trips_seen_by(inspect, before) == {"evalsha": 1, "eval": 1}
    await store.acquire([("k", quota)])
    assert store.round_trips == 6
    inspect.close()
    await store.close()


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_refusal_is_a_store_error_without_cooldown(
    redis_url: str, redis_server: RedisServer
) -> None:
    store = RedisStore(redis_url, timeout=1.0, cooldown=60.0)
    inspect = redis_server.client()
    inspect.hset("asgikit:rl:hash", "a", "1")
    quota = Quota(limit=10, period=10.0, burst=5)
    with pytest.raises(StoreError, match=r"^Redis refused the rate-limit script") as caught:
        await store.acquire([("ok", quota), ("hash", quota)])
    assert isinstance(caught.value.__cause__, redis.ResponseError)
    assert store.failures == 0
    assert [d.allowed for d in await store.acquire([("ok", quota)])] == [True]
    inspect.close()
    await store.close()


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_budget_holds_when_redis_hangs(private_redis: RedisServer) -> None:
    budget, connect_budget = 0.2, 0.5
    store = RedisStore(
        private_redis.url, timeout=budget, cooldown=0.0, connect_timeout=connect_budget
    )
    quota = Quota(limit=100, period=60.0, burst=100)
    await store.acquire([("k", quota)])
    private_redis.pause()
    try:
        # On the open connection: the command's budget.
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"did not answer within 0.2s") as caught:
            await store.acquire([("k", quota)])
        assert time.monotonic() - started < budget + MARGIN
        assert isinstance(caught.value.__cause__, TimeoutError)
        # That connection was closed (its reply unread): a new one, with its own budget.
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"no connection to Redis within 0.5s") as caught:
            await store.acquire([("k", quota)])
        assert time.monotonic() - started < connect_budget + MARGIN
        assert isinstance(caught.value.__cause__, TimeoutError)
    finally:
        private_redis.resume()
    (decision,) = await store.acquire([("k", quota)])
    # The first timed-out call was already sent: Redis may run it once it wakes up.
    assert decision.allowed
    assert decision.remaining in (97, 98)
    assert store.failures == 2
    await store.close()


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_killed_fails_fast_then_recovers_after_restart(
    private_redis: RedisServer,
) -> None:
    cooldown = 0.3
    store = RedisStore(private_redis.url, timeout=0.5, cooldown=cooldown)
    quota = Quota(limit=100, period=60.0, burst=100)
    await store.acquire([("k", quota)])
    private_redis.kill()
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"^Redis call failed") as caught:
        await store.acquire([("k", quota)])
    assert time.monotonic() - started < 0.5 + MARGIN
    assert isinstance(caught.value.__cause__, redis.ConnectionError)
    # During the cool-down nothing is sent to Redis.
    trips = store.round_trips
    with pytest.raises(StoreError, match=r"^Redis failed less than 0.3s ago"):
        await store.acquire([("k", quota)])
    assert store.round_trips == trips
    private_redis.restart()
    await anyio.sleep(cooldown)
    # The restarted Redis is empty (no persistence): the key starts fresh.
    (decision,) = await store.acquire([("k", quota)])
    assert (decision.allowed, decision.remaining) == (True, 99)
    assert store.failures == 1
    (decision,) = await store.acquire([("k", quota)])
    assert decision.remaining == 98
    await store.close()


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_probe_failing_again_restarts_the_cooldown(
    private_redis: RedisServer,
) -> None:
    store = RedisStore(private_redis.url, timeout=0.5, cooldown=0.1)
    quota = Quota(limit=1, period=1.0, burst=1)
    private_redis.kill()
    for _ in range(2):
        with pytest.raises(StoreError, match=r"^Redis call failed"):
            await store.acquire([("k", quota)])
        with pytest.raises(StoreError, match=r"^Redis failed less than"):
            await store.acquire([("k", quota)])
        await anyio.sleep(0.1)
    assert store.failures == 2
    await store.close()


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_answering_a_probe_with_an_error_ends_the_cooldown(
    private_redis: RedisServer,
) -> None:
    store = RedisStore(private_redis.url, timeout=0.5, cooldown=0.2)
    quota = Quota(limit=5, period=1.0, burst=5)
    private_redis.kill()
    with pytest.raises(StoreError, match=r"^Redis call failed"):
        await store.acquire([("k", quota)])
    private_redis.restart()
    inspect = private_redis.client()
    inspect.hset("asgikit:rl:hash", "a", "1")
    inspect.close()
    await anyio.sleep(0.2)
    with pytest.raises(StoreError, match=r"^Redis refused"):
        await store.acquire([("hash", quota)])  # the probe: Redis is up, the key is wrong
    assert [d.remaining for d in await store.acquire([("k", quota)])] == [4]
    await store.close()


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_nobody_listening_is_a_store_error_within_budget() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.3)
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        await store.acquire([("k", Quota(limit=1, period=1.0, burst=1))])
    assert time.monotonic() - started < 0.3 + MARGIN
    assert isinstance(caught.value.__cause__, redis.ConnectionError)
    await store.close()


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_redis_store_says_it_needs_asyncio_under_trio() -> None:
    store = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(StoreError, match=r"^RedisStore needs asyncio"):
        await store.open()
    with pytest.raises(StoreError, match=r"^RedisStore needs asyncio"):
        await store.acquire([("k", Quota(limit=1, period=1.0, burst=1))])
    assert await store.acquire([]) == []
    await store.close()


def connected_clients(server: RedisServer) -> int:
    """How many clients the server has, besides the one asking."""
    client = server.client()
    try:
        return int(client.info("clients")["connected_clients"]) - 1
    finally:
        client.close()


def settles_at(server: RedisServer, expected: int) -> bool:
    """Whether the server's client count comes to *expected* (it notices a closed socket
    shortly after it is closed)."""
    for _ in range(100):
        if connected_clients(server) == expected:
            return True
        time.sleep(0.02)
    return False


@needs_redis
def test_redis_store_follows_the_event_loop(redis_url: str, redis_server: RedisServer) -> None:
    before = connected_clients(redis_server)
    store = RedisStore(redis_url, timeout=1.0)
    quota = Quota(limit=5, period=60.0, burst=5)

    async def one(close: bool) -> int:
        await store.open()
        (decision,) = await store.acquire([("k", quota)])
        if close:
            await store.close()
        return decision.remaining

    # Each asyncio.run is a new loop, as with one lifespan after another: the client
    # made on one loop is never used on the next.
    assert [asyncio.run(one(close=True)) for _ in range(3)] == [4, 3, 2]
    assert settles_at(redis_server, before)  # each closed its connection
    # Left open on a loop that has ended, it cannot be closed from another one: it is
    # dropped (a closed loop's transports are gone anyway), so nothing holds its
    # connection open any more.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        assert asyncio.run(one(close=False)) == 1
        assert connected_clients(redis_server) == before + 1
        asyncio.run(store.close())
        gc.collect()
    assert settles_at(redis_server, before)
    assert asyncio.run(one(close=True)) == 0


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_open_and_close_are_idempotent(redis_url: str) -> None:
    store = RedisStore(redis_url, timeout=1.0)
    await store.close()
    await store.open()
    await store.open()
    quota = Quota(limit=5, period=60.0, burst=5)
    assert [d.remaining for d in await store.acquire([("k", quota)])] == [4]
    await store.close()
    await store.close()
    assert [d.remaining for d in await store.acquire([("k", quota)])] == [3]
    await store.close()


def test_open_store_redis_urls_make_redis_stores_without_io() -> None:
    for url in ("redis://127.0.0.1:1/0", "rediss://user:pw@example.invalid/2", "unix:///x.s"):
        store = open_store(url, timeout=0.25, prefix="p:")
        assert isinstance(store, RedisStore)
        assert (store.url, store.timeout, store.prefix, store.cooldown) == (url, 0.25, "p:", 1.0)


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_pool_is_bounded_and_configurable_by_url(
    redis_url: str, redis_server: RedisServer
) -> None:
    before = connected_clients(redis_server)
    quota = Quota(limit=1000, period=60.0, burst=1000)
    for url, size in ((redis_url, 50), (redis_url + "?max_connections=7", 7)):
        store = RedisStore(url, timeout=5.0)
        await store.open()
        # More calls at once than the pool has connections: the rest wait for one (the
        # pool blocks), none fails, and no more connections than the bound are made.
        async with anyio.create_task_group() as tg:
            for i in range(size + 20):
                tg.start_soon(store.acquire, [(f"k{i}", quota)])
        assert store.failures == 0 and store.round_trips >= size + 20
        assert connected_clients(redis_server) == before + size  # kept, for the next calls
        await store.close()
        assert await anyio.to_thread.run_sync(settles_at, redis_server, before)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"timeout": 0}, ValueError, "^timeout: "),
        ({"timeout": True}, TypeError, "^timeout: "),
        ({"cooldown": -1}, ValueError, "^cooldown: "),
        ({"cooldown": None}, TypeError, "^cooldown: "),
        ({"prefix": b"x"}, TypeError, "^prefix: "),
        ({"url": "redis://host:port/0"}, ValueError, "^bad Redis URL 'redis://host:port/0'"),
    ],
)
def test_redis_store_validates(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    options: dict[str, Any] = {"url": "redis://127.0.0.1/0", **kwargs}
    with pytest.raises(error, match=message):
        RedisStore(**options)


@needs_redis
@asyncio_only
@pytest.mark.anyio
async def test_redis_concurrent_failures_drop_the_client_once(private_redis: RedisServer) -> None:
    store = RedisStore(private_redis.url, timeout=0.5, cooldown=0.0)
    quota = Quota(limit=100, period=60.0, burst=100)
    await store.acquire([("k", quota)])
    assert connected_clients(private_redis) == 1
    private_redis.pause()
    errors: list[StoreError] = []

    async def one() -> None:
        try:
            await store.acquire([("k", quota)])
        except StoreError as exc:
            errors.append(exc)

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
    finally:
        private_redis.resume()
    assert len(errors) == store.failures == 3
    # The failing client was dropped and closed, with every connection it had made, and
    # no new one was made since (none connected until the next call).
    assert await anyio.to_thread.run_sync(settles_at, private_redis, 0)
    # The next call makes a new client: one new connection, and the call goes through.
    [decision] = await store.acquire([("k", quota)])
    assert decision.allowed
    assert connected_clients(private_redis) == 1
    await store.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@localhost:notaport/0",
        "rediss://user:hunter2@localhost:port/0",
        "memcached://user:hunter2@localhost:11211",
    ],
)
def test_errors_about_a_storage_url_never_show_its_password(url: str) -> None:
    pytest.importorskip("redis", reason="redis-py is not installed")
    with pytest.raises(ValueError) as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)
    assert ":***@" in str(caught.value)
