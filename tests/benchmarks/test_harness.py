"""The benchmark runners' behaviour (never their timings)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from asgikit.types import ASGIApp, Receive, Scope, Send
from benchmarks import e2e
from benchmarks.harness import (
    BenchmarkError,
    Request,
    Result,
    bare_app,
    report,
    run_asgi,
    run_sync,
)

# Cheap settings: these tests check behaviour, never timings.
ROUNDS = 3
MIN_TIME = 0.001
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_run_sync_baseline_ratio_is_exactly_one_and_every_case_reported() -> None:
    cases = {"a": lambda: None, "b": lambda: sum(range(20)), "c": lambda: [1] * 50}
    results = run_sync(cases, baseline="b", rounds=ROUNDS, min_time=MIN_TIME)
    assert [r.case for r in results] == ["a", "b", "c"]
    by_case = {r.case: r for r in results}
    assert by_case["b"].ratio == 1.0
    for r in results:
        assert r.rounds == 3
        assert r.per_round >= 1
        assert 0 < r.p10_us <= r.median_us <= r.p90_us


def test_run_sync_interleaves_every_case_in_every_round() -> None:
    log: list[str] = []
    cases = {name: (lambda name=name: log.append(name)) for name in ("a", "b", "c")}
    results = run_sync(cases, baseline="a", rounds=ROUNDS, min_time=MIN_TIME)
    per_round = {r.case: r.per_round for r in results}

    # The measured rounds are the tail of the log: blocks of per_round calls of one case.
    measured = log[len(log) - 3 * sum(per_round.values()) :]
    blocks = []
    position = 0
    while position < len(measured):
        name = measured[position]
        assert measured[position : position + per_round[name]] == [name] * per_round[name]
        blocks.append(name)
        position += per_round[name]
    rounds = [blocks[i : i + 3] for i in range(0, len(blocks), 3)]
    assert len(rounds) == 3
    for order in rounds:
        assert sorted(order) == ["a", "b", "c"]


def test_run_sync_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="baseline 'x'"):
        run_sync({"a": lambda: None}, baseline="x")
    with pytest.raises(ValueError, match="rounds"):
        run_sync({"a": lambda: None}, baseline="a", rounds=0)
    with pytest.raises(ValueError, match="no cases"):
        run_sync({}, baseline="a")


class _Layer:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def test_run_asgi_baseline_ratio_and_every_case() -> None:
    results = run_asgi(
        {"bare": bare_app, "layer": _Layer(bare_app)},
        baseline="bare",
        rounds=ROUNDS,
        min_time=MIN_TIME,
    )
    assert [r.case for r in results] == ["bare", "layer"]
    assert results[0].ratio == 1.0
    assert all(r.median_us > 0 and r.per_round >= 1 for r in results)


def test_run_asgi_replays_the_body_then_disconnect_with_a_fresh_scope() -> None:
    seen: list[tuple[bytes, str]] = []

    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        after = await receive()
        seen.append((body, after["type"]))
        scope["mutated"] = True  # must not leak into the next call's scope
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def check_scope(scope: Scope, receive: Receive, send: Send) -> None:
        assert "mutated" not in scope
        await echo(scope, receive, send)

    request = Request(method="POST", body_chunks=(b"ab", b"cd"))
    run_asgi(
        {"echo": check_scope}, baseline="echo", request=request, rounds=ROUNDS, min_time=MIN_TIME
    )
    assert seen
    assert set(seen) == {(b"abcd", "http.disconnect")}


async def _silent(scope: Scope, receive: Receive, send: Send) -> None:
    return None


async def _no_final_body(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"x", "more_body": True})


async def _hangs(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.Event().wait()


@pytest.mark.parametrize("broken", [_silent, _no_final_body])
def test_run_asgi_refuses_an_app_that_does_not_respond(broken: ASGIApp) -> None:
    with pytest.raises(BenchmarkError, match=r"'broken' did not complete a response"):
        run_asgi(
            {"bare": bare_app, "broken": broken}, baseline="bare", rounds=ROUNDS, min_time=MIN_TIME
        )


def test_run_asgi_refuses_an_app_that_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("benchmarks.harness._CHECK_TIMEOUT", 0.05)
    with pytest.raises(BenchmarkError, match=r"'hangs' did not return within"):
        run_asgi({"hangs": _hangs}, baseline="hangs", rounds=ROUNDS, min_time=MIN_TIME)


def test_run_asgi_names_the_case_whose_first_call_raised() -> None:
    async def boom(scope: Scope, receive: Receive, send: Send) -> None:
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom") as caught:
        run_asgi({"boom": boom}, baseline="boom", rounds=ROUNDS, min_time=MIN_TIME)
    assert any("'boom'" in note for note in caught.value.__notes__)


def test_request_scope_splits_the_query_string() -> None:
    request = Request(path="/items/a%20b?x=1&y=2")
    scope = request.scope()
    assert scope["path"] == "/items/a b"
    assert scope["raw_path"] == b"/items/a%20b"
    assert scope["query_string"] == b"x=1&y=2"
    assert scope["type"] == "http"
    assert scope["method"] == "GET"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["server"] == ("127.0.0.1", 8000)
    assert scope["client"] == ("127.0.0.1", 50000)
    assert (b"accept-encoding", b"gzip, deflate, br, zstd") in scope["headers"]
    assert scope["headers"] is not request.headers
    assert Request().scope()["query_string"] == b""


def test_request_websocket_scope_and_messages() -> None:
    request = Request(scope_type="websocket")
    assert request.scope()["scheme"] == "ws"
    assert "method" not in request.scope()
    messages, final = request.messages()
    assert [m["type"] for m in messages] == ["websocket.connect"]
    assert final["type"] == "websocket.disconnect"
    with pytest.raises(ValueError, match="scope_type"):
        Request(scope_type="lifespan").scope()


def test_report_names_every_case_marks_the_baseline_and_carries_context() -> None:
    results = [
        Result("bare", 1.0, 0.9, 1.1, 1.0, 3, 100),
        Result("with | pipe", 2.5, 2.4, 2.6, 2.5, 3, 50),
    ]
    text = report(results, "Demo")
    assert text.startswith("### Demo")
    assert "| bare | 1.000 | 0.900-1.100 | 1.00x (baseline) |" in text
    assert r"with \| pipe" in text
    assert "2.50x" in text
    assert "Python 3." in text
    assert "3 rounds" in text


# What `wrk -t1 -c32 -d3s --latency` prints, including the optional error lines.
WRK_SAMPLE = """\
Running 3s test @ http://127.0.0.1:40123/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  412.60us  12.31ms   91.55%
    Req/Sec    31.87k     3.02k   35.11k    83.33%
  Latency Distribution
     50%  912.00us
     75%    1.08ms
     90%    1.31ms
     99%    1.20s
  95140 requests in 3.00s, 13.34MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  31698.46
Transfer/sec:      4.44MB
"""


def test_parse_wrk_normalises_units_to_ms() -> None:
    result = e2e.parse_wrk(WRK_SAMPLE)
    assert result.requests_per_sec == pytest.approx(31698.46)
    assert result.latency_p50_ms == pytest.approx(0.912)
    assert result.latency_p90_ms == pytest.approx(1.31)
    assert result.latency_p99_ms == pytest.approx(1200.0)
    assert result.requests == 95140
    assert result.non_2xx == 7
    assert result.socket_errors == 3


def test_parse_wrk_without_latency_distribution_is_an_error() -> None:
    without = "\n".join(line for line in WRK_SAMPLE.splitlines() if "%  " not in line)
    with pytest.raises(BenchmarkError, match="could not parse wrk output"):
        e2e.parse_wrk(without)


def test_e2e_cli_bounds_and_validation() -> None:
    options = e2e.parse_args(
        ["--case", "a=benchmarks.apps:bare", "--duration", "600", "--rounds", "50"]
    )
    assert options.duration == e2e.MAX_DURATION == 60
    assert options.rounds == e2e.MAX_ROUNDS == 10
    assert options.cases == (e2e.Case("a", "benchmarks.apps:bare"),)
    assert e2e.parse_args(["--case", "a=m:x", "--duration", "0"]).duration == 1
    for bad in (
        ["--case", "no-target"],
        ["--case", "a=m:x", "--case", "a=m:y"],
        ["--case", "a=m:x", "--path", "no-slash"],
        ["--case", "a=m:x", "--header", "no colon"],
    ):
        with pytest.raises(SystemExit):
            e2e.parse_args(bad)


def test_e2e_without_wrk_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert e2e.main(["--case", "a=benchmarks.apps:bare"]) == 2
    assert "apt-get install wrk" in capsys.readouterr().err


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_e2e_smoke_on_the_bare_app(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (asgikit[server])")
    output = tmp_path / "e2e.json"
    argv = ["--case", "bare=benchmarks.apps:bare", "--duration", "1", "--rounds", "1"]
    argv += ["--connections", "4", "--app-dir", str(PROJECT_ROOT), "--output", str(output)]
    assert e2e.main(argv) == 0
    document = json.loads(output.read_text())
    assert document["baseline"] == "bare"
    [case] = document["cases"]
    assert case["requests_per_sec"] > 0
    assert case["ratio"] == 1.0
    assert "1.00x (baseline)" in capsys.readouterr().out
