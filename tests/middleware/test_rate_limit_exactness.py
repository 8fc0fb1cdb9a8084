"""The limit holds across processes: two workers sharing one Redis allow exactly the limit.

Each worker is a separate Python process with its own RedisStore and connection pool.
Both start firing at the same wall-clock instant, 200 concurrent ``acquire`` calls each,
at one key whose quota allows 100 at once: 100 are allowed in total, not 100 each and
not fewer.
"""

from __future__ import annotations

from tests._processes import reports_of_workers_started_together
from tests._redis import RedisServer, needs_redis, redis_server_fixture  # noqa: F401

WORKER = """
import asyncio, json, sys, time

from asgikit.middleware.rate_limit.redis_store import RedisStore
from asgikit.middleware.rate_limit.store import Quota


async def main(url: str, start_at: float, calls: int) -> None:
    store = RedisStore(url, timeout=10.0)
    quota = Quota(limit=100, period=3600.0, burst=100)
    await store.open()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    results = await asyncio.gather(*(store.acquire([("shared", quota)]) for _ in range(calls)))
    await store.close()
    allowed = [d for (d,) in results if d.allowed]
    print(json.dumps({
        "allowed": len(allowed),
        "denied": calls - len(allowed),
        "remaining": sorted(d.remaining for d in allowed),
        "round_trips": store.round_trips,
    }))


asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
"""


@needs_redis
def test_two_processes_share_exactly_one_limit(redis_server: RedisServer) -> None:
    inspect = redis_server.client()
    inspect.flushall()
    inspect.script_flush()  # both workers meet NOSCRIPT too
    inspect.close()
    reports = reports_of_workers_started_together(WORKER, redis_server.url, 200, count=2)

    assert sum(report["allowed"] for report in reports) == 100
    assert sum(report["denied"] for report in reports) == 300
    # Every slot was handed out once: the remaining counts across both workers are
    # exactly 99, 98, ..., 0.
    remaining = sorted(r for report in reports for r in report["remaining"])
    assert remaining == list(range(100))
    # One EVALSHA per call, plus an EVAL for calls that met the flushed script cache.
    for report in reports:
        assert 200 <= report["round_trips"] <= 400
