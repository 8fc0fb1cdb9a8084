"""The load and soak stacks (benchmarks/stacks.py) and the soak runner (benchmarks/soak.py).

Timings are never asserted: these check that both stacks serve what they claim to, that
the counters the soak audit relies on count, and that a short real soak passes its audit.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from asgikit.logging import HTTP_EVENT
from asgikit.testing import lifespan, request
from benchmarks import soak, stacks
from tests._processes import needs_tool

HEADERS = {"accept-encoding": "gzip", "origin": stacks.ORIGIN}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # slowapi's limiter is asyncio-only
@pytest.mark.parametrize("build", [stacks._asgikit_stack, stacks._anchor_stack])
async def test_both_stacks_serve_the_same_features(
    build: object, anyio_backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(stacks.LOG_ENV, str(tmp_path / "access.jsonl"))
    monkeypatch.setenv(stacks.REPORT_ENV, str(tmp_path / "report.json"))
    app = build()  # type: ignore[operator]
    async with lifespan(app):
        for number in range(3):
            response = await request(app, "GET", f"/items/{number}", headers=HEADERS)
            assert response.status == 200
            assert response.header("content-encoding") == "gzip"
            assert response.header("access-control-allow-origin") == stacks.ORIGIN
            assert json.loads(gzip.decompress(response.body))["id"] == str(number)
    counts = json.loads((tmp_path / "report.json").read_text())
    assert counts["requests"] == 3
    assert counts["spans_started"] == counts["spans_ended"] >= 3
    assert counts["spans_exported"] == counts["spans_ended"]  # flushed at shutdown


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_asgikit_stack_logs_one_line_per_request(
    anyio_backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "access.jsonl"
    monkeypatch.setenv(stacks.LOG_ENV, str(log))
    monkeypatch.setenv(stacks.REPORT_ENV, str(tmp_path / "report.json"))
    app = stacks._asgikit_stack()
    async with lifespan(app):
        for _ in range(4):
            await request(app, "GET", "/items/7", headers=HEADERS)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["event"] for line in lines] == [HTTP_EVENT] * 4
    assert {line["http.route"] for line in lines} == {"/items/{item_id}"}


@needs_tool("wrk", "Debian: apt-get install wrk")
def test_a_short_soak_passes_its_audit(capsys: pytest.CaptureFixture[str]) -> None:
    status = soak.main(["--requests", "2000", "--connections", "16", "--max-seconds", "30"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "| socket errors / non-2xx responses | 0 / 0 |" in out
    assert "(0) |" in out  # no access-log line lost
