"""``asgikit serve``'s servers: the ``[server]`` table's options in each server's terms,
the servers' own options checked by name, env files, a broken app in one line, and a
reloading server that survives a broken config file."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from asgikit import servers
from asgikit.cli import main
from asgikit.cli.env_file import read_env_file
from asgikit.config import ConfigError, ServerConfig, load_config
from tests._processes import free_port, stop

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "asgikit.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(issue) for issue in caught.value.issues]


def launch(settings: ServerConfig, *, logs: bool = False) -> servers.Launch:
    return servers.Launch(settings=settings, logs_configured=logs, logs_access=logs)


# --------------------------------------------------------------------------------------
# The servers' own options


def test_a_servers_own_option_is_kept_for_it(tmp_path: Path) -> None:
    pytest.importorskip("hypercorn")
    path = write(
        tmp_path,
        """\
        app = "x:y"
        [server]
        server = "hypercorn"
        h2_max_concurrent_streams = 50
        """,
    )
    server = load_config(path).server
    assert server.server == "hypercorn"
    assert server.options == {"h2_max_concurrent_streams": 50}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'server = "hypercorn"\nh2_max_concurent_streams = 5',
            "[server] has no option 'h2_max_concurent_streams', and neither has hypercorn; "
            "did you mean 'h2_max_concurrent_streams'?",
        ),
        (
            "h2_max_concurrent_streams = 5",  # hypercorn's, not uvicorn's
            "[server] has no option 'h2_max_concurrent_streams', and neither has uvicorn",
        ),
        (
            'server = "granian"\nbackpresure = 5',
            "[server] has no option 'backpresure', and neither has granian; did you mean "
            "'backpressure'? [server] sets it as 'limit_concurrency'",
        ),
        (
            'server = "hypercorn"\nbind = ["127.0.0.1:9000"]',
            "hypercorn's 'bind' is set through [server]'s 'host'",
        ),
        ("timeout_keepalive = 5", "did you mean 'timeout_keep_alive'?"),
        ('server = "waitress"', "server.server: expected one of 'uvicorn', 'hypercorn', 'granian'"),
    ],
)
def test_server_options_are_checked_against_the_chosen_server(
    tmp_path: Path, table: str, message: str
) -> None:
    for server in ("hypercorn", "granian"):
        if server in table:
            pytest.importorskip(server)
    path = write(tmp_path, f'app = "x:y"\n[server]\n{table}\n')
    [error] = errors(path)
    assert error.startswith(f"{path}:")
    assert message in error


def test_hypercorn_takes_the_common_settings_in_its_own_terms() -> None:
    pytest.importorskip("hypercorn")
    from asgikit.servers import hypercorn

    settings = ServerConfig(
        server="hypercorn",
        host="::1",
        port=9000,
        workers=3,
        root_path="/shop",
        timeout_graceful_shutdown=12.5,
        timeout_keep_alive=4,
        ssl_certfile="cert.pem",
        ssl_keyfile="key.pem",
        options={"h2_max_concurrent_streams": 7},
    )
    config = hypercorn.config(launch(settings, logs=True))
    assert config.bind == ["[::1]:9000"]
    assert config.application_path == "asgikit.config:app_from_env()"
    assert (config.workers, config.root_path) == (3, "/shop")
    assert (config.graceful_timeout, config.keep_alive_timeout) == (12.5, 4)
    assert (config.certfile, config.keyfile) == ("cert.pem", "key.pem")
    assert config.h2_max_concurrent_streams == 7
    # asgikit's logging writes hypercorn's lines: no second handler of hypercorn's own
    assert config.errorlog is logging.getLogger("hypercorn.error")
    assert hypercorn.config(launch(ServerConfig(uds="/tmp/a.sock"))).bind == ["unix:/tmp/a.sock"]
    assert hypercorn.config(launch(ServerConfig(fd=3))).bind == ["fd://3"]


def test_granian_takes_the_common_settings_in_its_own_terms() -> None:
    pytest.importorskip("granian")
    from asgikit.servers import granian

    settings = ServerConfig(
        server="granian",
        port=9001,
        workers=2,
        limit_concurrency=64,
        root_path="/shop",
        timeout_graceful_shutdown=9.6,
        options={"http": "1"},
    )
    options = granian.options(launch(settings))
    assert options["target"] == "asgikit.config:app_from_env"
    assert (options["factory"], options["interface"]) == (True, "asgi")
    assert (options["address"], options["port"], options["workers"]) == ("127.0.0.1", 9001, 2)
    assert options["backpressure"] == 64
    assert options["url_path_prefix"] == "/shop"
    assert options["workers_kill_timeout"] == 10
    assert options["http"] == "1"
    assert "log_dictconfig" not in options  # its own logging, unless asgikit configures


@pytest.mark.parametrize(
    ("server", "settings", "name"),
    [
        ("granian", ServerConfig(fd=3), "fd"),
        ("granian", ServerConfig(timeout_keep_alive=3), "timeout_keep_alive"),
        ("hypercorn", ServerConfig(limit_concurrency=3), "limit_concurrency"),
    ],
)
def test_a_setting_the_server_cannot_honour_is_refused(
    server: str, settings: ServerConfig, name: str
) -> None:
    pytest.importorskip(server)
    module = __import__(f"asgikit.servers.{server}", fromlist=["x"])
    build = getattr(module, "options", None) or module.config
    with pytest.raises(servers.ServerError, match=f"{server} has no equivalent of {name}"):
        build(launch(settings))


# --------------------------------------------------------------------------------------
# Env files


def test_an_env_file_is_read_as_compose_and_dotenv_write_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        # a comment
        PORT=9123
        export SERVICE = shop
        GREETING="hello\\nworld"  # a comment after a quoted value
        RAW='a $b \\n c'
        URL=redis://127.0.0.1:6379/0 # a comment

        EMPTY=
        """,
        ".env",
    )
    assert read_env_file(path) == {
        "PORT": "9123",
        "SERVICE": "shop",
        "GREETING": "hello\nworld",
        "RAW": "a $b \\n c",
        "URL": "redis://127.0.0.1:6379/0",
        "EMPTY": "",
    }
    (tmp_path / "bad.env").write_text("PORT=1\nnot a line\n")
    with pytest.raises(ValueError, match=r"bad.env:2: expected NAME=value, got 'not a line'"):
        read_env_file(tmp_path / "bad.env")


def test_serve_reads_the_env_file_before_the_config_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ASGIKIT_TEST_PORT", raising=False)
    monkeypatch.setenv("ASGIKIT_TEST_HOST", "127.0.0.2")  # set already: the file does not win
    (tmp_path / "prod.env").write_text(
        "ASGIKIT_TEST_PORT=70000\nASGIKIT_TEST_HOST=0.0.0.0\n", encoding="utf-8"
    )
    path = write(
        tmp_path,
        """\
        app = "tests.test_config:hello_app"
        [server]
        env_file = "prod.env"
        host = "${ASGIKIT_TEST_HOST}"
        port = "${ASGIKIT_TEST_PORT}"
        """,
    )
    # 70000 comes from the file, and the refusal proves it was read before the values
    assert main(["serve", str(path)]) == 1
    assert f"{path}:5:1: error: server.port: expected `int` <= 65535" in capsys.readouterr().err
    assert os.environ["ASGIKIT_TEST_HOST"] == "127.0.0.2"
    monkeypatch.delenv("ASGIKIT_TEST_PORT")
    assert main(["serve", str(path), "--env-file", str(tmp_path / "missing.env")]) == 2
    assert "missing.env': No such file or directory" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# A broken app, a reloading server


def test_an_app_that_fails_to_import_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "broken_app_module.py").write_text(
        "import os\n\nimport no_such_dependency_here\n\napp = None\n", encoding="utf-8"
    )
    path = write(tmp_path, 'app = "broken_app_module:app"\n')
    assert main(["serve", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}:1:1: error: app: importing broken_app_module failed: ModuleNotFoundError: "
        f"No module named 'no_such_dependency_here' ({tmp_path / 'broken_app_module.py'}, "
        "line 3)",
        "asgikit: 1 error",
    ]


RELOAD_APP = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"version 1"})
"""


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2.0)
    except httpx.TransportError:
        return None


def _wait_for(url: str, status: int, text: str, log: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = _get(url)
        if response is not None and response.status_code == status and text in response.text:
            return response.text
        time.sleep(0.2)
    raise AssertionError(f"no {status} with {text!r}:\n{log.read_text()[-3000:]}")


def test_reload_survives_a_broken_config_and_recovers(tmp_path: Path) -> None:
    pytest.importorskip("watchfiles", reason="uvicorn's reloader uses watchfiles")
    (tmp_path / "reload_app.py").write_text(RELOAD_APP, encoding="utf-8")
    good = 'app = "reload_app:app"\n[[middleware]]\nuse = "request_id"\n'
    config = write(tmp_path, good)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ASGIKIT_CONFIG", None)
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "asgikit",
                "serve",
                str(config),
                "--reload",
                "--port",
                f"{port}",
            ],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for(url, 200, "version 1", log)
        config.write_text(good.replace("request_id", "request_idd"), encoding="utf-8")
        page = _wait_for(url, 500, "unknown middleware", log)
        assert f"{config}:3:" in page  # the file and line of the mistake
        assert process.poll() is None  # still serving, still watching
        config.write_text(good, encoding="utf-8")
        _wait_for(url, 200, "version 1", log)
    finally:
        stop(process, 15.0, group=True)
    output_text = log.read_text(errors="replace")
    assert "Traceback" not in output_text


def test_granian_and_hypercorn_take_the_rest_in_their_own_terms_too() -> None:
    pytest.importorskip("granian")
    pytest.importorskip("hypercorn")
    from asgikit.servers import granian, hypercorn

    settings = ServerConfig(
        uds="/tmp/app.sock",
        reload=True,
        log_level="trace",
        ssl_certfile="cert.pem",
        ssl_keyfile="key.pem",
    )
    watched = servers.Launch(
        settings=settings,
        logs_configured=True,
        logs_access=True,
        watch=("/srv/app",),
        watch_files=("/srv/app/asgikit.toml",),
    )
    options = granian.options(watched)
    assert options["uds"] == Path("/tmp/app.sock")
    assert options["reload_paths"] == [Path("/srv/app"), Path("/srv/app/asgikit.toml")]
    assert (options["ssl_cert"], options["ssl_key"]) == (Path("cert.pem"), Path("key.pem"))
    assert options["log_level"] == "debug"  # granian knows no trace
    assert options["log_dictconfig"]["loggers"]["_granian"]["propagate"] is True
    traced = hypercorn.config(launch(ServerConfig(log_level="trace")))
    assert traced.loglevel == "DEBUG"
    assert traced.errorlog == "-"  # hypercorn's own logging, when asgikit's is not set up
    with pytest.raises(servers.ServerError, match="hypercorn's reloader watches only"):
        hypercorn.config(watched)


def test_uvicorn_watches_the_config_file_and_rounds_the_timeouts() -> None:
    from asgikit.servers import uvicorn

    settings = ServerConfig(reload=True, timeout_graceful_shutdown=0.2, timeout_keep_alive=2.6)
    options = uvicorn.options(
        servers.Launch(settings, False, False, ("/srv/app",), ("/srv/app/asgikit.toml",))
    )
    assert options["reload_dirs"] == ["/srv/app"]
    assert options["reload_includes"] == ["asgikit.toml"]
    assert options["timeout_graceful_shutdown"] == 1  # uvicorn takes whole seconds, >= 1
    assert options["timeout_keep_alive"] == 3
    assert "log_config" not in options and "access_log" not in options


def test_options_written_for_another_server_are_refused_when_the_flag_changes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("hypercorn")
    path = write(
        tmp_path,
        """\
        app = "tests.test_config:hello_app"
        [server]
        server = "hypercorn"
        h2_max_concurrent_streams = 50
        """,
    )
    assert main(["serve", str(path), "--server", "uvicorn"]) == 2
    assert capsys.readouterr().err == (
        "asgikit: error: [server] has options uvicorn does not take: h2_max_concurrent_streams\n"
    )


def test_a_server_that_is_not_installed_is_named_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "granian.server", None)
    path = write(tmp_path, 'app = "x:y"\n[server]\nserver = "granian"\nbackpressure = 3\n')
    [error] = errors(path)
    assert "serving with granian needs it installed: pip install granian" in error
    from asgikit.config import json_schema

    names = json_schema()["$defs"]["server"]["propertyNames"]["enum"]
    assert "h2_max_concurrent_streams" in names  # hypercorn's, still offered
    assert "blocking_threads" not in names  # granian's, not installed


def test_an_app_with_a_syntax_error_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "typo_app_module.py").write_text("app = (\n", encoding="utf-8")
    path = write(tmp_path, 'app = "typo_app_module:app"\n')
    assert main(["serve", str(path)]) == 1
    [line, _] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{path}:1:1: error: app: importing typo_app_module failed: ")
    assert line.endswith(f"({tmp_path / 'typo_app_module.py'}, line 1)")
    assert "SyntaxError" in line


@pytest.mark.anyio
async def test_the_reloading_error_page_answers_every_request_and_the_lifespan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from asgikit.config import CONFIG_ENV, RELOAD_ENV, app_from_env
    from asgikit.testing import lifespan, request, websocket

    path = write(tmp_path, 'app = "tests.test_config:hello_app"\n[[middleware]]\nuse = "nope"\n')
    monkeypatch.setenv(CONFIG_ENV, str(path))
    monkeypatch.setenv(RELOAD_ENV, "1")
    app = app_from_env()
    assert f"{path}:3:" in capsys.readouterr().err  # printed once, with file and line
    async with lifespan(app):  # start-up and shutdown complete: the server stays up
        response = await request(app)
    assert response.status == 500
    assert "unknown middleware" in response.text and f"{path}:3:" in response.text
    session = await websocket(app)
    assert session.close_code == 1011
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "missing.toml"))
    assert (await request(app_from_env())).status == 500  # any failure, the same way


def test_serve_from_a_thread_leaves_the_signals_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import types

    calls: list[str] = []
    fake = types.ModuleType("uvicorn")
    fake.run = lambda app, **options: calls.append(app)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uvicorn", fake)
    path = write(tmp_path, 'app = "tests.test_config:hello_app"\n')
    statuses: list[int] = []
    thread = threading.Thread(target=lambda: statuses.append(main(["serve", str(path)])))
    thread.start()
    thread.join(30)
    assert statuses == [0]
    assert calls == ["asgikit.config:app_from_env"]


def test_an_env_file_named_in_a_yaml_file_or_malformed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("yaml")
    monkeypatch.delenv("ASGIKIT_TEST_PORT", raising=False)
    (tmp_path / "prod.env").write_text("ASGIKIT_TEST_PORT=70000\n", encoding="utf-8")
    path = write(
        tmp_path,
        """\
        app: tests.test_config:hello_app
        server:
          env_file: prod.env
          port: ${ASGIKIT_TEST_PORT}
        """,
        "asgikit.yaml",
    )
    assert main(["serve", str(path)]) == 1  # read from the YAML file as written
    assert "server.port: expected `int` <= 65535" in capsys.readouterr().err
    (tmp_path / "bad.env").write_text("not a line\n", encoding="utf-8")
    assert main(["serve", str(path), "--env-file", str(tmp_path / "bad.env")]) == 2
    assert "bad.env:1: expected NAME=value" in capsys.readouterr().err
    (tmp_path / "broken.toml").write_text("app = \n", encoding="utf-8")
    assert main(["serve", str(tmp_path / "broken.toml")]) == 1  # the load reports it


def test_serve_announces_a_unix_socket_or_an_inherited_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import types

    fake = types.ModuleType("uvicorn")
    fake.run = lambda app, **options: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uvicorn", fake)
    path = write(tmp_path, 'app = "tests.test_config:hello_app"\n')
    assert main(["serve", str(path), "--uds", "/tmp/asgikit-test.sock"]) == 0
    assert "open unix:/tmp/asgikit-test.sock " in capsys.readouterr().err
    assert main(["serve", str(path), "--fd", "3"]) == 0
    assert "open file descriptor 3 " in capsys.readouterr().err


def test_a_missing_hypercorn_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "hypercorn.config", None)
    path = write(tmp_path, 'app = "tests.test_config:hello_app"\n')
    assert main(["serve", str(path), "--server", "hypercorn"]) == 2
    assert capsys.readouterr().err == (
        "asgikit: error: serving with hypercorn needs it installed: pip install hypercorn\n"
    )


@pytest.mark.anyio
async def test_the_reloading_error_page_shows_a_failing_factory_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from asgikit.config import CONFIG_ENV, RELOAD_ENV, app_from_env
    from asgikit.testing import request

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "failing_factory.py").write_text(
        "def make():\n    raise RuntimeError('the factory failed')\n", encoding="utf-8"
    )
    path = write(tmp_path, 'app = "failing_factory:make"\nfactory = true\n')
    monkeypatch.setenv(CONFIG_ENV, str(path))
    monkeypatch.setenv(RELOAD_ENV, "1")
    response = await request(app_from_env())
    assert response.status == 500
    assert "RuntimeError: the factory failed" in response.text
    assert "RuntimeError: the factory failed" in capsys.readouterr().err
