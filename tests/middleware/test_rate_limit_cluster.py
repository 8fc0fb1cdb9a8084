"""RateLimitMiddleware on a real Redis Cluster: hash tags, round trips, exactness, failover.

The cluster is six redis-server processes (three masters, three replicas) from
``tests._redis_cluster``. redis-py's asyncio client runs on asyncio only, so these
tests do too.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.crc import key_slot

from asgikit.contract import enforce
from asgikit.middleware.rate_limit import RateLimitMiddleware
from asgikit.middleware.rate_limit.backends import open_store
from asgikit.middleware.rate_limit.cluster_store import ClusterStore, parse_cluster_url
from asgikit.middleware.rate_limit.store import Quota, StoreError
from asgikit.testing import request
from asgikit.types import ASGIApp
from tests._processes import reports_of_workers_started_together
from tests._redis_cluster import RedisCluster, needs_cluster, redis_cluster_fixture  # noqa: F401
from tests.middleware.test_rate_limit import App, parse_sf_list

pytestmark = [pytest.mark.anyio, needs_cluster]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(name="cluster")
def cluster_fixture(redis_cluster: RedisCluster) -> RedisCluster:
    """The session's cluster, emptied for this test."""
    redis_cluster.flush()
    return redis_cluster


Limited = Callable[..., tuple[ASGIApp, RateLimitMiddleware]]


@pytest.fixture
async def limited(cluster: RedisCluster) -> AsyncIterator[Limited]:
    made: list[RateLimitMiddleware] = []

    def make(**options: Any) -> tuple[ASGIApp, RateLimitMiddleware]:
        middleware = RateLimitMiddleware(enforce(App()), storage=cluster.url, **options)
        made.append(middleware)
        return enforce(middleware), middleware

    yield make
    for middleware in made:
        await middleware.store.close()


def stored_keys(cluster: RedisCluster) -> list[str]:
    keys: list[str] = []
    for port in cluster.masters():
        with contextlib.closing(cluster.client(port)) as client:
            keys += [key.decode() for key in client.keys("*")]
    return sorted(keys)


def remaining(response: Any, rule: str) -> int:
    members = dict(parse_sf_list(response.header("ratelimit")))
    return int(members[rule]["r"])


async def test_rules_keyed_alike_share_a_slot_and_one_round_trip(
    limited: Limited, cluster: RedisCluster
) -> None:
    rules = [
        {"name": "global", "rate": "100/minute"},
        {"name": "login", "path": "/login", "rate": "2/minute"},
    ]
    asgi, middleware = limited(rules=rules)
    statuses = [(await request(asgi, "POST", "/login")).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert middleware.store.round_trips == 3  # one script call per request, both rules
    keys = stored_keys(cluster)
    assert len(keys) == 2
    tags = {key[key.index("{") : key.index("}") + 1] for key in keys}
    assert len(tags) == 1 and tags.pop().startswith("{client:")  # one hash tag, one slot
    with contextlib.closing(cluster.client(cluster.masters()[0])) as client:
        slots = {client.execute_command("CLUSTER", "KEYSLOT", key) for key in keys}
    assert len(slots) == 1


async def test_rules_in_different_slots_group_and_refund(limited: Limited) -> None:
    rules = [
        {"name": "per-client", "rate": "100/minute"},
        {"name": "report", "path": "/report", "rate": "1/minute", "key": "route"},
    ]
    asgi, middleware = limited(rules=rules)
    first = await request(asgi, "GET", "/report")
    assert first.status == 200 and middleware.store.round_trips == 2  # two slots
    denied = await request(asgi, "GET", "/report")
    # per-client was taken (its slot first), report denied, per-client given back.
    assert denied.status == 429 and middleware.store.round_trips == 5
    after = await request(asgi, "GET", "/")
    assert after.status == 200
    assert remaining(after, "per-client") == 98  # 100 - first - this; the 429 cost nothing


async def test_store_refunds_when_a_later_slot_fails(cluster: RedisCluster) -> None:
    # The second slot's key holds a list: Redis refuses the script there (WRONGTYPE).
    broken = "asgikit:rl:{route:y}:b"
    assert key_slot(broken.encode()) != key_slot(b"asgikit:rl:{client:x}:a")
    with contextlib.closing(cluster.client(cluster.master_of(broken))) as client:
        client.rpush(broken, "not a TAT")
    store = open_store(cluster.url, timeout=5.0)
    assert isinstance(store, ClusterStore)
    quota = Quota(limit=10, period=60.0, burst=10)
    try:
        (first,) = await store.acquire([("a:client:x", quota)])
        assert first.remaining == 9
        with pytest.raises(StoreError, match="refused"):
            await store.acquire([("a:client:x", quota), ("b:route:y", quota)])
        (again,) = await store.acquire([("a:client:x", quota)])
        assert again.remaining == 8  # the failed request's cell came back
        # A check that took nothing (a counted-status rule) has nothing to give back.
        one = Quota(limit=1, period=60.0, burst=1)
        await store.acquire([("c:route:z", one)])
        peek, denied = await store.acquire([("a:client:x", quota, 1, 0), ("c:route:z", one)])
        assert peek.allowed and not denied.allowed
        # A key without a rule prefix is its own hash tag.
        (plain,) = await store.acquire([("plain", quota)])
        assert plain.remaining == 9
    finally:
        await store.close()
    with contextlib.closing(cluster.client(cluster.master_of("asgikit:rl:{plain}"))) as client:
        assert client.exists("asgikit:rl:{plain}")


async def test_a_cluster_that_never_answers_fails_within_connect_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        store = ClusterStore(f"redis+cluster://127.0.0.1:{port}", connect_timeout=0.2)
        with pytest.raises(StoreError, match=r"no connection to Redis within 0\.2s"):
            await store.acquire([("a:client:x", Quota(limit=1, period=1.0, burst=1))])
        await store.close()


WORKER = """
import asyncio, json, sys, time

from asgikit.middleware.rate_limit import RateLimitMiddleware
from asgikit.testing import lifespan, request
from tests.middleware.test_rate_limit import App, parse_sf_list


async def main(url: str, start_at: float, calls: int) -> None:
    rules = [
        {"name": "narrow", "rate": "100/hour"},
        {"name": "wide", "rate": "1000/hour"},
    ]
    # A generous budget: this test is about exactness, not about a busy machine's latency.
    middleware = RateLimitMiddleware(App(), storage=url, rules=rules, timeout=10.0)
    async with lifespan(middleware) as session:  # start-up, as a server runs it
        await asyncio.sleep(max(0.0, start_at - time.time()))
        responses = await asyncio.gather(
            *(request(middleware, state=session.state) for _ in range(calls))
        )
    allowed = [r for r in responses if r.status == 200]
    print(json.dumps({
        "allowed": len(allowed),
        "denied": sum(r.status == 429 for r in responses),
        "remaining": sorted(
            dict(parse_sf_list(r.header("ratelimit")))["narrow"]["r"] for r in allowed
        ),
        "round_trips": middleware.store.round_trips,
        "errors": middleware.backend_errors,
    }))


asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
"""


def run_workers(url: str, count: int, calls: int) -> list[dict[str, Any]]:
    return reports_of_workers_started_together(WORKER, url, calls, count, cwd=ROOT)


def test_two_processes_allow_exactly_what_one_allows(cluster: RedisCluster) -> None:
    """Two processes, 200 concurrent requests each, against two rules in one slot."""
    alone = run_workers(cluster.url, 1, 400)
    cluster.flush()
    shared = run_workers(cluster.url, 2, 200)
    assert alone[0]["allowed"] == 100 and alone[0]["denied"] == 300
    assert sum(report["allowed"] for report in shared) == 100
    assert sum(report["denied"] for report in shared) == 300
    assert all(report["errors"] == 0 for report in alone + shared)
    # Each slot handed out once across both processes: remaining 99, 98, ..., 0.
    assert sorted(r for report in shared for r in report["remaining"]) == list(range(100))
    for report in shared:  # one script call per request (plus EVAL after NOSCRIPT)
        assert 200 <= report["round_trips"] <= 400


@pytest.mark.parametrize("mode", ["allow", "deny"])
async def test_master_killed_mid_run(limited: Limited, cluster: RedisCluster, mode: str) -> None:
    asgi, middleware = limited(rate="5/second", on_backend_error=mode, timeout=0.2)
    assert (await request(asgi)).status == 200
    (key,) = stored_keys(cluster)
    master = cluster.master_of(key)
    statuses: list[int] = []
    killed_at = None
    recovered = False
    deadline = time.monotonic() + 40
    try:
        while time.monotonic() < deadline:
            if killed_at is None and len(statuses) >= 20:
                cluster.kill(master)  # SIGKILL by PID, mid-run
                killed_at = len(statuses)
            statuses.append((await request(asgi)).status)
            if killed_at is not None and master not in cluster.masters():
                # The replica took over: the limiter limits again (429s, not 503s or
                # unlimited 200s), on the new master.
                recent = statuses[-10:]
                if len(recent) == 10 and 429 in recent and set(recent) <= {200, 429}:
                    recovered = True
                    break
            await anyio.sleep(0.02)
    finally:
        cluster.restart(master)  # it rejoins as a replica: the cluster is whole again
    assert recovered, statuses
    assert 500 not in statuses
    assert middleware.backend_errors > 0
    outage = statuses[killed_at:]
    if mode == "deny":
        assert 503 in outage and set(statuses) <= {200, 429, 503}
    else:
        assert 503 not in statuses and set(statuses) <= {200, 429}


def test_cluster_urls() -> None:
    options = parse_cluster_url(
        "rediss+cluster://u:p%40ss@10.0.0.1:7000,[::1]:7001/?max_connections=9"
    )
    assert [(n.host, n.port) for n in options["startup_nodes"]] == [
        ("10.0.0.1", 7000),
        ("::1", 7001),
    ]
    assert options["username"] == "u" and options["password"] == "p@ss"
    assert options["ssl"] is True and options["max_connections"] == 9
    assert "ssl" not in parse_cluster_url("redis+cluster://h:1")
    for bad, message in [
        ("redis://h:1", "expected redis\\+cluster"),
        ("redis+cluster://h", "host:port"),
        ("redis+cluster://h:1/0", "one database"),
        ("redis+cluster://h:1?db=2", "unknown or bad option"),
        ("redis+cluster://h:1?max_connections=0", "unknown or bad option"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_cluster_url(bad)
    with pytest.raises(ValueError, match=r"^storage: bad Redis Cluster URL"):
        RateLimitMiddleware(App(), rate="1/second", storage="redis+cluster://nowhere")
    with pytest.raises(ValueError, match=r"^prefix: no braces"):
        ClusterStore("redis+cluster://h:1", prefix="{x}")


def full_coverage(cluster: RedisCluster, required: bool) -> None:
    """Whether the nodes refuse every query while any slot is unserved (Redis's
    default), or keep serving the slots they have."""
    for port in cluster.ports:
        if cluster.running(port):
            with contextlib.closing(cluster.client(port)) as client:
                value = "yes" if required else "no"
                client.config_set("cluster-require-full-coverage", value)


def keys_on_two_masters(cluster: RedisCluster) -> list[tuple[int, str]]:
    """Two store keys (of rule ``r``) whose slots two different masters serve."""
    keys: dict[int, str] = {}
    index = 0
    while len(keys) < 2:
        digest = f"{index:032x}"
        index += 1
        keys.setdefault(
            cluster.master_of(f"asgikit:rl:{{client:{digest}}}:r"), f"r:client:{digest}"
        )
    return list(keys.items())


async def test_a_dead_master_leaves_the_live_masters_slots_working(cluster: RedisCluster) -> None:
    (dead, dead_key), (_, live_key) = keys_on_two_masters(cluster)
    store = ClusterStore(cluster.url, timeout=0.5)
    quota = Quota(limit=1000, period=3600.0, burst=1000)
    live: list[int] = []
    failed: list[str] = []

    async def dead_call(delay: float = 0.0) -> None:
        await anyio.sleep(delay)
        try:
            await store.acquire([(dead_key, quota)])
        except StoreError as exc:
            failed.append(str(exc))

    async def live_and_dead() -> None:
        await anyio.sleep(0.1)  # after dead_call started: it fails first
        with pytest.raises(StoreError):
            await store.acquire([(live_key, quota), (dead_key, quota)])

    full_coverage(cluster, required=False)  # the live masters answer while one is down
    try:
        await store.acquire([(dead_key, quota)])
        live += [d.remaining for d in await store.acquire([(live_key, quota)])]
        cluster.kill(dead)  # SIGKILL by PID
        # The live master's group is taken, the dead one's fails after another call's
        # failure: the first group is still given back (no cool-down stops the refund).
        async with anyio.create_task_group() as tg:
            tg.start_soon(dead_call)
            tg.start_soon(live_and_dead)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(failed) < 100:
            await dead_call()
            before = len(failed)
            await dead_call()  # two failures in a row: the dead master's slots only
            live += [d.remaining for d in await store.acquire([(live_key, quota)])]
            if len(failed) == before:  # the replica took over the dead master's slots
                break
        # Every call for the live master's key worked through the failover, exactly.
        assert live == list(range(999, 999 - len(live), -1)) and len(live) > 2
        assert failed and store.failures > 0
    finally:
        await store.close()
        cluster.restart(dead)
        full_coverage(cluster, required=True)
