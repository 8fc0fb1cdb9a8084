"""docs/compatibility.md is what the recorded e2e results render to, and how they render."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e import compat, stack


def test_the_page_is_what_the_recorded_results_render_to() -> None:
    results = compat.load()
    assert results, f"{compat.RESULTS} holds no results: run the e2e tests with recording on"
    expected = compat.current_page()
    assert compat.PAGE.read_text(encoding="utf-8") == expected, (
        "docs/compatibility.md is stale: run `python -m tests.e2e.compat --write`"
    )


def test_the_recorded_results_cover_every_server_and_framework() -> None:
    from tests.e2e.servers import SERVERS
    from tests.e2e.test_frameworks import FRAMEWORKS

    results = compat.load()
    assert sorted(results["servers"]) == sorted(spec.name for spec in SERVERS)
    assert sorted(results["frameworks"]) == sorted(framework.name for framework in FRAMEWORKS)
    for table in ("servers", "frameworks"):
        for row, cells in results[table].items():
            assert set(cells) == set(compat.FEATURES[table]), (table, row)
            # What CI may commit: no failures, and every "no" says why.
            for feature, cell in cells.items():
                assert cell["outcome"] in ("passed", "xfailed", "skipped"), (row, feature, cell)
                assert cell["outcome"] == "passed" or cell["reason"], (row, feature)


def test_render_numbers_the_notes_and_marks_each_outcome() -> None:
    results = {
        "servers": {
            "b-server": {
                "http": {"outcome": "passed", "reason": ""},
                "websocket": {"outcome": "xfailed", "reason": "no websockets"},
            },
            "a-server": {
                "http": {"outcome": "failed", "reason": "the test failed"},
                "websocket": {"outcome": "skipped", "reason": "not installed"},
            },
        },
        "versions": {"uvicorn": "1.0"},
    }
    page = compat.render(results, "`cors`", {"a-server": "serve a", "other": "serve o"})
    assert "the canonical order (docs/architecture.md),\n\n`cors`,\n" in page
    assert "- a-server: `serve a`\n" in page and "serve o" not in page
    assert "Recorded with uvicorn 1.0." in page
    assert "| feature | a-server | b-server |" in page
    assert "| GET and POST with bodies | FAILS [1] | yes |" in page
    assert "| websocket echo, logged with the request id | skipped [2] | no [3] |" in page
    assert "| streamed body | n/a | n/a |" in page  # nothing recorded
    assert "1. a-server, http: the test failed\n2. a-server, websocket: not installed\n" in page
    assert "3. b-server, websocket: no websockets" in page
    assert "## Frameworks" not in page  # no rows: no table


def test_merge_overwrites_only_what_was_recorded_and_save_is_stable(tmp_path: Path) -> None:
    results = {"servers": {"x": {"http": {"outcome": "failed", "reason": "r"}}}}
    recorded = {
        ("servers", "x", "http"): {"outcome": "passed", "reason": ""},
        ("frameworks", "y", "hook"): {"outcome": "passed", "reason": "note"},
    }
    merged = compat.merge(results, recorded)
    assert merged["servers"]["x"]["http"]["outcome"] == "passed"
    assert merged["frameworks"] == {"y": {"hook": {"outcome": "passed", "reason": "note"}}}
    path = tmp_path / "results.json"
    compat.save(merged, path)
    first = path.read_text()
    compat.save(compat.load(path), path)
    assert path.read_text() == first and json.loads(first) == merged
    assert compat.load(tmp_path / "absent.json") == {}


def test_versions_names_installed_packages_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "VERSIONED", ("uvicorn", "no-such-package-asgikit"))
    found = compat.versions()
    assert list(found) == ["uvicorn"] and found["uvicorn"][0].isdigit()


def test_the_command_prints_or_writes_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "compatibility.md"
    monkeypatch.setattr(compat, "PAGE", page)
    assert compat.main([]) == 0
    printed = capsys.readouterr().out
    assert printed == compat.current_page()
    assert not page.exists()
    assert compat.main(["--write"]) == 0
    assert page.read_text(encoding="utf-8") == printed


def test_the_stack_is_in_the_canonical_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert stack.names()[0] == "proxy_headers" and stack.names()[-1] == "compression"
    swapped = [stack.MIDDLEWARE[1], stack.MIDDLEWARE[0], *stack.MIDDLEWARE[2:]]
    monkeypatch.setattr(stack, "MIDDLEWARE", swapped)
    with pytest.raises(ValueError, match="canonical order"):
        stack.names()
