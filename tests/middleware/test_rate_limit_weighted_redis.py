"""Cost-weighted rules, post-response charges and counted statuses on Redis and Redis
Cluster: exact under concurrency, as on the memory store (test_rate_limit_weighted.py)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from asgikit.contract import enforce
from asgikit.middleware.rate_limit import RateLimitMiddleware
from asgikit.testing import request
from tests._redis import needs_redis, redis_server_fixture, redis_url_fixture  # noqa: F401
from tests._redis_cluster import RedisCluster, needs_cluster, redis_cluster_fixture  # noqa: F401
from tests.middleware.test_rate_limit_weighted import HERE, MeteredApp, members

pytestmark = [pytest.mark.anyio, needs_redis, needs_cluster]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client


@pytest.fixture(params=["redis", "cluster"])
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if request.param == "redis":
        yield request.getfixturevalue("redis_url")
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        yield cluster.url


@pytest.fixture
async def limited(storage: str) -> AsyncIterator[Any]:
    made: list[RateLimitMiddleware] = []

    def make(**options: Any) -> Any:
        middleware = RateLimitMiddleware(
            enforce(MeteredApp()), storage=storage, timeout=5.0, **options
        )
        made.append(middleware)
        return enforce(middleware), middleware

    yield make
    for middleware in made:
        await middleware.store.close()


async def gather(asgi: Any, count: int, headers: dict[str, str]) -> list[int]:
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await request(asgi, headers=headers)).status)

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
    return statuses


async def test_costs_are_exact_under_concurrency(limited: Any) -> None:
    asgi, middleware = limited(rules=[{"rate": "100/hour", "cost": f"{HERE}:header_cost"}])
    statuses = await gather(asgi, 40, {"x-cost": "3"})  # 33 x 3 = 99 fit, not 34
    assert statuses.count(200) == 33 and statuses.count(429) == 7
    last = await request(asgi, headers={"x-cost": "1"})
    assert last.status == 200 and members(last)["default"]["r"] == 0
    assert middleware.backend_errors == 0


async def test_usage_charges_are_exact_under_concurrency(limited: Any) -> None:
    asgi, middleware = limited(rules=[{"rate": "1000/hour", "usage": True}])
    statuses = await gather(asgi, 50, {"x-used": "9"})
    assert statuses == [200] * 50
    after = await request(asgi)
    assert members(after)["default"]["r"] == 1000 - 50 * 10 - 1
    assert middleware.store.round_trips == 2 * 50 + 1  # decide, then charge
    # Into debt: a charge over what is left is taken whole, and later requests wait.
    await request(asgi, headers={"x-used": "600"})
    assert (await request(asgi)).status == 429


async def test_counted_statuses_are_exact_under_concurrency(limited: Any) -> None:
    rule = {"name": "login", "rate": "100/hour", "count_status": [401]}
    asgi, _ = limited(rules=[rule])
    tasks = [{"x-status": "401"}] * 30 + [{"x-status": "200"}] * 30
    async with anyio.create_task_group() as tg:
        for headers in tasks:
            tg.start_soon(functools.partial(request, asgi, headers=headers))
    # The 200s were given back; this request's own cell is held until its status.
    assert members(await request(asgi))["login"]["r"] == 100 - 30 - 1
