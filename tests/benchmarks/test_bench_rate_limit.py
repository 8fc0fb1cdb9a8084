"""benchmarks/bench_rate_limit.py runs, in a tiny quick mode (timings never asserted)."""

from __future__ import annotations

import pytest

from asgikit.testing import request
from benchmarks import bench_rate_limit
from tests._redis import needs_redis


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_cases_answer_as_the_scenario_says() -> None:
    for rate, status in (("1000000000/minute", 200), ("1/hour", 429)):
        apps = bench_rate_limit.starlette_apps(rate)
        for name, app in apps.items():
            await request(app)  # the harness's first call spends the 1/hour limit
            response = await request(app)
            expected = 200 if name == bench_rate_limit.BARE else status
            assert response.status == expected, (name, rate)


@needs_redis
def test_redis_round_trips_are_one_per_request() -> None:
    counted = bench_rate_limit.count_redis_round_trips(7)
    assert counted is not None
    assert counted["requests"] == 7
    assert counted["store_round_trips"] == 7
    assert counted["redis_script_calls"] == 7


@needs_redis
def test_quick_run_prints_every_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        bench_rate_limit.main(["--rounds", "2", "--min-time", "0.001", "--redis-requests", "3"])
        == 0
    )
    out = capsys.readouterr().out
    for title in bench_rate_limit.SCENARIOS:
        assert title in out
    assert out.count("Added per-request cost") == 1
    assert out.count("Cost of a rejected request") == 1
    assert "3 store round trips, 3 script calls seen by Redis (1.00 per request)" in out
