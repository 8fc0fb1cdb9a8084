"""bench_tracing runs end to end in a tiny quick mode (figures are not checked)."""

from __future__ import annotations

import pytest

from benchmarks import bench_tracing


def test_quick_run_prints_both_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_tracing.main(["--rounds", "1", "--min-time", "0.001"]) == 0
    output = capsys.readouterr().out
    assert "### Tracing, GET /items/42 (traces + metrics)" in output
    assert "### Tracing, a request with a non-sampled traceparent" in output
    for case in (
        bench_tracing.FLOOR,
        bench_tracing.CONTRIB,
        bench_tracing.CONTRIB_LEAN,
        bench_tracing.OURS_UNSAMPLED,
        bench_tracing.OURS_UNSAMPLED_NO_METRICS,
        bench_tracing.OURS_EXCLUDED,
        bench_tracing.OURS_PARENT,
    ):
        assert case in output
    assert "x the SDK floor's" in output
