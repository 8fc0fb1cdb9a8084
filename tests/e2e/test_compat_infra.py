"""The e2e machinery itself, in-process: the stack's app and config, server start-up
failures, and how outcomes become compatibility-table cells."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Literal

import pytest

from asgikit.config import load_config
from asgikit.testing import lifespan, request, websocket
from tests.e2e import compat, conftest, servers, stack

pytestmark = pytest.mark.anyio


# ---- the stack's app, in-process ------------------------------------------------------


async def test_the_starlette_app_answers_every_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = tmp_path / "lifespan"
    served = tmp_path / "served.txt"
    served.write_bytes(stack.FILE_BODY)
    monkeypatch.setenv(stack.LIFESPAN_ENV, str(notes))
    monkeypatch.setenv(stack.FILE_ENV, str(served))
    app = stack.example_app
    state: dict[str, Any] = {}
    async with lifespan(app, state=state):
        home = await request(app, "GET", "/?name=you", state=state)
        assert home.text == "Hello, you!"
        bare = await request(app, "GET", "/")  # no lifespan state: the fallback greeting
        assert bare.text == "Hi, world!"
        assert (await request(app, "GET", "/stream")).body == b"".join(
            b"chunk %d\n" % n for n in range(5)
        )
        events = await request(app, "GET", "/events")
        assert events.body.count(b"data: event") == stack.EVENTS
        as_body = await request(app, "GET", "/file")
        assert as_body.body == stack.FILE_BODY and as_body.header("x-pathsend-offered") == "0"
        offered = await request(
            app, "GET", "/file", extensions={"http.response.pathsend": {}}, state=state
        )
        assert offered.pathsend == str(served) and offered.header("x-pathsend-offered") == "1"
        assert (await request(app, "GET", "/scope")).json() == {
            "client": ["str", "int"],
            "server": ["str", "int"],
        }
        assert (await request(app, "GET", "/document")).json() == json.loads(stack.DOCUMENT)
        session = await websocket(app, "/ws", frames=["a", "b"], state=state)
        assert session.sent == ["a", "b"]
    assert [line.split()[0] for line in notes.read_text().splitlines()] == ["startup", "shutdown"]


async def test_the_slow_endpoint_gets_the_504_through_the_stack() -> None:
    response = await request(stack.pipeline().wrap(stack.starlette_app), "GET", "/slow")
    assert response.status == 504


async def test_without_a_lifespan_file_nothing_is_noted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(stack.LIFESPAN_ENV, raising=False)
    async with lifespan(stack.starlette_app):
        pass


async def test_the_raw_app() -> None:
    async with lifespan(stack.raw_app):
        missing = await request(stack.raw_app, "GET", "/nothing")
        assert missing.status == 404 and missing.body == b"Not Found"
        echoed = await request(stack.raw_app, "POST", "/echo", body=[b"a", b"b"])
        assert echoed.body == b"ab" and echoed.header("content-type") == "text/plain"


def test_the_config_file_loads_and_renders_each_value_type(tmp_path: Path) -> None:
    path = tmp_path / "stack.toml"
    path.write_text(stack.config_toml("tests.e2e.stack:raw_app", factory=False))
    config = load_config(path)
    assert [entry.resolved.name for entry in config.middleware] == stack.names()
    assert config.logging == {"format": "json", "level": "info"}
    assert "factory = true" in stack.config_toml("x:y", factory=True)
    assert stack._toml({"a": [True, False, 1.5]}) == '{ "a" = [true, false, 1.5] }'
    with pytest.raises(TypeError, match="no TOML"):
        stack._toml(object())


def test_json_lines_skips_what_is_not_a_json_object() -> None:
    text = 'plain\n{"a": 1}\n{broken\n[1]\n  {"b": 2}  \n'
    assert list(stack.json_lines(text)) == [{"a": 1}, {"b": 2}]


def test_available_and_the_served_attribute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stack.available("cors") and not stack.available("no_such_middleware")
    path = tmp_path / "served.toml"
    path.write_text(stack.config_toml("tests.e2e.stack:raw_app", log_format="console"))
    monkeypatch.setenv("ASGIKIT_CONFIG", str(path))
    monkeypatch.setattr(stack, "_served", None)
    monkeypatch.setattr("asgikit.logging.configure", lambda **options: None)
    served = stack.served
    assert callable(served) and stack.served is served  # built once
    with pytest.raises(AttributeError):
        _ = stack.nothing_here


# ---- servers that do not come up ------------------------------------------------------


def test_a_server_that_exits_is_reported_with_its_output(tmp_path: Path) -> None:
    spec = servers.ServerSpec("broken", "asgikit_no_such_module", lambda port: [])
    with (
        pytest.raises(RuntimeError, match="broken exited early"),
        servers.start_all([spec], lambda spec: {}, tmp_path),
    ):
        pass  # pragma: no cover - never reached


def test_a_server_that_never_listens_is_stopped_by_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers, "STARTUP_TIMEOUT", 0.3)
    sleeper = servers.ServerSpec(
        "sleeper", "timeit", lambda port: ["-n", "1", "import time; time.sleep(60)"]
    )
    started: list[servers.Running] = []
    original = servers._wait

    def wait(running: list[servers.Running]) -> None:
        started.extend(running)
        original(running)

    monkeypatch.setattr(servers, "_wait", wait)
    with (
        pytest.raises(RuntimeError, match="sleeper did not accept connections"),
        servers.start_all([sleeper], lambda spec: {}, tmp_path),
    ):
        pass  # pragma: no cover - never reached
    assert started and not started[0].alive()


def test_a_missing_log_line_is_an_assertion(tmp_path: Path) -> None:
    log = (tmp_path / "out").open("w+b")
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    running = servers.Running(servers.SERVERS[0], 1, process, log, {})
    log.write(b'{"event": "http.request", "request_id": "x"}\n' * 2)
    with pytest.raises(AssertionError, match="logged 2 times"):
        running.access_line("x", timeout=0.1)
    with pytest.raises(AssertionError, match="no access log line for y"):
        running.access_line("y", timeout=0.1)
    log.close()
    spans = tmp_path / "spans"
    with_spans = servers.Running(servers.SERVERS[0], 1, process, log, {stack.SPANS_ENV: str(spans)})
    with pytest.raises(AssertionError, match="no span of trace ab"):
        with_spans.spans("ab", timeout=0.1)  # no file yet
    spans.write_text('{"context": {"trace_id": "0xab"}}\n')
    assert with_spans.spans("ab") == [{"context": {"trace_id": "0xab"}}]


def test_needs_skips_when_the_middleware_is_not_in_the_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack.needs("cors")
    monkeypatch.setattr(stack, "MIDDLEWARE", [m for m in stack.MIDDLEWARE if m[0] != "cors"])
    with pytest.raises(pytest.skip.Exception, match="cors is not in the e2e stack"):
        stack.needs("cors")


# ---- outcomes into cells ----------------------------------------------------------------


def _report(
    outcome: Literal["passed", "failed", "skipped"], longrepr: Any = None, **extra: Any
) -> pytest.TestReport:
    return pytest.TestReport("t", ("t.py", 1, "t"), {}, outcome, longrepr, "call", **extra)


def test_the_reason_of_each_outcome() -> None:
    assert conftest._reason(_report("skipped", ("t.py", 1, "Skipped: no tool"))) == "no tool"
    assert "failed" in conftest._reason(_report("failed", "boom"))
    xfailed = _report("skipped", None)
    xfailed.wasxfail = "reason: cannot"
    assert conftest._reason(xfailed) == "cannot"
    noted = _report("passed", user_properties=[("compat_note", "a"), ("other", "b")])
    assert conftest._reason(noted) == "a"


def test_the_session_writes_results_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results.json"
    monkeypatch.setattr(compat, "RESULTS", results)
    recorded = {("servers", "s", "http"): {"outcome": "passed", "reason": ""}}
    session: Any = types.SimpleNamespace(
        config=types.SimpleNamespace(stash={conftest._RECORDED: recorded})
    )
    monkeypatch.delenv(conftest.RECORD_ENV, raising=False)
    conftest.pytest_sessionfinish(session)
    assert not results.exists()
    monkeypatch.setenv(conftest.RECORD_ENV, "1")
    conftest.pytest_sessionfinish(session)
    written = compat.load(results)
    assert written["servers"] == {"s": {"http": {"outcome": "passed", "reason": ""}}}
    assert "uvicorn" in written["versions"]


def test_render_without_versions_or_notes() -> None:
    page = compat.render({"servers": {"s": {"http": {"outcome": "passed", "reason": ""}}}}, "x")
    assert "Recorded with" not in page and "Notes:" not in page


def test_the_module_runs_as_a_command() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "tests.e2e.compat"],
        cwd=servers.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert printed.startswith("# Compatibility")


def test_the_traced_factories_export_spans_as_json_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry import trace

    monkeypatch.delenv(stack.SPANS_ENV, raising=False)
    installed: list[Any] = []
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)  # not this process's
    assert stack.traced_example_app() is stack.example_app
    assert stack.traced_starlette_app() is stack.starlette_app
    assert not installed
    spans = tmp_path / "spans"
    monkeypatch.setenv(stack.SPANS_ENV, str(spans))
    out = stack.export_spans()
    assert out is not None
    (provider,) = installed
    with provider.get_tracer("test").start_as_current_span("one"):
        pass
    provider.shutdown()
    out.close()
    (span,) = stack.json_lines(spans.read_text())
    assert span["name"] == "one"


async def test_acked_events_wait_for_each_ack_and_say_when_none_comes(
    monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    monkeypatch.setattr(stack, "ACK_TIMEOUT", 0.05)
    app = stack.starlette_app
    key = f"infra-{anyio_backend}"  # the events belong to one event loop
    for n in range(2):
        assert (await request(app, "GET", f"/ack?id={key}&n={n}")).text == "ok"
    response = await request(app, "GET", f"/events?id={key}")
    assert response.body.count(b"data: event") == 3  # 0 and 1 acked, 2 sent, never acked
    assert response.body.endswith(b"data: timeout waiting for the client to decode event 2\n\n")
