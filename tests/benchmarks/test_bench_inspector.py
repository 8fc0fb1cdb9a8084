"""benchmarks/bench_inspector.py in a tiny quick mode: it runs and reports (never timings)."""

from __future__ import annotations

import anyio
import pytest

from asgikit.testing import request
from benchmarks import bench_inspector


def test_quick_run_reports_every_case_for_every_scenario(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert bench_inspector.main(["--rounds", "3", "--min-time", "0.001"]) == 0
    output = capsys.readouterr().out
    for title in bench_inspector.SCENARIOS:
        assert f"### Development inspector, {title}" in output
    for case in (
        bench_inspector.BARE,
        bench_inspector.ANCHOR,
        bench_inspector.OURS,
        bench_inspector.TRACED,
    ):
        assert output.count(f"| {case} |") == len(bench_inspector.SCENARIOS)
    assert output.count("Added per-request cost over the bare app") == 2


def test_every_case_records_the_request() -> None:
    cases = bench_inspector.apps()

    async def run() -> None:
        for name in (bench_inspector.OURS, bench_inspector.TRACED):
            response = await request(cases[name], "GET", "/x", server=("127.0.0.1", 8000))
            assert response.status == 200
            listed = await request(
                cases[name], "GET", "/_asgikit/api/requests", server=("127.0.0.1", 8000)
            )
            assert b'"path":"/x"' in listed.body

    anyio.run(run)
