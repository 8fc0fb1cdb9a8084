"""bench_front_door runs end to end in a tiny quick mode, every case answering as the
scenario says (a benchmark of a 400 that answered 200 would measure the wrong thing)."""

from __future__ import annotations

import anyio
import pytest

from asgikit.testing import request
from benchmarks import bench_front_door


def test_quick_run_prints_every_scenario_with_its_ratio(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert bench_front_door.main(["--rounds", "1", "--min-time", "0.001"]) == 0
    output = capsys.readouterr().out
    for title in bench_front_door.SCENARIOS:
        assert f"### {title}" in output
    assert output.count("Added per-request cost over the bare app:") == len(
        bench_front_door.SCENARIOS
    )


@pytest.mark.parametrize("title", list(bench_front_door.SCENARIOS))
def test_each_case_of_a_scenario_answers_alike(title: str) -> None:
    cases, scenario, anchor, ours = bench_front_door.SCENARIOS[title]

    async def status(app: object) -> int:
        response = await request(app, scope=scenario.scope())  # type: ignore[arg-type]
        return response.status

    statuses = {
        name: anyio.run(status, app) for name, app in cases.items() if "bare" not in name.lower()
    }
    assert statuses[anchor] == statuses[ours], statuses
