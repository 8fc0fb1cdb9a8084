"""benchmarks/bench_concurrency_limit.py in a tiny quick mode: every case answers, and
the report names each one (timings are never asserted)."""

from __future__ import annotations

import pytest

from asgikit.testing import request
from benchmarks import bench_concurrency_limit


@pytest.mark.anyio
async def test_every_case_answers_200_on_both_scenarios() -> None:
    for scenario in bench_concurrency_limit.SCENARIOS.values():
        for name, app in bench_concurrency_limit.apps().items():
            response = await request(app, scenario.method, scenario.path)
            assert response.status == 200, name


def test_quick_run_reports_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_concurrency_limit.main(["--rounds", "1", "--min-time", "0.001"]) == 0
    output = capsys.readouterr().out
    for name in bench_concurrency_limit.apps():
        assert f"| {name} |" in output
    assert "debug" not in output
