"""bench_access_log runs end to end in a tiny quick mode; its floor redacts what it must."""

from __future__ import annotations

import io
import json

import anyio
import pytest
import structlog

import asgikit.logging
from asgikit.testing import request
from asgikit.types import ASGIApp
from benchmarks import bench_access_log
from benchmarks.harness import bare_app


def test_quick_run_prints_both_scenarios_and_the_floor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert bench_access_log.main(["--rounds", "1", "--min-time", "0.001"]) == 0
    output = capsys.readouterr().out
    for title in bench_access_log.SCENARIOS:
        assert f"### Access log, {title}" in output
    for floor in (bench_access_log.FLOOR, bench_access_log.SHARED_FLOOR):
        # One scenario is timed beside each floor: a table row and a line of ratios.
        assert output.count(f"| {floor} |") == 1
        assert f"{floor}: " in output
    assert output.count("Added per-request cost:") == 2


def test_least_redaction_hides_only_the_names_it_knows() -> None:
    redact = bench_access_log.least_redaction({"access_token"})
    assert redact("q=1&access_token=abc&x=") == "q=1&access_token=[REDACTED]&x="
    plain = "q=1&token=abc&access_token="
    assert redact(plain) is plain
    assert redact("access_token=abc") == "access_token=[REDACTED]"
    for one_pair in ("access_token=", "token=abc"):
        assert redact(one_pair) is one_pair


@pytest.mark.parametrize("case", ["reference", "floor", "shared floor"])
def test_the_reference_logs_the_fields_and_the_floors_redact_them(case: str) -> None:
    stream = io.StringIO()
    asgikit.logging.configure(format="json", stream=stream, stdlib=False)
    try:
        redacting = case != "reference"
        redact = bench_access_log.least_redaction({"access_token"})
        app: ASGIApp
        if case == "shared floor":
            app = bench_access_log.SharedPartsFloor(bare_app, redact)
        else:
            app = bench_access_log.StructlogReference(bare_app, redact if redacting else None)
        headers = [(b"referer", b"https://a.example/p?access_token=r1&u=2")]
        anyio.run(lambda: request(app, "GET", "/s?access_token=q1&page=2", headers=headers))
    finally:
        structlog.reset_defaults()
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    hidden = "[REDACTED]" if redacting else None
    assert line["url.query"] == f"access_token={hidden or 'q1'}&page=2"
    assert line["http.request.header.referer"] == (
        f"https://a.example/p?access_token={hidden or 'r1'}&u=2"
    )
    assert line["http.response.status_code"] == 200
    assert line["http.response.body.size"] == len(b"Hello, world!")
    assert line["url.path"] == "/s" and line["http.request.method"] == "GET"
