"""benchmarks.keepalive_resets runs its three servers in a tiny quick mode and reports a
row for each (the servers' own start-up failure would be a BenchmarkError)."""

from __future__ import annotations

import pytest

from benchmarks import keepalive_resets

pytest.importorskip("uvicorn", reason="needs uvicorn")


def test_quick_run_reports_every_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert keepalive_resets.main(["--rounds", "1", "--requests", "40"]) == 0
    output = capsys.readouterr().out
    for name in keepalive_resets.CASES:
        assert f"| {name} | " in output
    assert "load average" in output
