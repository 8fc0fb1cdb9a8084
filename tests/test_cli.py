"""The asgikit command: check, schema, serve (with a real uvicorn on a loopback port)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
import types
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

import asgikit.config as config_module
import asgikit.config.observability as observability_module
from asgikit.cli import BEGIN, END, main, schema_markdown
from asgikit.config import CONFIG_ENV, json_schema
from asgikit.registry import Registry
from asgikit.types import ASGIApp, Receive, Scope, Send
from tests._processes import free_port, stop

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIST = Path(__file__).resolve().parent / "plugin_dist"
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
SENTINEL = object()


class Secretive:
    """Options a check must not show.

    Args:
        app: The app.
        api_token: A secret.
        url: A URL that may hold a password.
        retries: Not a secret.
    """

    def __init__(
        self, app: ASGIApp, *, api_token: str = "", url: str = "", retries: int = 1
    ) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class Anything:
    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.app = app


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """No config from the environment; ``sys.path`` restored."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.delenv("ASGIKIT_WORKERS", raising=False)  # serve sets it
    monkeypatch.setattr(sys, "path", list(sys.path))


def run(*args: str) -> tuple[int, str, str]:
    """``asgikit ARGS`` in this process: exit status, stdout, stderr."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(args))
        except SystemExit as exc:
            status = int(exc.code or 0)
    return status, out.getvalue(), err.getvalue()


def write(tmp_path: Path, text: str, name: str = "asgikit.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------
# help


@pytest.mark.parametrize("command", [[], ["serve"], ["check"], ["schema"]])
def test_help_everywhere(command: list[str]) -> None:
    status, out, _ = run(*command, "--help")
    assert status == 0
    assert out.startswith("usage: asgikit")


def test_a_command_is_required() -> None:
    status, _, err = run()
    assert status == 2
    assert "required: COMMAND" in err


def test_version() -> None:
    import asgikit

    status, out, _ = run("--version")
    assert status == 0
    assert out.strip() == f"asgikit {asgikit.__version__}"


def test_the_main_module_runs_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import runpy

    monkeypatch.setattr(sys, "argv", ["asgikit", "--version"])
    with pytest.raises(SystemExit) as caught:
        runpy.run_module("asgikit", run_name="__main__")
    assert caught.value.code == 0


def test_python_dash_m_asgikit() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "asgikit", "check", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "usage: asgikit check" in result.stdout


# --------------------------------------------------------------------------------------
# check


def test_check_shows_the_pipeline_outermost_first_with_effective_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    status, out, err = run("check", "examples/asgikit.toml")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "examples/asgikit.toml: ok"
    assert lines[1] == "  app     examples.hello:app"
    assert lines[2] == "  serve   http://127.0.0.1:8000/  (1 worker, reload off, log level info)"
    entries = tomllib.loads((ROOT / "examples/asgikit.toml").read_text())["middleware"]
    heading = f"pipeline, outermost first ({len(entries)} middleware):"
    assert heading in lines
    start = lines.index(heading)
    numbered = [line.split()[1] for line in lines[start:] if line[:5].strip().rstrip(".").isdigit()]
    assert numbered == [entry["use"] for entry in entries]
    assert lines[start + 1].startswith("  1. proxy_headers  asgikit.middleware.proxy_headers:")
    assert lines[start + 2] == '       trusted_proxies = ["127.0.0.1", "::1"]'
    assert lines[start + 3] == '       headers = ["forwarded", "x-forwarded"]  # default'
    assert lines[start + 4].startswith("  2. request_id  ")
    assert '       generator = "asgikit.middleware.request_id:uuid7_hex"  # default' in lines
    assert lines[-2:] == ["  -> examples.hello:app", "0 warnings"]


def test_check_reads_the_default_config_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    status, _, err = run("check")
    assert status == 2
    assert err == (
        "asgikit: error: no config file 'asgikit.toml' here: name one (asgikit serve "
        "path/to/asgikit.toml) or set ASGIKIT_CONFIG\n"
    )
    write(tmp_path, 'app = "tests.test_cli:Anything"\n', name="other.toml")
    monkeypatch.setenv(CONFIG_ENV, "other.toml")
    status, out, _ = run("check")
    assert status == 0
    assert out.startswith("other.toml: ok")


def test_check_masks_values_from_the_environment_and_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN", "tok-123456")
    monkeypatch.setenv("HOST", "db.internal")
    path = write(
        tmp_path,
        """\
        app = "tests.test_cli:Anything"
        factory = true
        [server]
        host = "0.0.0.0"
        workers = 3
        reload = false
        [[middleware]]
        use = "tests.test_cli:Secretive"
        api_token = "${TOKEN}"
        url = "redis://user:hunter2@${HOST}:6379/0"
        [[middleware]]
        use = "tests.test_cli:Secretive"
        api_token = "written-in-the-file"
        url = "redis://user:hunter2@localhost/0"
        [[middleware]]
        use = "tests.test_cli:Anything"
        password = "in-kwargs"
        plain = 3
        """,
    )
    status, out, _ = run("check", str(path))
    assert status == 0
    for secret in ("tok-123456", "db.internal", "hunter2", "written-in-the-file", "in-kwargs"):
        assert secret not in out
    lines = out.splitlines()
    assert "  app     tests.test_cli:Anything  (factory)" in lines
    assert "  serve   http://127.0.0.1:8000/  (3 workers, reload off, log level info)" in lines
    assert '       api_token = "${TOKEN}"  # from the environment' in lines
    assert '       url = "redis://user:hunter2@${HOST}:6379/0"  # from the environment' not in lines
    assert '       url = "redis://user:***@${HOST}:6379/0"  # from the environment' in lines
    assert '       api_token = "***"  # secret' in lines
    assert '       url = "redis://user:***@localhost/0"' in lines
    assert "       retries = 1  # default" in lines
    assert '       password = "***"  # secret' in lines
    assert "       plain = 3" in lines


def test_check_warns_and_fails_with_strict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_config import FAKES

    monkeypatch.setattr(config_module, "Registry", lambda: FAKES)
    path = write(
        tmp_path,
        """\
        app = "tests.test_cli:Anything"
        [[middleware]]
        use = "compression"
        [[middleware]]
        use = "access_log"
        """,
    )
    status, out, _ = run("check", str(path))
    assert status == 0
    assert out.splitlines()[-2:] == [
        "1 warning",
        f"{path}:2:1: warning: middleware[0]: compression is outside access_log: the bytes "
        "logged are not the bytes sent; list it after access_log (middleware[1]), as in the "
        "canonical order",
    ]
    status, _, err = run("check", "--strict", str(path))
    assert status == 1
    assert err == "asgikit: warnings are errors with --strict\n"


def test_check_shows_the_logging_options_when_asgikit_has_logging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def configure(*, format: str = "auto", hook: Any = SENTINEL) -> None:
        pass

    module = types.ModuleType("asgikit.logging")
    module.configure = configure  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "asgikit.logging", module)
    monkeypatch.setattr(observability_module, "_logging_module_exists", lambda: True)
    path = write(tmp_path, 'app = "tests.test_cli:Anything"\n[logging]\nformat = "json"\n')
    status, out, _ = run("check", str(path))
    assert status == 0
    lines = out.splitlines()
    assert "  logs    asgikit.logging.configure" in lines
    assert '       format = "json"' in lines
    assert "       hook = (set in code)  # default" in lines


def test_check_without_asgikit_logging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observability_module, "_logging_module_exists", lambda: False)
    path = write(tmp_path, 'app = "tests.test_cli:Anything"\n')
    status, out, _ = run("check", str(path))
    assert status == 0
    assert "  logs    structlog's defaults (no asgikit.logging in this version)" in out


def test_check_shows_tables_as_inline_tables(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        app = "tests.test_cli:Anything"
        [[middleware]]
        use = "tests.test_cli:Anything"
        routes = { "/api" = { total = 5 }, plain = {} }
        """,
    )
    status, out, _ = run("check", str(path))
    assert status == 0
    assert '       routes = { "/api" = { total = 5 }, plain = {} }' in out.splitlines()


def test_check_errors_are_one_line_each_without_a_traceback(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        app = "tests.test_cli:Anything"
        [[middleware]]
        use = "request_idd"
        [[middleware]]
        use = "request_id"
        header_nam = "x"
        """,
    )
    status, out, err = run("check", str(path))
    assert status == 1
    assert out == ""
    assert err.splitlines() == [
        f"{path}:3:1: error: middleware[0].use: unknown middleware 'request_idd'; did you mean "
        "'request_id'?",
        f"{path}:6:1: error: middleware[1].header_nam: request_id has no option 'header_nam'; "
        "did you mean 'header_name'?",
        "asgikit: 2 errors",
    ]


def test_check_imports_the_app(tmp_path: Path) -> None:
    path = write(tmp_path, 'app = "tests.test_cli:Anythng"\n')
    status, _, err = run("check", str(path))
    assert status == 1
    assert "did you mean 'Anything'?" in err
    assert err.endswith("asgikit: 1 error\n")


def test_a_closed_pipe_ends_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    class Closed:
        def write(self, text: str) -> int:
            raise BrokenPipeError

        def flush(self) -> None:
            raise BrokenPipeError

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["check", "examples/asgikit.toml"]) == 1
    assert sys.stdout.name == os.devnull
    sys.stdout.close()


# --------------------------------------------------------------------------------------
# schema


def toml_as_json(path: Path) -> Any:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def test_schema_prints_a_json_schema() -> None:
    status, out, _ = run("schema")
    assert status == 0
    schema = json.loads(out)
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["title"] == "asgikit config file"


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_the_example_files_are_valid_by_the_schema(example: Path) -> None:
    schema = json_schema()
    document = toml_as_json(example)
    missing = [
        entry["use"]
        for entry in document.get("middleware", [])
        if entry["use"] in schema["x-unavailable"]
    ]
    if missing:
        pytest.skip(f"{example.name} uses middleware not landed yet: {missing}")
    jsonschema.validate(document, schema, cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_the_example_files_load(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    status, out, err = run("check", str(example.relative_to(ROOT)))
    if status and "not available in this version" in err:
        pytest.skip(f"{example.name} uses middleware not landed yet")
    assert (status, err) == (0, "")
    assert "0 warnings" in out


@pytest.mark.parametrize(
    "document",
    [
        {"app": "x:y", "middleware": [{"use": "request_id", "header_nam": "x"}]},
        {"app": "x:y", "middleware": [{"use": "request_idd"}]},
        {"app": "x:y", "middleware": [{"use": "request_id", "trust_incoming": "yes"}]},
        {"app": "x.y"},
        {"app": "x:y", "server": {"prot": 1}},
        {"app": "x:y", "factroy": True},
        {},
    ],
)
def test_the_schema_rejects_what_loading_rejects(document: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(json_schema())
    assert not validator.is_valid(document)


def test_the_schema_accepts_import_strings_with_any_options() -> None:
    validator = jsonschema.Draft7Validator(json_schema())
    assert validator.is_valid({"app": "x:y", "middleware": [{"use": "pkg.mod:Class", "a": 1}]})


def test_the_schema_includes_installed_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGIN_DIST))
    _, out, _ = run("schema")
    assert "middleware.stamp" in json.loads(out)["$defs"]
    _, out, _ = run("schema", "--builtins-only")
    assert "middleware.stamp" not in json.loads(out)["$defs"]


def test_schema_reports_plugin_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "dup-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dup\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[asgikit.middleware]\nstamp = dup:Stamp\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(PLUGIN_DIST))
    status, out, err = run("schema")
    assert status == 0
    assert err.startswith("asgikit: warning: middleware name 'stamp' is registered by two")
    assert "middleware.stamp" not in json.loads(out)["$defs"]


def test_schema_markdown_is_generated_from_the_schema() -> None:
    status, out, _ = run("schema", "--markdown", "--builtins-only")
    assert status == 0
    assert out == schema_markdown(json_schema(Registry(group=None)))
    assert "#### `request_id`" in out
    assert (
        '| `header_name` | string or array of string | `"x-request-id"` | The request and '
        "response header carrying the id; or a list of names" in out
    )
    assert "| `app` | import string | required |" in out
    assert "| `port` | integer (≥ 0, ≤ 65535) | `8000` |" in out


def test_markdown_of_every_kind_of_type() -> None:
    schema = {
        "properties": {
            "a": {"type": "array", "items": {"type": "number"}, "description": "x | y"},
            "b": {"type": "object", "additionalProperties": {"type": "boolean"}},
            "c": {"type": "object"},
            "d": {"anyOf": [{"type": "null"}, {}]},
            "e": {"type": "integer", "minimum": 1},
            "f": {"type": ["string", "null"]},
            "g": {"$ref": "#/$defs/x", "default": {}},
        },
        "$defs": {},
        "x-unavailable": ["tracing"],
    }
    text = schema_markdown(schema)
    bare = {
        "properties": {},
        "$defs": {
            "middleware.bare": {
                "properties": {"use": {"enum": ["bare"]}, "n": {"type": "integer"}},
                "required": ["use"],
            },
            "middleware.any": {"properties": {"use": {"type": "string"}}, "required": []},
        },
    }
    bare_text = schema_markdown(bare)
    assert "#### `bare`\n\n| Option |" in bare_text
    assert "Not available" not in bare_text
    assert "#### `any`" not in bare_text
    assert "| `a` | array of number |  | x \\| y |" in text
    assert "| `b` | table of boolean |" in text
    assert "| `c` | table |" in text
    assert "| `d` | none or any |" in text
    assert "| `e` | integer (≥ 1) |" in text
    assert "| `f` | any |" in text
    assert "| `g` | table |  |" in text
    assert text.endswith("Not available in this version of asgikit yet: `tracing`.\n")


def test_schema_update_rewrites_the_generated_section(tmp_path: Path) -> None:
    page = tmp_path / "config.md"
    page.write_text(f"# Title\n\n{BEGIN}\nold\n{END}\n\nAfter.\n")
    status, _, err = run("schema", "--markdown", "--builtins-only", "--update", str(page))
    assert status == 0
    assert err == f"asgikit: updated the reference in {page}\n"
    text = page.read_text()
    assert text.startswith(f"# Title\n\n{BEGIN}\n\n### Top-level keys")
    assert text.endswith(f"{END}\n\nAfter.\n")
    assert "\nold\n" not in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--update", "x.md"], "--update rewrites a Markdown file: add --markdown"),
        (["--markdown", "--update", "/nonexistent/x.md"], "cannot read /nonexistent/x.md"),
    ],
)
def test_schema_usage_errors(args: list[str], message: str) -> None:
    status, _, err = run("schema", *args)
    assert status == 2
    assert err.startswith(f"asgikit: error: {message}")


def test_schema_update_needs_the_markers(tmp_path: Path) -> None:
    page = tmp_path / "config.md"
    page.write_text("no markers\n")
    status, _, err = run("schema", "--markdown", "--update", str(page))
    assert status == 2
    assert "has no <!-- generated reference: begin -->" in err


def test_the_config_reference_in_the_docs_is_up_to_date() -> None:
    page = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    start, end = page.index(BEGIN) + len(BEGIN) + 1, page.index(END)
    expected = schema_markdown(json_schema(Registry(group=None)))
    assert page[start:end] == expected, (
        "docs/config.md is out of date: run "
        "`.venv/bin/python -m asgikit schema --markdown --builtins-only --update docs/config.md`"
    )


# --------------------------------------------------------------------------------------
# serve, with uvicorn.run replaced


@pytest.fixture
def fake_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    monkeypatch.setattr(observability_module, "_logging_module_exists", lambda: False)
    import inspect

    import uvicorn as real_uvicorn

    calls: list[tuple[Any, dict[str, Any]]] = []

    def run(app: Any, **options: Any) -> None:
        calls.append((app, options))

    run.__signature__ = inspect.signature(real_uvicorn.run)  # type: ignore[attr-defined]
    module = types.ModuleType("uvicorn")
    module.run = run  # type: ignore[attr-defined]  # its keywords are checked
    monkeypatch.setitem(sys.modules, "uvicorn", module)
    return calls


def test_serve_passes_the_table_and_the_flags_to_uvicorn(
    tmp_path: Path, fake_uvicorn: list[tuple[Any, dict[str, Any]]]
) -> None:
    path = write(
        tmp_path,
        """\
        app = "tests.test_config:make_app"
        factory = true
        [server]
        port = 8123
        root_path = "/shop"
        timeout_keep_alive = 7
        h11_max_incomplete_event_size = 9000
        [[middleware]]
        use = "request_id"
        """,
    )
    status, _, err = run(
        "serve", str(path), "--host", "::", "--log-level", "debug", "--limit-concurrency", "50"
    )
    assert status == 0
    assert err == (
        "asgikit: serving tests.test_config:make_app through 1 middleware with uvicorn: open "
        "http://[::1]:8123/  (CTRL+C to stop)\n"
    )
    [(app, options)] = fake_uvicorn
    assert app == "asgikit.config:app_from_env"  # built in the server process
    assert options == {
        "host": "::",
        "port": 8123,
        "workers": 1,
        "reload": False,
        "log_level": "debug",
        "root_path": "/shop",
        "timeout_keep_alive": 7,
        "limit_concurrency": 50,
        "factory": True,
        "proxy_headers": False,
        "lifespan": "auto",
        "h11_max_incomplete_event_size": 9000,
    }
    assert os.environ["ASGIKIT_WORKERS"] == "1"


def test_serve_with_workers_has_each_worker_build_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_uvicorn: list[tuple[Any, dict[str, Any]]]
) -> None:
    from tests.test_config import FAKES

    monkeypatch.setattr(config_module, "Registry", lambda: FAKES)
    path = write(
        tmp_path,
        """\
        app = "tests.test_config:hello_app"
        [server]
        workers = 3
        port = 0
        [[middleware]]
        use = "access_log"
        [[middleware]]
        use = "compression"
        """,
    )
    status, _, err = run("serve", str(path))
    assert status == 0
    assert "open http://127.0.0.1:<a free port>/" in err
    [(app, options)] = fake_uvicorn
    assert app == "asgikit.config:app_from_env"
    assert options["factory"] is True
    assert options["workers"] == 3
    assert options["reload"] is False
    assert options["access_log"] is False  # asgikit's access log replaces uvicorn's
    assert os.environ[CONFIG_ENV] == str(path.resolve())


def test_serve_with_reload_watches_the_config_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_uvicorn: list[tuple[Any, dict[str, Any]]]
) -> None:
    (tmp_path / "src").mkdir()
    path = write(tmp_path, 'app = "tests.test_config:hello_app"\napp_dir = "src"\n')
    monkeypatch.chdir(ROOT)
    status, _, _ = run("serve", str(path), "--reload", "--port", "8124")
    assert status == 0
    [(app, options)] = fake_uvicorn
    assert app == "asgikit.config:app_from_env"
    assert options["reload"] is True
    assert options["workers"] == 1
    assert options["reload_dirs"] == sorted({str(ROOT), str(tmp_path), str(tmp_path / "src")})
    assert options["reload_includes"] == ["asgikit.toml"]


def test_serve_configures_logging_and_leaves_uvicorn_logging_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_uvicorn: list[tuple[Any, dict[str, Any]]]
) -> None:
    calls: list[dict[str, Any]] = []
    module = types.ModuleType("asgikit.logging")
    module.configure = lambda **options: calls.append(options)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "asgikit.logging", module)
    monkeypatch.setattr(observability_module, "_logging_module_exists", lambda: True)
    path = write(tmp_path, 'app = "tests.test_config:hello_app"\n[logging]\nformat = "json"\n')
    assert run("serve", str(path))[0] == 0
    assert calls == [{"format": "json"}]
    [(_, options)] = fake_uvicorn
    assert options["log_config"] is None


def test_serve_prints_the_config_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_uvicorn: list[tuple[Any, dict[str, Any]]]
) -> None:
    from tests.test_config import FAKES

    monkeypatch.setattr(config_module, "Registry", lambda: FAKES)
    path = write(
        tmp_path,
        """\
        app = "tests.test_config:hello_app"
        [[middleware]]
        use = "compression"
        [[middleware]]
        use = "access_log"
        """,
    )
    status, _, err = run("serve", str(path))
    assert status == 0
    assert "warning: middleware[0]: compression is outside access_log" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "--port: expected `int` <= 65535"),
        (["--workers", "0"], "--workers: expected `int` >= 1"),
        (["--limit-concurrency", "0"], "--limit-concurrency: expected `int` >= 1"),
        (["--timeout-keep-alive", "-1"], "--timeout-keep-alive: expected `float` > 0.0"),
        (["--workers", "2", "--reload"], "--reload restarts one process: it cannot be combined"),
    ],
)
def test_serve_usage_errors(
    tmp_path: Path, args: list[str], message: str, fake_uvicorn: list[tuple[Any, dict[str, Any]]]
) -> None:
    path = write(tmp_path, 'app = "tests.test_config:hello_app"\n')
    status, _, err = run("serve", str(path), *args)
    assert status == 2
    assert err.startswith(f"asgikit: error: {message}")
    assert fake_uvicorn == []


def test_serve_without_uvicorn_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    path = write(tmp_path, 'app = "tests.test_config:hello_app"\n')
    status, _, err = run("serve", str(path))
    assert status == 2
    assert err == (
        "asgikit: error: serving with uvicorn needs it installed: pip install uvicorn "
        "(or pip install 'asgikit[server]')\n"
    )


def test_serve_reports_config_errors_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'app = "tests.test_config:hello_app"\n[server]\nport = "x"\n')
    status, _, err = run("serve", str(path))
    assert status == 1
    assert err.splitlines() == [
        f"{path}:3:1: error: server.port: expected `int`, got `str`",
        "asgikit: 1 error",
    ]


# --------------------------------------------------------------------------------------
# serve, for real: uvicorn in a subprocess on a free loopback port

SERVED_APP = """\
import pathlib

import anyio

EVENTS = pathlib.Path(__file__).with_name("events.log")


def note(event):
    with EVENTS.open("a") as events:
        events.write(event + "\\n")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                note("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/slow":
        note("slow started")
        await anyio.sleep(1.5)
    client = scope["client"][0] if scope.get("client") else "-"
    body = f"{client} {scope.get('asgikit.request_id', '-')}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
"""


class Server:
    """``asgikit serve`` in a subprocess, stopped by its PID."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.port = free_port()
        self.directory = directory
        self.stdout = (directory / "stdout.log").open("w")
        self.stderr = (directory / "stderr.log").open("w")
        env = {**os.environ, "PYTHONPATH": str(PLUGIN_DIST), "NO_COLOR": "1"}
        env.pop(CONFIG_ENV, None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "asgikit", "serve", "--port", str(self.port), *args],
            cwd=directory,
            env=env,
            stdout=self.stdout,
            stderr=self.stderr,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                return httpx.get(self.url + "/", timeout=2.0)
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"the server did not answer: {self.output()}")

    def output(self) -> str:
        self.stdout.flush()
        self.stderr.flush()
        return (self.directory / "stdout.log").read_text() + (
            self.directory / "stderr.log"
        ).read_text()

    def events(self) -> list[str]:
        path = self.directory / "events.log"
        return path.read_text().splitlines() if path.exists() else []

    def stop(self) -> None:
        stop(self.process, 15)
        self.stdout.close()
        self.stderr.close()


@pytest.fixture
def served(tmp_path: Path) -> Path:
    (tmp_path / "served_app.py").write_text(SERVED_APP)
    write(
        tmp_path,
        """\
        app = "served_app:app"
        [server]
        log_level = "info"
        [[middleware]]
        use = "proxy_headers"
        [[middleware]]
        use = "request_id"
        [[middleware]]
        use = "stamp"
        value = "from-the-plugin"
        [[middleware]]
        use = "contract"
        """,
    )
    return tmp_path


def test_serve_answers_through_the_pipeline_and_shuts_down_gracefully(served: Path) -> None:
    server = Server(served)
    try:
        response = server.wait_ready()
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        assert response.text == f"127.0.0.1 {request_id}"
        assert response.headers["x-stamp"] == "from-the-plugin"  # the plug-in's middleware
        forwarded = httpx.get(
            server.url + "/", headers={"x-forwarded-for": "203.0.113.9"}, timeout=5
        )
        assert forwarded.text.startswith("203.0.113.9 ")  # proxy_headers trusts 127.0.0.1
        assert (
            "asgikit: serving served_app:app through 4 middleware with uvicorn: open "
            in server.output()
        )

        # SIGTERM while a request is in flight: it completes, then the lifespan shuts down.
        results: list[httpx.Response] = []
        slow = threading.Thread(
            target=lambda: results.append(httpx.get(server.url + "/slow", timeout=20))
        )
        slow.start()
        deadline = time.monotonic() + 15
        while "slow started" not in server.events() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "slow started" in server.events()
        server.process.send_signal(signal.SIGTERM)
        slow.join(timeout=20)
        assert [r.status_code for r in results] == [200]
        # uvicorn shuts down, then re-raises the signal it caught: asgikit serve ends
        # with status 0 all the same, as a clean stop.
        assert server.process.wait(timeout=20) == 0
        assert server.events()[-1] == "shutdown"
    finally:
        server.stop()


def test_serve_with_workers_builds_the_app_in_each_worker(served: Path) -> None:
    server = Server(served, "--workers", "2")
    try:
        response = server.wait_ready(timeout=60)
        assert response.headers["x-stamp"] == "from-the-plugin"
        assert response.headers["x-request-id"]
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        assert server.events().count("shutdown") == 2
    finally:
        server.stop()


def test_check_shows_the_telemetry_table(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'app = "tests.test_cli:Anything"\n[telemetry]\nservice_name = "shop"\ntraces = "console"\n',
    )
    status, out, _ = run("check", str(path))
    assert status == 0
    lines = out.splitlines()
    assert "  traces  asgikit.telemetry.configure" in lines
    assert '       service_name = "shop"' in lines
    assert '       traces = "console"' in lines
    assert "       span_processors = (set in code)  # default" in lines
    path = write(tmp_path, 'app = "tests.test_cli:Anything"\n')
    assert "  traces  not set up here (no [telemetry] table)" in run("check", str(path))[1]


@pytest.mark.parametrize(
    ("host", "options", "starts"),
    [
        ("127.0.0.1", "", True),
        ("::1", "", True),
        ("localhost", "", True),
        ("0.0.0.0", "", False),
        ("192.0.2.10", "", False),
        ("devbox.example", "", False),
        ("0.0.0.0", "allow_non_loopback = true", True),
        ("0.0.0.0", "enabled = false", True),
    ],
)
def test_serve_keeps_the_inspector_on_loopback(
    tmp_path: Path,
    fake_uvicorn: list[tuple[Any, dict[str, Any]]],
    host: str,
    options: str,
    starts: bool,
) -> None:
    path = write(
        tmp_path,
        f'app = "tests.test_config:hello_app"\n\n[[middleware]]\nuse = "inspector"\n{options}\n',
    )
    status, _, err = run("serve", str(path), "--host", host)
    if starts:
        assert status == 0
        assert len(fake_uvicorn) == 1
    else:
        assert status == 2
        assert fake_uvicorn == []
        assert "the development inspector (line 3) shows every request's headers" in err
        assert f"it will not start on {host}" in err


def test_serve_says_where_the_inspector_is(
    tmp_path: Path, fake_uvicorn: list[tuple[Any, dict[str, Any]]]
) -> None:
    path = write(
        tmp_path,
        'app = "tests.test_config:hello_app"\n\n[[middleware]]\nuse = "inspector"\n'
        'path = "/_debug/"\n',
    )
    status, _, err = run("serve", str(path), "--port", "8123")
    assert status == 0
    assert "asgikit: requests as they happen: http://127.0.0.1:8123/_debug/\n" in err


@pytest.mark.parametrize(
    "telemetry",
    ['metrics = "prometheus"', "prometheus_port = 19464"],
)
def test_serve_refuses_prometheus_with_several_workers(
    tmp_path: Path, fake_uvicorn: list[tuple[Any, dict[str, Any]]], telemetry: str
) -> None:
    path = write(tmp_path, f'app = "tests.test_config:hello_app"\n[telemetry]\n{telemetry}\n')
    status, _, err = run("serve", str(path), "--workers", "2")
    assert status == 2
    assert fake_uvicorn == []
    assert "Prometheus metrics are served by one process on one port" in err


def test_serve_refuses_prometheus_from_the_environment_with_several_workers(
    tmp_path: Path,
    fake_uvicorn: list[tuple[Any, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    path = write(tmp_path, 'app = "tests.test_config:hello_app"\n[telemetry]\ntraces = "none"\n')
    assert run("serve", str(path), "--workers", "2")[0] == 2
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    assert run("serve", str(path), "--workers", "2")[0] == 0


@pytest.mark.parametrize(
    "use", ['"rate_limit"', '"asgikit.middleware.rate_limit:RateLimitMiddleware"']
)
def test_serve_refuses_a_memory_rate_limit_with_several_workers(
    tmp_path: Path, fake_uvicorn: list[tuple[Any, dict[str, Any]]], use: str
) -> None:
    text = f'app = "tests.test_config:hello_app"\n[[middleware]]\nuse = {use}\nrate = "10/minute"\n'
    path = write(tmp_path, text)
    status, _, err = run("serve", str(path), "--workers", "3")
    assert status == 2
    assert fake_uvicorn == []
    assert "the rate limit (line 2) keeps its counts in memory" in err
    assert "a client gets 3 times the limit" in err and "redis://" in err
    assert run("serve", str(path), "--workers", "1")[0] == 0
    shouted = write(tmp_path, text + 'storage = "MEMORY://"\n')  # the scheme, any case
    assert run("serve", str(shouted), "--workers", "2")[0] == 2


@pytest.mark.parametrize("option", ['storage = "redis://127.0.0.1:6379/0"', "per_worker = true"])
def test_serve_allows_shared_or_declared_per_worker_limits_with_several_workers(
    tmp_path: Path, fake_uvicorn: list[tuple[Any, dict[str, Any]]], option: str
) -> None:
    text = (
        'app = "tests.test_config:hello_app"\n[[middleware]]\nuse = "rate_limit"\n'
        f'rate = "10/minute"\n{option}\n'
    )
    assert run("serve", str(write(tmp_path, text)), "--workers", "2")[0] == 0
    assert len(fake_uvicorn) == 1


def test_serve_tells_the_workers_how_many_they_are(
    tmp_path: Path,
    fake_uvicorn: list[tuple[Any, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ASGIKIT_WORKERS", raising=False)
    monkeypatch.setenv("ASGIKIT_CONFIG", "")  # restored after the test: serve sets both
    path = write(tmp_path, 'app = "tests.test_config:hello_app"\n')
    assert run("serve", str(path), "--workers", "3")[0] == 0
    assert os.environ["ASGIKIT_WORKERS"] == "3"  # inherited by the worker processes


def test_serve_with_logging_configure_false_leaves_uvicorn_its_own_logging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_uvicorn: list[tuple[Any, dict[str, Any]]]
) -> None:
    monkeypatch.setattr(observability_module, "_logging_module_exists", lambda: True)
    path = write(tmp_path, 'app = "tests.test_config:hello_app"\n[logging]\nconfigure = false\n')
    assert run("serve", str(path))[0] == 0
    [(_, options)] = fake_uvicorn
    assert "log_config" not in options  # uvicorn's own logging set-up, as without asgikit
