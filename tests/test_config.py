"""Config files: loading, every class of error with its line, substitution, build."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import textwrap
import tomllib
import types
import warnings
from pathlib import Path
from typing import Any, ClassVar

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

import asgikit.config.observability as observability_module
from asgikit.config import (
    CONFIG_ENV,
    Config,
    ConfigError,
    Issue,
    ServerConfig,
    app_from_env,
    build,
    configure_logging,
    configure_telemetry,
    import_app,
    json_schema,
    load_config,
    logging_options,
)
from asgikit.config.parse import toml_positions as _toml_positions
from asgikit.middleware.proxy_headers import ProxyHeadersMiddleware
from asgikit.middleware.request_id import RequestIDMiddleware, uuid7_hex
from asgikit.pipeline import PipelineWarning
from asgikit.registry import Registry
from asgikit.testing import request
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

PLUGIN_DIST = Path(__file__).resolve().parent / "plugin_dist"
SECRET = "s3cr3t-Value"


# --------------------------------------------------------------------------------------
# apps and middleware the configs below name by import string


async def hello_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def make_app() -> ASGIApp:
    return hello_app


def make_nothing() -> int:
    return 42


NOT_AN_APP = 42


class Picky:
    """A middleware whose ``__init__`` rejects some values.

    Args:
        app: The app.
        level: Must be odd.
        label: Anything but "boom" or "general".
    """

    def __init__(self, app: ASGIApp, *, level: int = 1, label: str = "x") -> None:
        if level % 2 == 0:
            raise ValueError(f"level {level} must be odd")
        if label == "boom":
            raise RuntimeError("no luck today")
        if label == "general":
            raise ValueError("these options do not go together")
        self.app = app
        self.label = label.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def labelled(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-label", self.label)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, labelled)


class Loose:
    """Takes any keyword: ``**options`` are passed on unchecked."""

    def __init__(self, app: ASGIApp, *, known: int = 1, **options: Any) -> None:
        self.app = app
        self.options = options

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class AccessLog(Picky):
    pass


class Compression(Picky):
    pass


class Noisy:
    """A middleware that warns about something other than a deprecated option."""

    def __init__(self, app: ASGIApp, *, level: int = 1) -> None:
        warnings.warn(f"level {level} is experimental", UserWarning, stacklevel=2)
        self.app = app


FAKES = Registry(
    {
        "request_id": "asgikit.middleware.request_id:RequestIDMiddleware",
        "proxy_headers": "asgikit.middleware.proxy_headers:ProxyHeadersMiddleware",
        "picky": "tests.test_config:Picky",
        "access_log": "tests.test_config:AccessLog",
        "compression": "tests.test_config:Compression",
    },
    group=None,
)


# --------------------------------------------------------------------------------------
# helpers


@pytest.fixture(autouse=True)
def keep_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import_app`` puts directories in front of ``sys.path``: undo it after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def fake_logging(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A stand-in ``asgikit.logging`` that records its ``configure`` calls."""
    calls: list[dict[str, Any]] = []

    def configure(*, format: str = "auto", level: int | str = "info") -> None:
        """Set up logs.

        Args:
            format: "console" or "json" or "auto".
            level: The lowest level logged.
        """
        calls.append({"format": format, "level": level})

    module = types.ModuleType("asgikit.logging")
    module.configure = configure  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "asgikit.logging", module)
    monkeypatch.setattr(observability_module, "_logging_module_exists", lambda: True)
    return calls


@pytest.fixture
def no_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observability_module, "_logging_module_exists", lambda: False)


def write(tmp_path: Path, text: str, name: str = "asgikit.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, name: str = "asgikit.toml", **kwargs: Any) -> Config:
    return load_config(
        write(tmp_path, text, name), registry=kwargs.pop("registry", FAKES), **kwargs
    )


def problems(tmp_path: Path, text: str, name: str = "asgikit.toml", **kwargs: Any) -> list[str]:
    """Each issue as ``line:column: path: message`` (without the file)."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, name, **kwargs)
    return [_short(issue) for issue in caught.value.issues]


def _short(issue: Issue) -> str:
    return str(issue)[len(issue.file) + 1 :].lstrip()


# --------------------------------------------------------------------------------------
# loading


def test_a_minimal_config_has_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, 'app = "tests.test_config:hello_app"\n')
    assert config.app == "tests.test_config:hello_app"
    assert config.server == ServerConfig()
    assert config.middleware == ()
    assert config.warnings == ()
    assert config.factory is False
    assert config.app_dir is None
    assert config.logging == {}


def test_a_full_config_loads(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        app = "tests.test_config:make_app"
        factory = true
        app_dir = "."

        [server]
        host = "0.0.0.0"
        port = 9000
        workers = 2
        reload = false
        log_level = "debug"

        [[middleware]]
        use = "proxy_headers"
        trusted_proxies = "10.0.0.0/8"

        [[middleware]]
        use = "request_id"
        header_name = "x-trace"
        generator = "asgikit.middleware.request_id:uuid7_hex"

        [[middleware]]
        use = "tests.test_config:Picky"
        level = 3
        """,
    )
    assert config.server == ServerConfig(
        host="0.0.0.0", port=9000, workers=2, reload=False, log_level="debug"
    )
    assert config.app_dir == tmp_path.resolve()
    proxy, request_id, picky = config.middleware
    assert proxy.resolved.factory is ProxyHeadersMiddleware
    assert proxy.arguments == {"trusted_proxies": "10.0.0.0/8"}
    assert proxy.line == 12
    assert request_id.arguments == {"header_name": "x-trace", "generator": uuid7_hex}
    assert request_id.written["generator"] == "asgikit.middleware.request_id:uuid7_hex"
    assert picky.resolved.name == "picky"  # registered under that name
    assert picky.resolved.origin == "import string"
    assert [layer.name for layer in config.pipeline.layers] == [
        "proxy_headers",
        "request_id",
        "picky",
    ]


def test_middleware_may_be_an_inline_array(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        app = "tests.test_config:hello_app"
        middleware = [{ use = "request_id" }, { use = "picky", level = 5 }]
        """,
    )
    assert [entry.use for entry in config.middleware] == ["request_id", "picky"]


def test_yaml_loads_the_same(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        app: tests.test_config:hello_app
        server:
          port: 9001
        middleware:
          - use: request_id
            header_name: x-trace
          - use: picky
            level: 3
        """,
        name="asgikit.yaml",
    )
    assert config.server.port == 9001
    assert [entry.arguments for entry in config.middleware] == [
        {"header_name": "x-trace"},
        {"level": 3},
    ]
    assert config.middleware[1].line == 7


@pytest.mark.parametrize("name", ["asgikit.yml", "ASGIKIT.YAML"])
def test_yaml_suffixes(tmp_path: Path, name: str) -> None:
    assert load(tmp_path, "app: tests.test_config:hello_app\n", name=name).app


def test_files_of_other_kinds_are_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, "app = 1", name="asgikit.ini") == [
        "error: a config file ends in .toml, .yaml or .yml"
    ]


def test_a_missing_file_is_one_issue(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.toml")
    assert [issue.message for issue in caught.value.issues] == ["no such file"]


def test_a_file_that_is_not_utf8_is_one_issue(tmp_path: Path) -> None:
    path = tmp_path / "asgikit.toml"
    path.write_bytes(b'app = "\xff"\n')
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(path)


# --------------------------------------------------------------------------------------
# every class of error, with its line and column


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            'app = "x:y"\nmiddleware = [\n  1,\n',
            "4:1: error: invalid TOML: invalid value",
            id="toml-syntax",
        ),
        pytest.param(
            'app = "x:y"\napp = "z:w"\n',
            "2:12: error: invalid TOML: cannot overwrite a value",
            id="toml-duplicate-key",
        ),
        pytest.param(
            'app = "x:y\n',
            "1:11: error: invalid TOML: illegal character '\\n'",
            id="toml-unterminated",
        ),
        pytest.param(
            'server = { port = 1 }\napp = "x:y"\n[server]\n',
            "3:8: error: invalid TOML: cannot declare ('server',) twice",
            id="toml-table-twice",
        ),
        pytest.param(
            "",
            "error: missing 'app', required by the config: The ASGI app, as an import "
            'string "package.module:attribute".',
            id="no-app",
        ),
        pytest.param(
            'app = "tests.test_config.hello_app"\n',
            "1:1: error: app: expected an import string 'package.module:attribute'; "
            "did you mean 'tests.test_config:hello_app'?",
            id="app-not-an-import-string",
        ),
        pytest.param(
            "app = 42\n",
            "1:1: error: app: expected `str`, got `int`",
            id="app-not-a-string",
        ),
        pytest.param(
            'app = "x:y"\nfactroy = true\n',
            "2:1: error: factroy: unknown key 'factroy'; did you mean 'factory'?",
            id="unknown-top-level-key",
        ),
        pytest.param(
            'app = "x:y"\nzzz = 1\n',
            "2:1: error: zzz: unknown key 'zzz'; expected one of app, factory, app_dir, "
            "wsgi, server, logging, telemetry, middleware",
            id="unknown-top-level-key-far-off",
        ),
        pytest.param(
            'app = "x:y"\nfactory = "yes"\n',
            "2:1: error: factory: expected `bool`, got `str`",
            id="wrong-type",
        ),
        pytest.param(
            'app = "x:y"\n[server]\nprot = 8000\n',
            "3:1: error: server.prot: [server] has no option 'prot', and neither has uvicorn; "
            "did you mean 'port'?",
            id="unknown-server-key",
        ),
        pytest.param(
            'app = "x:y"\n[server]\nport = 70000\n',
            "3:1: error: server.port: expected `int` <= 65535",
            id="out-of-range",
        ),
        pytest.param(
            'app = "x:y"\n[server]\nlog_level = "warn"\n',
            "3:1: error: server.log_level: expected one of 'critical', 'error', 'warning', "
            "'info', 'debug', 'trace'; did you mean 'warning'?",
            id="not-a-choice",
        ),
        pytest.param(
            'app = "x:y"\n[server]\nlog_level = "loud"\n',
            "3:1: error: server.log_level: expected one of 'critical', 'error', 'warning', "
            "'info', 'debug', 'trace'",
            id="not-a-choice-far-off",
        ),
        pytest.param(
            'app = "x:y"\nserver = 8000\n',
            "2:1: error: server: expected a table, got an integer",
            id="server-not-a-table",
        ),
        pytest.param(
            'app = "x:y"\n[middleware]\nuse = "x"\n',
            "2:1: error: middleware: expected an array of tables ([[middleware]] entries), "
            "got a table",
            id="middleware-not-an-array",
        ),
        pytest.param(
            'app = "x:y"\nmiddleware = ["request_id"]\n',
            "2:15: error: middleware[0]: expected a table with 'use' and options, got a string",
            id="entry-not-a-table",
        ),
        pytest.param(
            'app = "x:y"\n\n[[middleware]]\nheader_name = "x"\n',
            "3:1: error: middleware[0]: missing 'use': a built-in name such as 'request_id', "
            "a plug-in's name or an import string 'package.module:Class'",
            id="no-use",
        ),
        pytest.param(
            'app = "x:y"\n[[middleware]]\nuse = 3\n',
            "3:1: error: middleware[0].use: expected a name or import string, got an integer",
            id="use-not-a-string",
        ),
        pytest.param(
            'app = "x:y"\n[[middleware]]\nuse = "requst_id"\n',
            "3:1: error: middleware[0].use: unknown middleware 'requst_id'; did you mean "
            "'request_id'?",
            id="unknown-middleware",
        ),
        pytest.param(
            'app = "x:y"\n[[middleware]]\nuse = "nowhere.at_all:Thing"\n',
            "3:1: error: middleware[0].use: cannot import 'nowhere.at_all:Thing': no module "
            "named 'nowhere'",
            id="use-import-string-missing",
        ),
        pytest.param(
            'app = "x:y"\n[[middleware]]\nuse = "request_id"\nheader_nme = "x"\n',
            "4:1: error: middleware[0].header_nme: request_id has no option 'header_nme'; did "
            "you mean 'header_name'?",
            id="unknown-option",
        ),
        pytest.param(
            'app = "x:y"\n[[middleware]]\nuse = "request_id"\n  trust_incoming = "no"\n',
            "4:3: error: middleware[0].trust_incoming: expected `bool`, got `str`",
            id="option-wrong-type-with-column",
        ),
        pytest.param(
            'app = "x:y"\n[[middleware]]\nuse = "proxy_headers"\n'
            'trusted_proxies = [\n  "10.0.0.1",\n  5,\n]\n',
            "6:3: error: middleware[0].trusted_proxies[1]: expected `str`, got `int`",
            id="array-item-wrong-type",
        ),
        pytest.param(
            'app = "x:y"\n[[middleware]]\nuse = "request_id"\ngenerator = "nowhere:make"\n',
            "4:1: error: middleware[0].generator: cannot import 'nowhere:make': no module "
            "named 'nowhere'",
            id="callable-option-not-importable",
        ),
        pytest.param(
            'app = "x:y"\n[[middleware]]\nuse = "request_id"\n'
            'generator = "asgikit.registry:ENTRY_POINT_GROUP"\n',
            "4:1: error: middleware[0].generator: 'asgikit.registry:ENTRY_POINT_GROUP' is not "
            "callable",
            id="callable-option-not-callable",
        ),
        pytest.param(
            'app = "x:y"\n[[middleware]]\nuse = "request_id"\nheader_name = "bad header"\n',
            "4:1: error: middleware[0].header_name: request_id rejects its options: "
            "header_name 'bad header' is not a valid header field name",
            id="rejected-by-init-at-the-option",
        ),
        pytest.param(
            'app = "x:y"\n[[middleware]]\nuse = "picky"\nlabel = "general"\n',
            "2:1: error: middleware[0]: picky rejects its options: these options do not go "
            "together",
            id="rejected-by-init-at-the-entry",
        ),
        pytest.param(
            'app = "x:y"\n[[middleware]]\nuse = "picky"\nlabel = "boom"\n',
            "2:1: error: middleware[0]: picky rejects its options: RuntimeError: no luck today",
            id="init-raises-something-else",
        ),
        pytest.param(
            'app = "x:y"\n[[middleware]]\nuse = "tests.test_config:NOT_AN_APP"\n',
            "3:1: error: middleware[0].use: 'tests.test_config:NOT_AN_APP' is not a middleware "
            "class or factory",
            id="use-not-callable",
        ),
        pytest.param(
            'app = "x:y"\n[[middleware]]\nuse = "tests.test_config:make_app"\n',
            "3:1: error: middleware[0].use: 'tests.test_config:make_app' does not take the "
            "app as its first argument",
            id="use-takes-no-app",
        ),
        pytest.param(
            'app = "x:y"\n[[middleware]]\nuse = "tests.test_config:Required"\n',
            "2:1: error: middleware[0]: missing 'size', required by "
            "tests.test_config:Required: How big.",
            id="required-option-missing",
        ),
        pytest.param(
            '"app" = "x:y"\n[[middleware]]\n"use" = "picky"\nmiddleware.level = 2\n',
            "4:1: error: middleware[0].middleware: picky has no option 'middleware'; expected "
            "one of level, label",
            id="dotted-keys",
        ),
        pytest.param(
            'app = "x:y"\n[logging]\nformat = "json"\n',
            "2:1: error: logging: [logging] configures asgikit.logging, which is not "
            "available in this version of asgikit",
            id="logging-unavailable",
        ),
    ],
)
@pytest.mark.usefixtures("no_logging")
def test_each_problem_is_reported_at_its_line(tmp_path: Path, text: str, expected: str) -> None:
    assert problems(tmp_path, text) == [expected]


class Required:
    """Needs an option.

    Args:
        app: The app.
        size: How big.
    """

    def __init__(self, app: ASGIApp, *, size: int) -> None:
        self.app = app


def test_every_problem_is_reported_at_once_in_line_order(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        app = "x:y"
        factroy = true

        [server]
        port = "80"

        [[middleware]]
        use = "request_idd"

        [[middleware]]
        use = "picky"
        level = 2
        lable = "x"

        [[middleware]]
        use = "proxy_headers"
        headers = "carrier-pigeon"
        """,
    )
    assert found == [
        "2:1: error: factroy: unknown key 'factroy'; did you mean 'factory'?",
        "5:1: error: server.port: expected `int`, got `str`",
        "8:1: error: middleware[0].use: unknown middleware 'request_idd'; did you mean "
        "'request_id'?",
        "13:1: error: middleware[1].lable: picky has no option 'lable'; did you mean 'label'?",
        "17:1: error: middleware[2].headers: proxy_headers rejects its options: headers: "
        "unknown header family 'carrier-pigeon'; use ('forwarded', 'x-forwarded', "
        "'x-forwarded-prefix', 'x-real-ip', 'cf-connecting-ip')",
    ]


def test_yaml_problems_have_yaml_lines(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        app: x:y
        middleware:
          - use: request_id
            header_nam: x
          - use: picky
            level: [1,
                    "two"]
        """,
        name="asgikit.yaml",
    )
    assert found == [
        "4:5: error: middleware[0].header_nam: request_id has no option 'header_nam'; did "
        "you mean 'header_name'?",
        "6:5: error: middleware[1].level: expected `int`, got `array`",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "app: [x\n",
            "2:1: error: invalid YAML: while parsing a flow sequence expected ',' or ']'",
        ),
        (
            "app: x\n  bad: indent\n",
            "2:6: error: invalid YAML: mapping values are not allowed here",
        ),
        ("- app\n", "1:1: error: expected a table of keys at the top level, got an array"),
        ("", "error: expected a table of keys at the top level, got nothing"),
        ("app: !!python/name:os.system\n", "1:6: error: invalid YAML: could not determine a "),
    ],
)
def test_yaml_syntax_errors(tmp_path: Path, text: str, expected: str) -> None:
    [found] = problems(tmp_path, text, name="asgikit.yaml")
    assert found.startswith(expected)


def test_yaml_errors_without_a_position(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"invalid YAML: .*special characters"):
        load(tmp_path, "app: \x00\n", name="asgikit.yaml")


def test_yaml_without_pyyaml_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)
    assert problems(tmp_path, "app: x:y\n", name="asgikit.yaml") == [
        "error: YAML needs PyYAML: pip install 'asgikit[yaml]'"
    ]


def test_keys_that_are_not_names_are_quoted_in_paths(tmp_path: Path) -> None:
    assert problems(tmp_path, 'app = "x:y"\n"odd key" = 1\n') == [
        "2:1: error: ['odd key']: unknown key 'odd key'; expected one of app, factory, "
        "app_dir, wsgi, server, logging, telemetry, middleware"
    ]


class AppKeeper:
    """A middleware that keeps every app it is given, in ``AppKeeper.given``."""

    given: ClassVar[list[ASGIApp]] = []

    def __init__(self, app: ASGIApp, *, level: int = 1) -> None:
        AppKeeper.given.append(app)
        self.app = app


def test_the_placeholder_app_is_never_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyio

    monkeypatch.setattr(AppKeeper, "given", [])
    # Loading tries each middleware with its options around a stand-in app...
    load(tmp_path, 'app = "x:y"\n[[middleware]]\nuse = "tests.test_config:AppKeeper"\nlevel = 2\n')
    [stand_in] = AppKeeper.given
    # ...which refuses to serve, should a middleware keep it and call it.
    with pytest.raises(RuntimeError, match="placeholder app"):
        anyio.run(stand_in, {"type": "http"}, None, None)


def test_yaml_keys_that_are_not_strings(tmp_path: Path) -> None:
    found = problems(tmp_path, "app: x:y\n1: one\n", name="asgikit.yaml")
    assert found == [
        "2:1: error: [1]: unknown key 1; expected one of app, factory, app_dir, "
        "wsgi, server, logging, telemetry, middleware"
    ]


# --------------------------------------------------------------------------------------
# substitution


def test_variables_and_defaults_are_substituted(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        app = "${APP_MODULE}:hello_app"
        [server]
        host = "${HOST:-127.0.0.2}"
        port = "${PORT}"
        [[middleware]]
        use = "request_id"
        header_name = "x-${SUFFIX:-id}"
        """,
        environ={"APP_MODULE": "tests.test_config", "PORT": "9002", "SUFFIX": ""},
    )
    assert config.app == "tests.test_config:hello_app"
    assert config.server.host == "127.0.0.2"
    assert config.server.port == 9002  # a str from the environment, converted
    [entry] = config.middleware
    assert entry.written["header_name"] == "x-id"  # empty counts as unset with ":-"
    assert entry.from_env == frozenset()


def test_literal_dollar_braces_survive(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        app = "tests.test_config:hello_app"
        [[middleware]]
        use = "tests.test_config:Loose"
        text = "$${HOME} and $$ and $"
        """,
    )
    assert config.middleware[0].arguments == {"text": "${HOME} and $$ and $"}


def test_empty_values_from_the_environment(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        app = "tests.test_config:hello_app"
        [[middleware]]
        use = "tests.test_config:Loose"
        empty = "${EMPTY}"
        table = { inner = "${EMPTY}x", plain = 1 }
        """,
        environ={"EMPTY": ""},
    )
    [entry] = config.middleware
    assert entry.arguments == {"empty": "", "table": {"inner": "x", "plain": 1}}
    assert entry.written == {"empty": "${EMPTY}", "table": {"inner": "${EMPTY}x", "plain": 1}}
    assert entry.from_env == {"empty", "table"}


def test_values_from_the_environment_are_shown_as_references(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        app = "tests.test_config:hello_app"
        [[middleware]]
        use = "proxy_headers"
        trusted_proxies = ["${PROXY}", "10.0.0.1"]
        """,
        environ={"PROXY": "192.0.2.7"},
    )
    [entry] = config.middleware
    assert entry.arguments == {"trusted_proxies": ["192.0.2.7", "10.0.0.1"]}
    assert entry.written == {"trusted_proxies": ["${PROXY}", "10.0.0.1"]}
    assert entry.from_env == {"trusted_proxies"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            '"${UNSET}"',
            "environment variable UNSET is not set (give a default: '${UNSET:-default}')",
        ),
        ('"${UNCLOSED"', "unclosed '${': write '$${' for a literal '${'"),
        ('"${1BAD}"', "'${1BAD}' is not a substitution: write '${NAME}' or '${NAME:-default}'"),
        ('"${}"', "'${}' is not a substitution"),
    ],
)
def test_bad_substitutions_are_errors_reported_once(
    tmp_path: Path, value: str, expected: str
) -> None:
    found = problems(
        tmp_path,
        f'app = "x:y"\n[server]\nport = {value}\n[[middleware]]\nuse = {value}\n',
        environ={},
    )
    assert len(found) == 2  # no second complaint about the type of what could not be read
    assert found[0].startswith(f"3:1: error: server.port: {expected}")
    assert found[1].startswith(f"5:1: error: middleware[0].use: {expected}")


def test_values_from_the_environment_are_never_echoed(tmp_path: Path) -> None:
    environ = {
        "HEADER": f"bad {SECRET}",
        "LEVEL": SECRET,
        "GENERATOR": f"nomod_{SECRET}:make",
        "APP": f"{SECRET}.mod",
        "QUOTED": f"{SECRET}'\\",
    }
    with pytest.raises(ConfigError) as caught:
        load(
            tmp_path,
            """\
            app = "${APP}"
            [server]
            log_level = "${LEVEL}"
            [[middleware]]
            use = "request_id"
            header_name = "${HEADER}"
            [[middleware]]
            use = "request_id"
            generator = "${GENERATOR}"
            [[middleware]]
            use = "request_id"
            log_key = "${QUOTED}"
            """,
            environ=environ,
        )
    text = str(caught.value)
    assert len(caught.value.issues) == 5
    assert SECRET not in text
    assert "***" in text
    assert "header_name" in text  # the messages still say what is wrong


def test_secrets_are_scrubbed_from_exceptions_of_any_middleware(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        'app = "x:y"\n[[middleware]]\nuse = "picky"\nlevel = "${LEVEL}"\n',
        environ={"LEVEL": "4"},
    )
    assert found == [
        "4:1: error: middleware[0].level: picky rejects its options: level *** must be odd"
    ]


# --------------------------------------------------------------------------------------
# plug-ins and extras


def test_plugins_are_used_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGIN_DIST))
    config = load(
        tmp_path,
        'app = "x:y"\n[[middleware]]\nuse = "stamp"\nvalue = "v1"\n',
        registry=Registry(),
    )
    [entry] = config.middleware
    assert entry.resolved.origin == "plug-in asgikit-test-plugin 1.0"
    assert entry.arguments == {"value": "v1"}


def test_a_plugin_shadowing_a_builtin_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = tmp_path / "dist" / "shadow-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shadow\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[asgikit.middleware]\nrequest_id = shadow:RID\n")
    monkeypatch.syspath_prepend(str(tmp_path / "dist"))
    config = load(
        tmp_path, 'app = "x:y"\n[[middleware]]\nuse = "request_id"\n', registry=Registry()
    )
    [warning] = config.warnings
    assert warning.severity == "warning"
    assert warning.line == 3
    assert "plug-in shadow 1.0 also registers the built-in name 'request_id'" in warning.message


def test_factories_taking_keywords_get_unknown_keys_unchecked(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        'app = "x:y"\n[[middleware]]\nuse = "tests.test_config:Loose"\nknown = 2\nother = [1]\n',
    )
    assert config.middleware[0].arguments == {"known": 2, "other": [1]}


def test_the_logging_table_is_checked_against_configure(
    tmp_path: Path, fake_logging: list[dict[str, Any]]
) -> None:
    config = load(tmp_path, 'app = "x:y"\n[logging]\nformat = "json"\n')
    assert config.logging == {"format": "json"}
    assert configure_logging(config)
    assert fake_logging == [{"format": "json", "level": "info"}]
    assert problems(tmp_path, 'app = "x:y"\n[logging]\nformt = "json"\n') == [
        "3:1: error: logging.formt: [logging] has no option 'formt'; did you mean 'format'?"
    ]
    assert problems(tmp_path, 'app = "x:y"\nlogging = "json"\n') == [
        "2:1: error: logging: expected a table, got a string"
    ]


@pytest.mark.usefixtures("no_logging")
def test_without_asgikit_logging_logs_are_left_alone(tmp_path: Path) -> None:
    config = load(tmp_path, 'app = "x:y"\n')
    assert logging_options() is None
    assert not configure_logging(config)


def test_a_logging_module_without_configure_counts_as_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "asgikit.logging", types.ModuleType("asgikit.logging"))
    monkeypatch.setattr(observability_module, "_logging_module_exists", lambda: True)
    assert logging_options() is None


# --------------------------------------------------------------------------------------
# ordering


def test_order_warnings_point_at_the_entry_out_of_place(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        app = "x:y"
        [[middleware]]
        use = "compression"
        [[middleware]]
        use = "access_log"
        """,
    )
    [warning] = config.warnings
    assert str(warning) == (
        f"{tmp_path / 'asgikit.toml'}:2:1: warning: middleware[0]: compression is outside "
        "access_log: the bytes logged are not the bytes sent; list it after access_log "
        "(middleware[1]), as in the canonical order"
    )


def test_a_middleware_that_must_be_first_is_told_so(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        app = "x:y"
        [[middleware]]
        use = "request_id"
        [[middleware]]
        use = "server_timing"
        """,
        registry=Registry(),
    )
    [warning] = config.warnings
    assert str(warning) == (
        f"{tmp_path / 'asgikit.toml'}:4:1: warning: middleware[1]: server_timing is not "
        "first: it times only the total, not each layer and the app; list it first"
    )


def test_import_strings_of_builtins_keep_their_ordering_rules(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        app = "x:y"
        [[middleware]]
        use = "tests.test_config:Compression"
        [[middleware]]
        use = "access_log"
        """,
    )
    assert len(config.warnings) == 1


def test_no_order_warnings_while_entries_have_errors(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        'app = "x:y"\n[[middleware]]\nuse = "compression"\n[[middleware]]\nuse = "nope"\n',
    )
    assert len(found) == 1


# --------------------------------------------------------------------------------------
# build and app_from_env


@pytest.mark.anyio
async def test_build_wraps_the_app_in_the_pipeline(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        app = "tests.test_config:hello_app"
        [[middleware]]
        use = "request_id"
        [[middleware]]
        use = "tests.test_config:Picky"
        label = "inner"
        [[middleware]]
        use = "contract"
        strict = true
        """,
    )
    app = build(path)
    assert isinstance(app, RequestIDMiddleware)
    response = await request(app, "GET", "/")
    assert response.body == b"hello"
    assert response.header("x-label") == "inner"
    assert response.header("x-request-id")


@pytest.mark.anyio
async def test_factories_are_called(tmp_path: Path) -> None:
    config = load(tmp_path, 'app = "tests.test_config:make_app"\nfactory = true\n')
    assert build(config) is hello_app
    assert import_app(config, call_factory=False) is make_app


def wsgi_hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Path", environ["PATH_INFO"])])
    return [b"hello from wsgi"]


def make_wsgi_hello() -> Any:
    return wsgi_hello


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # a2wsgi runs on asyncio only
@pytest.mark.parametrize(
    "lines",
    [
        'app = "tests.test_config:wsgi_hello"',
        'app = "tests.test_config:make_wsgi_hello"\nfactory = true',
    ],
    ids=["app", "factory"],
)
async def test_wsgi_apps_are_served_through_a2wsgi_inside_the_middleware(
    tmp_path: Path, lines: str, anyio_backend: str
) -> None:
    pytest.importorskip("a2wsgi", reason="a2wsgi is not installed (pip install 'asgikit[wsgi]')")
    config = load(tmp_path, f'{lines}\nwsgi = true\n\n[[middleware]]\nuse = "request_id"\n')
    assert config.wsgi is True
    app = build(config)
    assert isinstance(app, RequestIDMiddleware)
    response = await request(app, "GET", "/some/where")
    assert response.status == 200
    assert response.body == b"hello from wsgi"
    assert response.header("x-path") == "/some/where"
    assert response.header("x-request-id")


def test_wsgi_without_a2wsgi_is_a_config_error_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "a2wsgi", None)  # import a2wsgi now fails
    config = load(tmp_path, 'app = "tests.test_config:wsgi_hello"\n\nwsgi = true\n')
    for attempt in (build, lambda config: import_app(config, call_factory=False)):
        with pytest.raises(ConfigError) as caught:
            attempt(config)
        assert [_short(issue) for issue in caught.value.issues] == [
            "3:1: error: wsgi: wsgi = true serves the app through a2wsgi, which is not "
            "installed: pip install 'asgikit[wsgi]'"
        ]


def test_the_app_is_imported_from_the_current_then_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "local_app_for_test.py").write_text("async def app(scope, receive, send): ...\n")
    path = write(project, 'app = "local_app_for_test:app"\n')
    monkeypatch.chdir(tmp_path)
    app = build(load_config(path))
    assert app.__module__ == "local_app_for_test"
    assert sys.path[:2] == [str(tmp_path), str(project.resolve())]


def test_app_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "app_dir_app_for_test.py").write_text("async def app(scope, receive, send): ...\n")
    config = load(tmp_path, 'app = "app_dir_app_for_test:app"\napp_dir = "src"\n')
    assert config.app_dir == src.resolve()
    assert build(config).__module__ == "app_dir_app_for_test"
    assert sys.path[0] == str(src.resolve())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'app = "tests.test_config:helo_app"\n',
            "1:1: error: app: cannot import 'tests.test_config:helo_app': 'tests.test_config' "
            "has no attribute 'helo_app'; did you mean 'hello_app'?",
        ),
        (
            'app = "no_such_app_module:app"\n',
            "1:1: error: app: cannot import 'no_such_app_module:app': no module named "
            "'no_such_app_module'",
        ),
        (
            'app = "tests.test_config:NOT_AN_APP"\n',
            "1:1: error: app: 'tests.test_config:NOT_AN_APP' is an integer, not an ASGI app "
            "or factory",
        ),
        (
            '\napp = "tests.test_config:make_nothing"\nfactory = true\n',
            "3:1: error: factory: the factory returned an integer, not an ASGI app",
        ),
    ],
)
def test_apps_that_cannot_be_imported(tmp_path: Path, text: str, expected: str) -> None:
    config = load(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        build(config)
    assert [_short(issue) for issue in caught.value.issues] == [expected]


def test_config_issues_without_a_source_have_no_line() -> None:
    config = Config(path=Path("made.toml"), app="x:y")
    assert str(config.issue(("app",), "nope")) == "made.toml: error: app: nope"


def test_build_warns_with_the_config_warnings(tmp_path: Path) -> None:
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
    with pytest.warns(PipelineWarning, match=r"asgikit.toml:2:1: warning: middleware\[0\]"):
        build(load_config(path, registry=FAKES))


@pytest.mark.anyio
async def test_app_from_env_builds_the_file_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_logging: list[dict[str, Any]]
) -> None:
    path = write(
        tmp_path,
        """\
        app = "tests.test_config:hello_app"
        [logging]
        level = "debug"
        [[middleware]]
        use = "request_id"
        """,
    )
    monkeypatch.setenv(CONFIG_ENV, str(path))
    app = app_from_env()
    response = await request(app, "GET", "/")
    assert response.body == b"hello"
    assert fake_logging == [{"format": "auto", "level": "debug"}]


def test_app_from_env_defaults_to_asgikit_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_logging: None
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'app = "tests.test_config:hello_app"\n')
    assert app_from_env() is hello_app


# --------------------------------------------------------------------------------------
# where keys are: the TOML scanner


def test_positions_of_tables_keys_and_items() -> None:
    text = textwrap.dedent(
        """\
        # a comment with [brackets] and "quotes"
        a = 1  # trailing [x]
        "quoted key" = 'literal'
        b.c = { d = [1, { e = "x" }], "f g" = 2 }
        s = \"\"\"
        [not.a.table]
        x = "still the string\\\"\"\" \"\"\"
        t = '''it's [also] # a string'''
        date = 1979-05-27 07:32:00Z

        [table]
        k = [
          "one",  # comment
          [2, 3],
        ]

        [[arr]]
        x = 1
        [[arr]]
        x = 2
        [arr.sub]
        y = 3
        [[arr.list]]
        z = 4
        [[arr.list]]
        z = 5
        [last]
        q = \"\"\"ends in quotes\"\"\"\"\"
        w = '''ends in quotes'''''
        after = 1
        """
    )
    positions = _toml_positions(text)
    assert tomllib.loads(text)["last"] == {
        "q": 'ends in quotes""',
        "w": "ends in quotes''",
        "after": 1,
    }
    assert positions[("last", "after")] == (30, 1)
    assert positions[("a",)] == (2, 1)
    assert positions[("quoted key",)] == (3, 1)
    assert positions[("b",)] == positions[("b", "c")] == (4, 1)
    assert positions[("b", "c", "d")] == (4, 9)
    assert positions[("b", "c", "d", 0)] == (4, 14)
    assert positions[("b", "c", "d", 1, "e")] == (4, 19)
    assert positions[("b", "c", "f g")] == (4, 31)
    assert positions[("s",)] == (5, 1)
    assert ("not",) not in positions
    assert positions[("t",)] == (8, 1)
    assert positions[("date",)] == (9, 1)
    assert positions[("table",)] == (11, 1)
    assert positions[("table", "k", 0)] == (13, 3)
    assert positions[("table", "k", 1, 1)] == (14, 7)
    assert positions[("arr",)] == positions[("arr", 0)] == (17, 1)
    assert positions[("arr", 0, "x")] == (18, 1)
    assert positions[("arr", 1)] == (19, 1)
    assert positions[("arr", 1, "x")] == (20, 1)
    assert positions[("arr", 1, "sub", "y")] == (22, 1)
    assert positions[("arr", 1, "list", 0, "z")] == (24, 1)
    assert positions[("arr", 1, "list", 1, "z")] == (26, 1)


_bare = st.from_regex(r"[A-Za-z0-9_-]{1,6}", fullmatch=True)
_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x7f"), max_size=12
)
_key = st.one_of(_bare, _text.map(lambda text: text or "k"))


def _toml_key(key: str) -> str:
    import re

    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _toml_string(text: str, style: int) -> str:
    if style == 1 and "'" not in text and not any(ord(c) < 32 and c != "\t" for c in text):
        return f"'{text}'"
    multiline_ok = not any(ord(c) < 32 and c not in "\t\n" for c in text)
    if style == 2 and multiline_ok and "'''" not in text and not text.endswith("'"):
        return f"'''{text}'''"
    return json.dumps(text, ensure_ascii=False)


_scalar = st.one_of(
    st.integers(-1000, 1000),
    st.booleans(),
    st.tuples(_text, st.integers(0, 2)).map(lambda pair: ("str", *pair)),
)
_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(_key, inner, max_size=3),
    ),
    max_leaves=8,
)


def _emit(value: Any) -> str:
    if isinstance(value, tuple):
        return _toml_string(value[1], value[2])
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[\n  " + ",\n  # [comment]\n  ".join(_emit(item) for item in value) + "\n]"
    items = ", ".join(f"{_toml_key(k)} = {_emit(v)}" for k, v in value.items())
    return "{ " + items + " }"


@settings(max_examples=150, deadline=None)
@given(
    pairs=st.dictionaries(_key, _value, max_size=4),
    tables=st.dictionaries(_bare, st.dictionaries(_key, _value, max_size=3), max_size=2),
    entries=st.lists(st.dictionaries(_key, _value, max_size=3), max_size=3),
)
def test_every_path_of_any_document_has_a_position(
    pairs: dict[str, Any], tables: dict[str, dict[str, Any]], entries: list[dict[str, Any]]
) -> None:
    tables = {name: table for name, table in tables.items() if name not in pairs}
    lines = [f'{_toml_key(k)} = {_emit(v)}  # [c] "q"' for k, v in pairs.items()]
    for name, table in tables.items():
        lines += [
            f"[{_toml_key(name)}]",
            *(f"{_toml_key(k)} = {_emit(v)}" for k, v in table.items()),
        ]
    if "middleware" not in pairs and "middleware" not in tables:
        for entry in entries:
            lines += ["[[middleware]]", *(f"{_toml_key(k)} = {_emit(v)}" for k, v in entry.items())]
    text = "\n".join(lines) + "\n"
    data = tomllib.loads(text)
    positions = _toml_positions(text)
    text_lines = text.split("\n")  # TOML lines end at LF only (not at U+0085 and kin)

    def check(value: Any, path: tuple[str | int, ...]) -> None:
        if path:
            assert path in positions, (path, text)
            line, column = positions[path]
            assert 1 <= line <= len(text_lines)
            if isinstance(path[-1], str) and _toml_key(path[-1]) == path[-1]:
                start = text_lines[line - 1][column - 1 :]
                assert start.startswith((path[-1], "[")) or "." in start, (
                    path,
                    text,
                )
        if isinstance(value, dict):
            for key, item in value.items():
                check(item, (*path, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                check(item, (*path, index))

    check(data, ())


# --------------------------------------------------------------------------------------
# JSON Schema


def test_the_schema_covers_the_available_builtins_and_import_strings() -> None:
    schema = json_schema(Registry(group=None))
    names = [
        ref["$ref"].rpartition("/")[2]
        for ref in schema["properties"]["middleware"]["items"]["anyOf"]
    ]
    assert names[:2] == ["middleware.server_timing", "middleware.proxy_headers"]
    assert names[-2:] == ["middleware.contract", "middleware.import-string"]
    unavailable = schema["x-unavailable"]
    for name in unavailable:
        assert f"middleware.{name}" not in names
    request_id = schema["$defs"]["middleware.request_id"]
    assert request_id["properties"]["header_name"]["default"] == "x-request-id"
    generator = request_id["properties"]["generator"]
    assert generator["anyOf"][0]["pattern"].startswith("^[A-Za-z_]")
    assert generator["anyOf"][1] == {"$ref": "#/$defs/substitution"}  # "${GENERATOR}" too
    assert request_id["properties"]["trust_incoming"]["anyOf"][0] == {"type": "boolean"}
    header_name = request_id["properties"]["header_name"]["anyOf"]  # one name, or several
    assert header_name == [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
    assert request_id["description"] == "Give every http request and websocket connection an id."
    assert schema["required"] == ["app"]


def test_the_schema_covers_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGIN_DIST))
    schema = json_schema()
    stamp = schema["$defs"]["middleware.stamp"]
    assert stamp["properties"]["use"] == {"enum": ["stamp"]}
    assert stamp["properties"]["header"]["default"] == "x-stamp"


def test_a_registry_without_entries_still_has_a_schema() -> None:
    schema = json_schema(Registry({"gone": "asgikit.middleware.not_here:X"}, group=None))
    assert schema["x-unavailable"] == ["gone"]
    assert schema["properties"]["middleware"]["items"]["anyOf"][-1] == {
        "$ref": "#/$defs/middleware.import-string"
    }


def test_the_schema_has_a_logging_table_when_asgikit_has_logging(
    fake_logging: list[dict[str, Any]],
) -> None:
    schema = json_schema(Registry(group=None))
    assert schema["$defs"]["logging"]["properties"]["format"]["default"] == "auto"


@pytest.mark.usefixtures("no_logging")
def test_the_schema_has_no_logging_table_without_asgikit_logging() -> None:
    assert "logging" not in json_schema(Registry(group=None))["properties"]


def test_every_server_option_is_a_key_of_the_table_and_a_flag_of_serve(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from asgikit.cli import main
    from asgikit.config.model import server_table_options

    names = [field.name for field in dataclasses.fields(ServerConfig) if field.name != "options"]
    assert list(server_table_options().options) == names
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    usage = capsys.readouterr().out
    for name in names:
        assert f"--{name.replace('_', '-')}" in usage


def test_options_that_take_python_objects_are_refused_with_a_reason(tmp_path: Path) -> None:
    text = 'app = "x:y"\n\n[[middleware]]\nuse = "access_log"\nlogger = "my.module:logger"\n'
    assert problems(tmp_path, text, registry=Registry(group=None)) == [
        "5:1: error: middleware[0].logger: access_log takes 'logger' as a Python object "
        "(such as a provider or a logger): pass it in code, a config file cannot"
    ]


def test_a_telemetry_table_configures_opentelemetry_at_start_up(tmp_path: Path) -> None:
    from asgikit.telemetry import configure

    text = 'app = "x:y"\n\n[telemetry]\nservice_name = "shop"\ntraces = "none"\nmetrics = "none"\n'
    config = load(tmp_path, text)
    assert config.telemetry == {"service_name": "shop", "traces": "none", "metrics": "none"}
    # What configure_telemetry does, without taking the process's global providers.
    telemetry = configure(**config.telemetry, set_global=False)
    try:
        assert telemetry.resource.attributes["service.name"] == "shop"
    finally:
        telemetry.shutdown()


def test_no_telemetry_table_leaves_opentelemetry_alone(tmp_path: Path) -> None:
    config = load(tmp_path, 'app = "x:y"\n')
    assert config.telemetry is None
    assert configure_telemetry(config) is None


def test_telemetry_mistakes_are_reported_at_their_lines(tmp_path: Path) -> None:
    text = (
        'app = "x:y"\n\n[telemetry]\nservise_name = "shop"\nmetrics = "zipkin"\n'
        "span_processors = []\n"
    )
    assert problems(tmp_path, text) == [
        "4:1: error: telemetry.servise_name: [telemetry] has no option 'servise_name'; "
        "did you mean 'service_name'?",
        "5:1: error: telemetry.metrics: expected one of 'console', 'otlp', 'prometheus', 'none'",
        "6:1: error: telemetry.span_processors: [telemetry] takes 'span_processors' as a "
        "Python object (such as a provider or a logger): pass it in code, a config file "
        "cannot",
    ]


@pytest.mark.parametrize(
    ("protocol", "module", "extra"),
    [
        (None, "opentelemetry.exporter.otlp.proto.http", "otlp"),
        ("grpc", "opentelemetry.exporter.otlp.proto.grpc", "otlp-grpc"),
    ],
)
def test_an_exporter_whose_extra_is_missing_fails_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: str | None, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    if protocol is None:
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    else:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    text = 'app = "x:y"\n\n[telemetry]\ntraces = "otlp"\n'
    assert problems(tmp_path, text) == [
        f"4:1: error: telemetry.traces: traces = 'otlp' needs the {extra} extra: "
        f"pip install 'asgikit[{extra}]'"
    ]


@pytest.mark.anyio
async def test_app_from_env_flushes_telemetry_when_the_lifespan_shutdown_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_logging: None
) -> None:
    # Servers may exit by re-raising the signal that stopped them (no atexit, no
    # finally): the last moment a worker is sure to have is its lifespan shutdown.
    import atexit

    import asgikit.telemetry

    made: list[dict[str, Any]] = []
    registered: list[Any] = []
    events: list[str] = []

    class Recorded:
        def shutdown(self) -> None:
            events.append("telemetry shut down")

    def configure(**options: Any) -> Recorded:
        made.append(options)
        return Recorded()

    monkeypatch.setattr(asgikit.telemetry, "configure", configure)
    monkeypatch.setattr(atexit, "register", registered.append)
    path = write(tmp_path, 'app = "tests.test_config:hello_app"\n[telemetry]\ntraces = "none"\n')
    monkeypatch.setenv(CONFIG_ENV, str(path))
    app = app_from_env()
    assert made == [{"traces": "none"}]
    assert (await request(app, "GET", "/")).body == b"hello"  # http passes through

    async def server_send(message: Message) -> None:
        events.append(message["type"])

    answers = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def server_receive() -> Message:
        return next(answers)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, server_receive, server_send)
    assert events == [
        "lifespan.startup.complete",
        "telemetry shut down",  # after the app's own shutdown, before the server hears
        "lifespan.shutdown.complete",
    ]
    [at_exit] = registered  # and at exit, for a server that runs no lifespan
    assert at_exit.__func__ is Recorded.shutdown


def test_a_telemetry_key_that_is_not_a_table(tmp_path: Path) -> None:
    assert problems(tmp_path, 'app = "x:y"\ntelemetry = "console"\n') == [
        "2:1: error: telemetry: expected a table, got a string"
    ]


def test_set_global_false_is_refused_in_a_file(tmp_path: Path) -> None:
    assert problems(tmp_path, 'app = "x:y"\n[telemetry]\nset_global = false\n') == [
        "3:1: error: telemetry.set_global: set_global = false leaves the providers to code: "
        "the middleware of a config file use the global ones, so they would make no spans "
        "or metrics"
    ]


def test_an_option_under_its_deprecated_name_is_a_warning_at_its_line(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        app = "x:y"
        [[middleware]]
        use = "rate_limit"
        rate = "10/minute"
        exempt = ["/health"]
        shadow = true
        """,
        registry=Registry(),
    )
    exempt, shadow = config.warnings
    assert str(exempt) == (
        f"{tmp_path / 'asgikit.toml'}:5:1: warning: middleware[0].exempt: rate_limit: exempt "
        "is deprecated, use exclude_paths (the same meaning); exempt will be removed"
    )
    assert "middleware[0].shadow: rate_limit: shadow is deprecated, use report_only" in str(shadow)
    [entry] = config.middleware
    assert entry.arguments["exempt"] == ["/health"]  # still applied, under its new name


def test_other_warnings_of_a_middleware_reach_the_caller_as_warnings(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="level 2 is experimental"):
        config = load(
            tmp_path,
            """\
            app = "x:y"
            [[middleware]]
            use = "tests.test_config:Noisy"
            level = 2
            """,
            registry=Registry(),
        )
    assert config.warnings == ()


@pytest.mark.parametrize(
    ("use", "silenced"),
    [
        ('"access_log"', True),
        ('"asgikit.middleware.access_log:AccessLogMiddleware"', True),
        ('"request_id"', False),
    ],
)
def test_app_from_env_drops_the_servers_access_lines_when_asgikit_logs_access(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_logging: None,
    use: str,
    silenced: bool,
) -> None:
    path = write(tmp_path, f'app = "tests.test_config:hello_app"\n[[middleware]]\nuse = {use}\n')
    monkeypatch.setenv(CONFIG_ENV, str(path))
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(f"{record.name}: {record.getMessage()}")

    keep = Keep()
    for name in ("uvicorn.access", "hypercorn.access", "granian.access"):
        server_logger = logging.getLogger(name)
        monkeypatch.setattr(server_logger, "disabled", False)  # restored after the test
        monkeypatch.setattr(server_logger, "propagate", False)
        server_logger.addHandler(keep)
    try:
        app_from_env()
        for name in ("uvicorn.access", "hypercorn.access", "granian.access"):
            logging.getLogger(name).warning('127.0.0.1 - "GET / HTTP/1.1" 200')
    finally:
        for name in ("uvicorn.access", "hypercorn.access", "granian.access"):
            logging.getLogger(name).removeHandler(keep)
    assert (records == []) is silenced
    assert len(records) in (0, 3)


@pytest.mark.anyio
async def test_a_failing_telemetry_shutdown_still_lets_the_server_hear_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from asgikit.config.observability import shut_down_after_lifespan

    def failing() -> None:
        raise RuntimeError("the collector is gone")

    heard: list[str] = []

    async def server_send(message: Message) -> None:
        heard.append(message["type"])

    answers = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def server_receive() -> Message:
        return next(answers)

    app = shut_down_after_lifespan(hello_app, failing)
    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, server_receive, server_send)
    assert heard == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    [record] = [r for r in caplog.records if r.name == "asgikit.telemetry"]
    assert record.getMessage() == "telemetry.shutdown_failed"
    assert record.exc_info is not None and "the collector is gone" in str(record.exc_info[1])


def test_logging_configure_false_leaves_the_apps_own_logging_set_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The user's structlog chain (a processor of their own) and stdlib handlers are
    # exactly what they were after the app is built from a file that says so.
    def mine(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
        return {**event, "mine": True}

    before = structlog.get_config()
    structlog.configure(processors=[mine, structlog.processors.JSONRenderer()])
    handlers = list(logging.getLogger().handlers)
    try:
        path = write(
            tmp_path,
            """\
            app = "tests.test_config:hello_app"
            [logging]
            configure = false
            format = "json"
            [[middleware]]
            use = "request_id"
            """,
        )
        monkeypatch.setenv(CONFIG_ENV, str(path))
        app_from_env()
        assert structlog.get_config()["processors"][0] is mine
        assert logging.getLogger().handlers == handlers
    finally:
        structlog.configure(**before)


def test_logging_configure_must_be_true_or_false(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, 'app = "x:y"\n[logging]\nconfigure = "no"\n')
    assert problem.startswith("3:1: error: logging.configure:")


def test_an_unknown_otlp_protocol_fails_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    text = 'app = "x:y"\n\n[telemetry]\ntraces = "otlp"\n'
    [problem] = problems(tmp_path, text)
    assert problem.startswith("4:1: error: telemetry.traces: traces: ")
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='http/json'" in problem
