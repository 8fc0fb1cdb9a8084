"""End-to-end fixtures: the six servers around the full stack, and the compatibility record.

``stack_servers`` starts every server in ``tests.e2e.servers.SERVERS`` at once, once per
session, each with its own config file (the stack of ``tests.e2e.stack``, JSON logs),
lifespan file and output file; they are stopped by PID at the end of the session (or
earlier by the lifespan test, which observes the shutdown).

Tests marked ``@pytest.mark.compat(table, feature)`` have their outcome recorded; with
``ASGIKIT_E2E_RECORD=1`` the session merges them into tests/e2e/compat_results.json
(see tests/e2e/compat.py).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Protocol

import pytest
import structlog
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from tests.e2e import compat, stack
from tests.e2e.servers import SERVERS, Running, ServerSpec, start_all

RECORD_ENV = "ASGIKIT_E2E_RECORD"
_RECORDED = pytest.StashKey[dict[tuple[str, str, str], dict[str, str]]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "compat(table, feature): the test proves a cell of docs/compatibility.md"
    )
    config.stash[_RECORDED] = {}


def _reason(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail).removeprefix("reason: ")
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        return "the test failed: see the e2e run's output"
    return "; ".join(str(value) for key, value in report.user_properties if key == "compat_note")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    marker = item.get_closest_marker("compat")
    callspec = getattr(item, "callspec", None)
    if marker is None or callspec is None:
        return report
    if report.when == "call" or (report.when == "setup" and not report.passed):
        table, feature = marker.args
        row = callspec.params.get("server") or callspec.params.get("framework")
        if hasattr(report, "wasxfail"):
            outcome = "xpassed" if report.passed else "xfailed"
        else:
            outcome = report.outcome
        recorded = item.config.stash[_RECORDED]
        key = (table, str(row), feature)
        if recorded.get(key, {}).get("outcome") in (None, "passed"):  # the worst one counts
            recorded[key] = {"outcome": outcome, "reason": _reason(report)}
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    recorded = session.config.stash.get(_RECORDED, {})
    if recorded and os.environ.get(RECORD_ENV) == "1":
        results = compat.merge(compat.load(), recorded)
        results["versions"] = compat.versions()
        compat.save(results)


class _Limited(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def limitations(self) -> Mapping[str, str]: ...


def expect_limitation(
    request: pytest.FixtureRequest, spec: _Limited, feature: str, *, prefix: bool = True
) -> None:
    """Mark the running test a strict xfail when ``spec`` cannot do ``feature``.

    The reason is the limitation, after the server's name when ``prefix``.
    """
    reason = spec.limitations.get(feature)
    if reason is not None:
        reason = f"{spec.name} {reason}" if prefix else reason
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))


def note(request: pytest.FixtureRequest, text: str) -> None:
    """A note for this test's cell of the compatibility table (a passed cell may have one)."""
    if text:
        request.node.user_properties.append(("compat_note", text))


Lines = list[MutableMapping[str, Any]]


@pytest.fixture
def lines() -> Iterator[Lines]:
    """Every event logged in this process, with structlog's context merged in."""
    structlog.contextvars.clear_contextvars()
    with capture_logs(processors=[merge_contextvars]) as captured:
        yield captured
    structlog.contextvars.clear_contextvars()


def access_line(lines: Lines, request_id: str | None) -> MutableMapping[str, Any]:
    """The one access log line, among ``lines``, of the request ``request_id``."""
    found = [
        line
        for line in lines
        if line["event"] == "http.request" and line["request_id"] == request_id
    ]
    assert len(found) == 1, f"{len(found)} access log lines for {request_id}: {lines}"
    return found[0]


# ---- the servers ------------------------------------------------------------------------


def _server_env(directory: Path) -> Any:
    def env(spec: ServerSpec) -> dict[str, str]:
        app = "traced_example_app" if spec.checked else "traced_starlette_app"
        config = directory / f"{spec.name}.toml"
        text = stack.config_toml(f"tests.e2e.stack:{app}", factory=True)
        config.write_text(text, encoding="utf-8")
        return {
            "ASGIKIT_CONFIG": str(config),
            stack.SPANS_ENV: str(directory / f"{spec.name}.spans"),
            stack.LIFESPAN_ENV: str(directory / f"{spec.name}.lifespan"),
            stack.FILE_ENV: str(directory / "served.txt"),
        }

    return env


@pytest.fixture(scope="session")
def stack_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Running]]:
    """Every server, started at once, serving the full stack; stopped by PID at the end."""
    directory = tmp_path_factory.mktemp("servers")
    (directory / "served.txt").write_bytes(stack.FILE_BODY)
    with start_all(SERVERS, _server_env(directory), directory) as running:
        yield running


@pytest.fixture(scope="module", params=[spec.name for spec in SERVERS])
def server(request: pytest.FixtureRequest, stack_servers: dict[str, Running]) -> Running:
    """One server of the fleet (the tests run once per server)."""
    running = stack_servers[request.param]
    if not running.alive():  # pragma: no cover - a server that died mid-session
        pytest.fail(f"{running.name} is not running:\n{running.output()[-3000:]}")
    return running
