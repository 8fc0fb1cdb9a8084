"""asgikit.logging: configure() for console and JSON, the console processors, the bridge."""

from __future__ import annotations

import calendar
import functools
import io
import json
import logging
import logging.config
import logging.handlers
import queue
import re
import sys
import time
import traceback
import types
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asgikit.logging
import asgikit.logging.console
from asgikit.config import ConfigError, configure_logging, load_config
from asgikit.config.observability import claim_console, silence_server_access_logs
from asgikit.contract import enforce
from asgikit.logging import (
    AccessLineFormatter,
    EscapeControlCharacters,
    Field,
    UTCTimeStamper,
    configure,
    escape_control_characters,
    short_traceback,
    structlog_contextvar,
)
from asgikit.logging.bridge import uninstall
from asgikit.middleware import RequestIDMiddleware
from asgikit.middleware.access_log import AccessLogMiddleware
from asgikit.testing import request, websocket
from asgikit.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.anyio

SERVER_LOGGERS = (*asgikit.logging.SERVER_LOGGERS, "litestar", "django")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
SGR = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """configure() changes global state: put structlog and logging back afterwards."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    servers = [logging.getLogger(name) for name in SERVER_LOGGERS]
    saved_servers = [
        (s.handlers[:], s.filters[:], s.propagate, s.level, s.disabled) for s in servers
    ]
    for server in servers:  # as a fresh process has them, whatever earlier tests did
        server.setLevel(logging.NOTSET)
        server.disabled = False
    structlog.contextvars.clear_contextvars()
    yield
    uninstall()  # asgikit no longer owns logging: nothing is claimed after this test
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:], level = saved_root
    root.setLevel(level)
    for server, (handlers, filters, propagate, server_level, disabled) in zip(
        servers, saved_servers, strict=True
    ):
        server.handlers[:] = handlers
        server.filters[:] = filters
        server.propagate = propagate
        server.setLevel(server_level)
        server.disabled = disabled


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def binary_stream() -> tuple[io.TextIOWrapper, io.BytesIO]:
    buffer = io.BytesIO()
    return io.TextIOWrapper(buffer, encoding="utf-8", write_through=True), buffer


def ok_app(status: int = 200, body: bytes = b"hello") -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


# --------------------------------------------------------------------------------------
# JSON


def test_json_lines_go_to_the_binary_buffer_with_level_and_utc_timestamp() -> None:
    stream, buffer = binary_stream()
    configure(format="json", stream=stream, stdlib=False)
    structlog.get_logger().info("hello", n=1, ok=True)
    line = json.loads(buffer.getvalue())
    assert line.pop("timestamp")
    assert line == {"event": "hello", "n": 1, "ok": True, "level": "info"}
    assert buffer.getvalue().endswith(b"}\n")


def test_json_renders_exceptions_as_text_and_anything_else_by_repr() -> None:
    stream = io.StringIO()  # no binary buffer: the text path
    configure(format="json", stream=stream, stdlib=False)
    log = structlog.get_logger()
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        log.exception("failed", thing=object)
    [line] = stream.getvalue().splitlines()
    event = json.loads(line)
    assert "Traceback" in event["exception"] and "ValueError: bad\nvalue" in event["exception"]
    assert "exc_info" not in event
    assert event["thing"] == repr(object)


def test_json_timestamps_are_iso_utc_with_microseconds() -> None:
    stamper = UTCTimeStamper()
    before = time.time()
    stamps = [stamper(None, "info", {})["timestamp"] for _ in range(3)]
    after = time.time()
    assert all(ISO_UTC.match(stamp) for stamp in stamps)
    assert stamps == sorted(stamps)
    seconds = calendar.timegm(time.strptime(stamps[0][:19], "%Y-%m-%dT%H:%M:%S"))
    assert int(before) <= seconds <= after


def test_levels_below_the_configured_one_are_dropped() -> None:
    stream = io.StringIO()
    configure(format="json", level="WARNING", stream=stream, stdlib=False)
    log = structlog.get_logger()
    log.info("quiet")
    log.warning("loud")
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["loud"]
    configure(format="json", level=40, stream=stream, stdlib=False)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"format": "xml"}, ValueError),
        ({"level": "chatty"}, ValueError),
        ({"level": 15}, ValueError),
        ({"level": True}, TypeError),
        ({"level": 2.5}, TypeError),
        ({"tracebacks": "long"}, ValueError),
    ],
)
def test_bad_arguments(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        configure(**options)


# --------------------------------------------------------------------------------------
# Console, and choosing


def test_auto_picks_the_console_on_a_terminal_and_json_elsewhere() -> None:
    terminal = Terminal()
    configure(stream=terminal, stdlib=False)
    structlog.get_logger().info("hello")
    assert "[info     ] hello" in SGR.sub("", terminal.getvalue())
    assert "\x1b[" in terminal.getvalue()  # a terminal gets colours

    piped = io.StringIO()
    configure(stream=piped, stdlib=False)
    structlog.get_logger().info("hello")
    assert json.loads(piped.getvalue())["event"] == "hello"


def test_auto_without_a_stream_looks_at_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    configure(stdlib=False)
    structlog.get_logger().info("to stderr")
    assert "to stderr" in terminal.getvalue()


class BrokenTerminal(io.StringIO):
    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


class NoIsatty:
    def __init__(self) -> None:
        self.written: list[str] = []

    def write(self, text: str) -> int:
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return "".join(self.written)


@pytest.mark.parametrize("make", [BrokenTerminal, NoIsatty], ids=["isatty fails", "no isatty"])
def test_streams_that_cannot_say_are_not_terminals(
    make: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    # Chosen automatically: JSON, as for any stream that is not a terminal.
    stream = make()
    configure(stream=stream, stdlib=False)
    structlog.get_logger().info("hello")
    assert json.loads(stream.getvalue())["event"] == "hello"
    # The console, asked for: without colours, as off a terminal.
    stream = make()
    configure(format="console", stream=stream, stdlib=False)
    structlog.get_logger().info("plain")
    assert "[info     ] plain" in stream.getvalue()
    assert "\x1b" not in stream.getvalue()


def test_no_color_and_force_color(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setenv("NO_COLOR", "1")
    configure(format="console", stream=terminal, stdlib=False)
    structlog.get_logger().info("plain")
    assert "\x1b" not in terminal.getvalue()

    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("FORCE_COLOR", "1")
    piped = io.StringIO()
    configure(format="console", stream=piped, stdlib=False)
    structlog.get_logger().info("coloured")
    assert "\x1b[" in piped.getvalue()


async def test_the_console_line_of_a_request() -> None:
    stream = io.StringIO()
    configure(format="console", colors=False, stream=stream, stdlib=False)
    app = enforce(RequestIDMiddleware(enforce(AccessLogMiddleware(enforce(ok_app())))))
    response = await request(app, "GET", "/items/42?token=abc&page=2", headers={"x": "y"})
    [line] = stream.getvalue().splitlines()
    pattern = r"\[info     \] GET /items/42\?token=\[REDACTED\]&page=2 200 [0-9.]+ms 5B"
    summary = re.search(pattern + r" +request_id=(\w+)$", line)
    assert summary, line
    assert summary.group(1) == response.header("x-request-id")
    assert "url.path" not in line and "client.address" not in line


async def test_console_tracebacks_never_show_locals_even_with_rich_installed() -> None:
    # litestar brings rich into the dev environment; structlog would then use its
    # traceback formatter, which prints each frame's locals (the scope, its headers).
    stream = io.StringIO()
    configure(format="console", colors=False, stream=stream, stdlib=False)

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        api_key = "sk-do-not-log-me"
        raise RuntimeError(f"failed after {len(api_key)} characters")

    with pytest.raises(RuntimeError):
        await request(
            enforce(AccessLogMiddleware(enforce(failing))),
            headers={"authorization": "Bearer do-not-log-me-either"},
        )
    output = stream.getvalue()
    assert "Traceback (most recent call last)" in output
    assert "do-not-log-me" not in output


async def test_the_console_line_of_an_error_with_its_traceback() -> None:
    stream = io.StringIO()
    configure(format="console", colors=False, stream=stream, stdlib=False)

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("evil\x1b[2J\r\nforged line")

    with pytest.raises(RuntimeError):
        await request(enforce(AccessLogMiddleware(enforce(failing))))
    output = stream.getvalue()
    first, *traceback_lines = output.splitlines()
    assert "[error    ] GET / 500" in first and "error.type=RuntimeError" in first
    assert any(line.startswith("Traceback") for line in traceback_lines)
    assert "\x1b" not in output and "\r" not in output
    assert "RuntimeError: evil\\x1b[2J\\r\\nforged line" in output


HOSTILE = "\r\n2024-01-01 [error    ] forged\x1b[2J\x1b]0;title\x07\x9b31m\u2028\u202e\x00\x7f"


async def test_hostile_values_cannot_colour_or_split_a_coloured_line() -> None:
    stream = io.StringIO()
    configure(format="console", colors=True, stream=stream, stdlib=False)
    await request(
        enforce(AccessLogMiddleware(enforce(ok_app()))),
        "GET",
        "/" + HOSTILE + "\x1b[38;5;196m",
        headers=[(b"user-agent", HOSTILE.encode("latin-1", "replace"))],
    )
    output = stream.getvalue()
    assert output.count("\n") == 1 and len(output.splitlines()) == 1
    used = set(SGR.findall(output))
    assert "\x1b[38;5;196m" not in used
    assert SGR.sub("", output).count("\x1b") == 0  # every escape left is a colour we chose
    assert "\\x1b[2J" in output and "\\r\\n" in output


def is_unsafe(char: str) -> bool:
    return (
        unicodedata.category(char) in ("Cc", "Zl", "Zp")
        or "\u202a" <= char <= "\u202e"
        or ("\u2066" <= char <= "\u2069")
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.text(max_size=40), user_agent=st.binary(max_size=40))
def test_no_client_value_can_break_the_console_line(path: str, user_agent: bytes) -> None:
    stream = io.StringIO()
    configure(format="console", colors=False, stream=stream, stdlib=False)
    app = enforce(AccessLogMiddleware(enforce(ok_app())))
    anyio.run(lambda: request(app, "GET", "/" + path, headers=[(b"user-agent", user_agent)]))
    output = stream.getvalue()
    assert output.endswith("\n") and len(output.splitlines()) == 1
    assert not any(is_unsafe(char) for char in output[:-1])


# --------------------------------------------------------------------------------------
# The bridge to logging


async def test_stdlib_logging_goes_through_the_same_renderer_with_the_context() -> None:
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(logging.StreamHandler(sys.stderr))
    uvicorn_error.propagate = False
    stream, buffer = binary_stream()
    configure(format="json", stream=stream)
    configure(format="json", stream=stream)  # again: still one line per record

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        logging.getLogger("myapp").warning("stdlib %s", "call", extra={"user": "ann"})
        await ok_app()(scope, receive, send)

    await request(enforce(RequestIDMiddleware(enforce(app))))
    logging.getLogger("uvicorn.error").info("from the server")
    events = [json.loads(line) for line in buffer.getvalue().splitlines()]
    stdlib_line, server_line = events
    assert stdlib_line["event"] == "stdlib call"
    assert stdlib_line["logger"] == "myapp" and stdlib_line["level"] == "warning"
    assert stdlib_line["user"] == "ann"
    assert len(stdlib_line["request_id"]) == 32
    assert ISO_UTC.match(stdlib_line["timestamp"])
    assert server_line["logger"] == "uvicorn.error"


def test_stdlib_console_lines_are_escaped_too() -> None:
    stream = io.StringIO()
    configure(format="console", colors=False, stream=stream, level="debug")
    logging.getLogger("myapp").info("line\nbreak")
    assert stream.getvalue().count("\n") == 1 and "line\\nbreak" in stream.getvalue()
    assert logging.getLogger().level == logging.DEBUG


def test_stdlib_false_leaves_logging_alone() -> None:
    before = logging.getLogger().handlers[:]
    configure(format="json", stream=io.StringIO(), stdlib=False)
    assert logging.getLogger().handlers == before


# --------------------------------------------------------------------------------------
# The pieces


def test_structlog_contextvar_is_the_one_structlog_merges() -> None:
    var = structlog_contextvar("user_id")
    token = var.set("ann")
    assert structlog.contextvars.get_contextvars() == {"user_id": "ann"}
    var.reset(token)
    assert structlog.contextvars.get_contextvars() == {}


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain café ☕", "plain café ☕"),
        ("a\r\nb", "a\\r\\nb"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("tab\there\x00\x7f\x85\x9b", "tab\\there\\x00\\x7f\\x85\\x9b"),
        ("\u2028\u2029\u202e\u2066", "\\u2028\\u2029\\u202e\\u2066"),
    ],
)
def test_escape_control_characters(text: str, escaped: str) -> None:
    assert escape_control_characters(text) == escaped


def test_the_escaping_processor_keeps_newlines_only_where_they_belong() -> None:
    event = {
        "event": "x\ny",
        "count": 3,
        "exception": "Traceback\n  \x1b[2J",
        "stack": "a\nb",
        "data": b"\x1b",
    }
    assert EscapeControlCharacters()(None, "info", event) == {
        "event": "x\\ny",
        "count": 3,
        "exception": "Traceback\n  \\x1b[2J",
        "stack": "a\nb",
        "data": b"\x1b",
    }


def access_event(**fields: Any) -> dict[str, Any]:
    return {
        "event": "http.request",
        Field.METHOD: "GET",
        Field.PATH: "/a",
        Field.STATUS: 200,
        Field.DURATION_MS: 3.14159,
        Field.RESPONSE_BODY_SIZE: 1536,
        Field.USER_AGENT: "curl",
        Field.REQUEST_ID: "r1",
        "user_id": 7,
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "summary"),
    [
        ({}, "GET /a 200 3.1ms 1.5KB"),
        ({Field.QUERY: "q=1"}, "GET /a?q=1 200 3.1ms 1.5KB"),
        ({Field.DURATION_MS: 0.4219, Field.RESPONSE_BODY_SIZE: 12}, "GET /a 200 0.42ms 12B"),
        (
            {Field.DURATION_MS: 1500.0, Field.RESPONSE_BODY_SIZE: 3 * 2**20},
            "GET /a 200 1.50s 3.0MB",
        ),
        ({Field.RESPONSE_BODY_SIZE: 5 * 2**40}, "GET /a 200 3.1ms 5120.0GB"),
        ({Field.STATUS: None, Field.DURATION_MS: None}, "GET /a - - 1.5KB"),
    ],
)
def test_the_access_summary(fields: dict[str, Any], summary: str) -> None:
    event = AccessLineFormatter()(None, "info", access_event(**fields))
    assert event == {"event": summary, Field.REQUEST_ID: "r1", "user_id": 7}


def test_the_console_line_shows_a_short_trace_id_when_a_span_was_current() -> None:
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traced = access_event(**{Field.TRACE_ID: trace_id, Field.SPAN_ID: span_id})
    event = AccessLineFormatter()(None, "info", traced)
    assert event == {
        "event": "GET /a 200 3.1ms 1.5KB",
        Field.REQUEST_ID: "r1",
        "user_id": 7,
        Field.TRACE_ID: "4bf92f35",
    }
    # Rendered for the console, the line carries it; without a span, nothing.
    line = structlog.dev.ConsoleRenderer(colors=False)(None, "info", event)
    assert "trace_id=4bf92f35" in line and span_id not in line
    assert Field.TRACE_ID not in AccessLineFormatter()(None, "info", access_event())


def test_the_websocket_summary_and_kept_details() -> None:
    event = {
        "event": "websocket.connection",
        Field.PATH: "/chat",
        Field.STATUS: 101,
        Field.DURATION_MS: 12_400.0,
        Field.WS_CLOSE_CODE: 1000,
        Field.WS_MESSAGES_SENT: 3,
    }
    formatted = AccessLineFormatter(details=[Field.WS_MESSAGES_SENT])(None, "info", event)
    assert formatted == {"event": "WS /chat 101 12.40s", Field.WS_MESSAGES_SENT: 3}


def test_the_summary_in_colour() -> None:
    formatter = AccessLineFormatter(colors=True)
    event = formatter(None, "info", access_event(**{Field.STATUS: 503, Field.SLOW: True}))
    assert event["event"] == ("GET /a \x1b[31m503\x1b[0m\x1b[1m \x1b[33m3.1ms\x1b[0m\x1b[1m 1.5KB")
    assert event[Field.SLOW] is True


def test_other_events_pass_untouched() -> None:
    event = {"event": "something else", Field.PATH: "/kept"}
    assert AccessLineFormatter()(None, "info", dict(event)) == event


def traceback_text(error: BaseException) -> str:
    sio = io.StringIO()
    asgikit.logging.console.escaped_traceback(sio, (type(error), error, error.__traceback__))
    return sio.getvalue()


def test_tracebacks_escape_what_exception_messages_and_notes_carry() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    try:
        try:
            raise Unprintable
        except Unprintable:
            error = ValueError("evil\nforged line\x1b[2J")
            error.add_note("note\nforged too")
            raise error from KeyError("plain cause")
    except ValueError as raised:
        text = traceback_text(raised)
    assert "ValueError: evil\\nforged line\\x1b[2J" in text
    assert "note\\nforged too" in text and "plain cause" in text
    assert "Unprintable" not in text  # a suppressed context, still walked safely
    assert not any(line.startswith("forged") for line in text.splitlines())


def test_exception_group_members_are_indented_by_the_traceback_itself() -> None:
    try:
        raise ExceptionGroup("group\nforged", [ValueError("inner\nforged")])
    except ExceptionGroup as group:
        text = traceback_text(group)
    assert "ExceptionGroup: group" in text
    assert not any(line.startswith("forged") for line in text.splitlines())


def test_a_server_logger_silenced_on_purpose_stays_silent() -> None:
    # uvicorn --no-access-log empties uvicorn.access and stops it propagating; an app
    # factory that configures logging afterwards must not bring those lines back.
    access = logging.getLogger("uvicorn.access")
    access.handlers, access.propagate = [], False
    stream = io.StringIO()
    configure(format="json", stream=stream)
    access.info('127.0.0.1:5000 - "GET / HTTP/1.1" 200')
    logging.getLogger("uvicorn.error").info("still routed")
    assert "GET / HTTP/1.1" not in stream.getvalue()
    assert "still routed" in stream.getvalue()
    access.propagate = True


def test_configure_false_changes_nothing() -> None:
    before = structlog.get_config()
    root_handlers = list(logging.getLogger().handlers)
    asgikit.logging.configure(format="json", configure=False)
    assert structlog.get_config() == before
    assert logging.getLogger().handlers == root_handlers


# --------------------------------------------------------------------------------------
# The console belongs to asgikit (when it configures logging)


def lines_of(buffer: io.BytesIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def events_of(buffer: io.BytesIO) -> list[str]:
    return [line["event"] for line in lines_of(buffer)]


def test_console_handlers_of_others_are_taken_out_and_their_lines_come_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    basic = logging.StreamHandler(sys.stderr)  # daphne's logging.basicConfig
    kept = logging.handlers.BufferingHandler(100)  # not the console: stays
    root.addHandler(basic)
    root.addHandler(kept)
    # Litestar's default: a queue handler whose listener writes to stderr, no propagation.
    litestar = logging.getLogger("litestar")
    queued = logging.handlers.QueueHandler(queue.Queue())
    queued.listener = logging.handlers.QueueListener(  # type: ignore[attr-defined]
        queued.queue, logging.StreamHandler(sys.stderr)
    )
    litestar.addHandler(queued)
    litestar.propagate = False
    django = logging.getLogger("django")  # Django's DEBUG console handler
    django.addHandler(logging.StreamHandler(sys.stdout))
    stream, buffer = binary_stream()
    configure(format="json", stream=stream)
    logging.getLogger("myapp").warning("app")
    litestar.error("framework")
    logging.getLogger("django.request").error("django")
    assert events_of(buffer) == ["app", "framework", "django"]
    assert capsys.readouterr() == ("", "")
    assert basic not in root.handlers and queued not in litestar.handlers
    assert [record.getMessage() for record in kept.buffer] == ["app", "framework", "django"]


# server: (the logger its handler is on, whether it propagates, the logger it writes to)
SERVER_SETUPS = {
    "uvicorn": ("uvicorn", False, "uvicorn.error"),
    "hypercorn": ("hypercorn.error", True, "hypercorn.error"),
    "granian": ("_granian", False, "_granian.serve"),  # its Rust core's module names
    "gunicorn": ("gunicorn.error", False, "gunicorn.error"),
    "daphne": ("", True, "daphne.server"),  # logging.basicConfig() on the root
}


@pytest.mark.parametrize("server", list(SERVER_SETUPS))
def test_each_servers_lines_are_routed_once(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name, propagate, writer = SERVER_SETUPS[server]
    own = logging.getLogger(name)
    own.addHandler(logging.StreamHandler(sys.stderr if server != "granian" else sys.stdout))
    if name:
        own.propagate = propagate
    stream, buffer = binary_stream()
    configure(format="json", stream=stream)
    logging.getLogger(writer).info("started")
    assert [(line["event"], line["logger"]) for line in lines_of(buffer)] == [("started", writer)]
    assert capsys.readouterr() == ("", "")


def test_a_framework_that_sets_logging_up_later_is_claimed_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream, buffer = binary_stream()
    configure(format="json", stream=stream)
    litestar_like = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["console"], "level": "INFO"},
    }
    logging.config.dictConfig(litestar_like)  # when the app is created: ours is gone
    asgikit.logging.claim_console()  # what asgikit serve and app_from_env do then
    logging.getLogger("myapp").warning("once")
    logging.config.dictConfig(litestar_like)  # and where nobody called claim_console():
    logging.getLogger("uvicorn.error").info("started")  # the first server line does
    logging.getLogger("myapp").warning("still once")
    assert events_of(buffer) == ["once", "started", "still once"]
    assert capsys.readouterr() == ("", "")


def test_the_servers_first_line_claims_what_the_app_set_up_after_configure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream, buffer = binary_stream()
    configure(format="json", stream=stream)
    # Django, with DEBUG, when the app module creates its app after configure().
    logging.getLogger("django").addHandler(logging.StreamHandler(sys.stderr))
    logging.getLogger("uvicorn.error").info("Started server process")
    logging.getLogger("django.request").error("Internal Server Error: /fail")
    assert events_of(buffer) == ["Started server process", "Internal Server Error: /fail"]
    assert capsys.readouterr() == ("", "")


def test_a_handler_a_server_adds_after_configure_never_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream, buffer = binary_stream()
    configure(format="json", stream=stream)
    # hypercorn gives hypercorn.error a handler once the app is loaded, at its first line.
    logging.getLogger("hypercorn.error").handlers = [logging.StreamHandler(sys.stderr)]
    logging.getLogger("hypercorn.error").info("Running on http://127.0.0.1:8000")
    assert events_of(buffer) == ["Running on http://127.0.0.1:8000"]
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("options", [{"stdlib": False}, {"configure": False}])
def test_nothing_is_claimed_unless_asgikit_routes_logging(options: dict[str, Any]) -> None:
    configure(format="json", stream=io.StringIO())  # owned, then given back
    configure(format="json", stream=io.StringIO(), **options)
    mine = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(mine)
    server = logging.getLogger("hypercorn.error")
    server.handlers = [mine]
    asgikit.logging.claim_console()
    server.info("to the user's handler")
    assert mine in logging.getLogger().handlers and server.handlers == [mine]


def test_no_line_carries_a_servers_private_extras(capsys: pytest.CaptureFixture[str]) -> None:
    # Another handler (a file, say) formats the record first: message and asctime are
    # then set on the record itself, as Litestar's queue handler does.
    formatted = logging.StreamHandler(io.StringIO())
    formatted.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger().addHandler(formatted)
    stream, buffer = binary_stream()
    configure(format="json", stream=stream)
    colored = "Started server process [\x1b[36m%d\x1b[0m]"
    server = logging.getLogger("uvicorn.error")
    server.info("Started server process [%d]", 42, extra={"color_message": colored})
    logging.getLogger("myapp").info("mine", extra={"user": "ann"})
    started, mine = lines_of(buffer)
    assert started["event"] == "Started server process [42]"
    assert not {"color_message", "message", "asctime"} & (started.keys() | mine.keys())
    assert mine["user"] == "ann"
    console = io.StringIO()
    configure(format="console", colors=False, stream=console)
    server.info("Started server process [%d]", 42, extra={"color_message": colored})
    assert "color_message" not in console.getvalue() and "\\x1b" not in console.getvalue()


# --------------------------------------------------------------------------------------
# Processors of the user's


def mark_line(logger: Any, name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A processor of the user's (named by import string in the config file tests)."""
    event_dict["deployment"] = "blue"
    return event_dict


def test_processors_run_for_structlog_events_and_logging_records() -> None:
    stream, buffer = binary_stream()
    configure(format="json", stream=stream, processors=[mark_line])
    structlog.get_logger().info("structlog")
    logging.getLogger("myapp").info("logging")
    assert [(line["event"], line["deployment"]) for line in lines_of(buffer)] == [
        ("structlog", "blue"),
        ("logging", "blue"),
    ]


def logging_config(tmp_path: Path, table: str) -> Path:
    path = tmp_path / "asgikit.toml"
    path.write_text(f'app = "tests.test_logging:ok_app"\n[logging]\n{table}\n', encoding="utf-8")
    return path


def test_processors_named_in_a_config_file_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = logging_config(
        tmp_path, 'format = "json"\nprocessors = ["tests.test_logging:mark_line"]'
    )
    assert configure_logging(load_config(path))
    structlog.get_logger().info("structlog")
    logging.getLogger("myapp").info("logging")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["event"], line["deployment"]) for line in lines] == [
        ("structlog", "blue"),
        ("logging", "blue"),
    ]


@pytest.mark.parametrize(
    ("processor", "message"),
    [
        ("tests.test_logging:no_such_processor", "has no attribute 'no_such_processor'"),
        ("no_such_package.module:mark", "no module named 'no_such_package'"),
        ("tests.test_logging.mark_line", "processors[0]: expected `str` matching regex"),
        ("tests.test_logging:SERVER_LOGGERS", "is not callable"),
    ],
)
def test_a_processor_that_cannot_be_used_is_reported_at_its_line(
    tmp_path: Path, processor: str, message: str
) -> None:
    path = logging_config(tmp_path, f'format = "json"\nprocessors = ["{processor}"]')
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    [issue] = raised.value.issues
    assert str(issue).startswith(f"{path}:4:")  # the line of processors = [...]
    assert "error: logging.processors" in str(issue)
    assert message in str(issue)


def test_a_class_or_a_value_is_not_a_processor() -> None:
    with pytest.raises(TypeError, match=r"processors\[0\]: TimeStamper is a class"):
        configure(processors=[structlog.processors.TimeStamper])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"processors\[1\]: 'text' is not callable"):
        configure(processors=[mark_line, "text"])  # type: ignore[list-item]
    for not_a_list in (mark_line, "tests.test_logging:mark_line"):
        with pytest.raises(TypeError, match="processors must be a list of processors"):
            configure(processors=not_a_list)  # type: ignore[arg-type]


def test_with_configure_false_the_users_structlog_and_logging_stay(tmp_path: Path) -> None:
    structlog.configure(processors=[mark_line, structlog.processors.JSONRenderer()])
    mine = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(mine)
    before = structlog.get_config()
    path = logging_config(tmp_path, 'configure = false\nformat = "json"')
    assert not configure_logging(load_config(path))
    claim_console()  # what app_from_env does once the app is built
    assert structlog.get_config() == before
    assert mine in logging.getLogger().handlers


# --------------------------------------------------------------------------------------
# Tracebacks: the app's frames first, asgikit's folded away


def helper_that_fails() -> None:
    raise RuntimeError("the app failed\nforged line\x1b[2J")


async def failing_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
    helper_that_fails()


FILE_LINE = re.compile(r'^\s*File "([^"]+)", line \d+, in (\S+)$', re.MULTILINE)
ASGIKIT_FILES = re.compile(r"/(asgikit|middleware)/")


def shown_frames(text: str) -> list[tuple[str, str]]:
    return FILE_LINE.findall(text)


@pytest.mark.parametrize("fmt", ["console", "json"])
async def test_a_short_traceback_shows_the_apps_frames_first_and_no_asgikit_frame(
    fmt: str,
) -> None:
    stream, buffer = binary_stream()
    configure(format=fmt, colors=False, stream=stream)  # type: ignore[arg-type]
    app = enforce(RequestIDMiddleware(enforce(AccessLogMiddleware(enforce(failing_app)))))
    with pytest.raises(RuntimeError):
        await request(app)
    output = buffer.getvalue().decode()
    text = json.loads(output)["exception"] if fmt == "json" else output
    frames = shown_frames(text)
    assert frames == [(__file__, "failing_app"), (__file__, "helper_that_fails")]
    assert re.search(r"^  \[\d+ asgikit frames\]$", text, re.MULTILINE), text
    assert not ASGIKIT_FILES.search(text)
    if fmt == "console":  # escaped as ever
        assert "RuntimeError: the app failed\\nforged line\\x1b[2J" in text


async def test_full_tracebacks_show_every_frame() -> None:
    stream, buffer = binary_stream()
    configure(format="json", stream=stream, tracebacks="full")
    with pytest.raises(RuntimeError):
        await request(enforce(AccessLogMiddleware(enforce(failing_app))))
    text = json.loads(buffer.getvalue())["exception"]
    assert ASGIKIT_FILES.search(text) and "frames]" not in text
    assert shown_frames(text)[-2:] == [(__file__, "failing_app"), (__file__, "helper_that_fails")]


def test_what_the_app_called_after_its_last_frame_is_shown() -> None:
    try:
        json.loads("{not json")
    except ValueError as error:
        text = short_traceback((type(error), error, error.__traceback__))
    frames = shown_frames(text)
    assert frames[0] == (__file__, "test_what_the_app_called_after_its_last_frame_is_shown")
    assert [name for _, name in frames[1:]] == ["loads", "decode", "raw_decode"]


def recurse(depth: int) -> None:
    if depth == 0:
        raise ValueError("deep\nline")
    recurse(depth - 1)


def chained() -> BaseException:
    try:
        try:
            recurse(2)
        except ValueError as error:
            raise KeyError("key") from error
    except KeyError as error:
        return error
    raise AssertionError


def in_context() -> BaseException:
    try:
        try:
            recurse(1)
        except ValueError:
            raise TypeError("during")  # noqa: B904 - the implicit context is the point
    except TypeError as error:
        error.add_note("a note\nover two lines")
        return error
    raise AssertionError


def grouped() -> BaseException:
    try:
        try:
            recurse(0)
        except ValueError as first:
            try:
                raise OSError("second")
            except OSError as second:
                inner = ExceptionGroup("inner", [KeyError(1)])
                raise ExceptionGroup("outer", [first, second, inner]) from None
    except ExceptionGroup as group:
        return group
    raise AssertionError


def wide() -> BaseException:
    try:
        raise ExceptionGroup("wide", [ValueError(n) for n in range(17)])
    except ExceptionGroup as group:
        return group


def too_deep() -> BaseException:
    try:
        recurse(10**6)
    except RecursionError as error:
        return error
    raise AssertionError


def nested_too_deep() -> BaseException:
    error: Exception = ValueError("leaf")
    for level in range(12):
        error = ExceptionGroup(f"level {level}", [error])
    try:
        raise error
    except ExceptionGroup as group:
        return group


def notes_not_a_list() -> BaseException:
    try:
        error = KeyError("key")
        error.__notes__ = 42  # type: ignore[assignment]
        raise error
    except KeyError as error:
        return error


def unprintable() -> BaseException:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    try:
        raise Unprintable
    except Unprintable as error:
        return error


CARETS = re.compile(r"^[\s|]*[~^]+\s*$")


@pytest.mark.parametrize(
    "make",
    [chained, in_context, grouped, wide, nested_too_deep, too_deep, notes_not_a_list, unprintable],
)
def test_with_no_frame_to_fold_the_short_traceback_is_pythons_without_carets(
    make: Callable[[], BaseException],
) -> None:
    error = make()
    python = "".join(traceback.format_exception(error)).rstrip("\n")
    expected = "\n".join(line for line in python.splitlines() if not CARETS.match(line))
    assert short_traceback((type(error), error, error.__traceback__)) == expected


def test_a_syntax_error_shows_its_line_and_caret_as_python_does() -> None:
    try:
        compile("total = 1 +\n", "<app config>", "exec")
    except SyntaxError as raised:
        error = raised
    text = short_traceback((type(error), error, error.__traceback__))
    assert text == "".join(traceback.format_exception(error)).rstrip("\n")
    assert text.splitlines()[-4:] == [
        '  File "<app config>", line 1',
        "    total = 1 +",
        "               ^",
        "SyntaxError: invalid syntax",
    ]


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_an_exception_logged_outside_an_except_block_adds_no_traceback(fmt: str) -> None:
    stream = io.StringIO()
    configure(format=fmt, colors=False, stream=stream)  # type: ignore[arg-type]
    structlog.get_logger().exception("no error here")
    logging.getLogger("myapp").error("nor here", exc_info=True)
    text = stream.getvalue()
    assert "no error here" in text and "nor here" in text
    assert "Traceback" not in text and "NoneType" not in text
    assert len(text.splitlines()) == 2


def test_a_frame_without_a_line_number_is_shown_without_source() -> None:
    # Generated code may carry no line table; the traceback module fails on it (3.11).
    generated = types.FunctionType(helper_that_fails.__code__.replace(co_linetable=b""), {})
    try:
        generated()
    except RuntimeError as error:
        text = short_traceback((type(error), error, error.__traceback__))
    *_, frame, message, forged = text.splitlines()
    # line None; a tracer (coverage, a debugger) gives such a frame line 0 instead
    assert re.fullmatch(
        rf'  File "{re.escape(__file__)}", line (None|0), in helper_that_fails', frame
    )
    assert [message, forged] == ["RuntimeError: the app failed", "forged line\x1b[2J"]


def call_through_generated_code() -> BaseException:
    """The app's function, called by code run from a string that runs compiled code."""
    namespace: dict[str, Any] = {"helper_that_fails": helper_that_fails}
    inner = compile("helper_that_fails()", "uvloop/loop.pyx", "eval")
    namespace["run_inner"] = functools.partial(eval, inner, namespace)
    try:
        eval(compile("run_inner()", "<string>", "eval"), namespace)
    except RuntimeError as error:
        return error
    raise AssertionError


def test_frames_run_from_a_string_or_compiled_code_before_the_apps_are_folded() -> None:
    error = call_through_generated_code()
    text = short_traceback((type(error), error, error.__traceback__))
    assert "  [2 frames: string 1, uvloop 1]" in text.splitlines()
    assert shown_frames(text) == [
        (__file__, "call_through_generated_code"),
        (__file__, "helper_that_fails"),
    ]


def test_asgikit_frames_are_folded_where_the_error_was_raised_inside_asgikit() -> None:
    try:
        configure(format="xml")  # type: ignore[arg-type]
    except ValueError as error:
        text = short_traceback((type(error), error, error.__traceback__))
    lines = text.splitlines()
    assert lines[-2:] == [
        "  [1 asgikit frame]",
        "ValueError: format must be 'auto', 'console' or 'json', not 'xml'",
    ]
    assert not ASGIKIT_FILES.search(text)


def test_origins_stay_right_over_more_generated_file_names_than_are_remembered() -> None:
    # Code made at run time under a new name each time (templates, exec'd snippets).
    for number in range(5000):
        code = compile("helper_that_fails()", f"generated_{number}.py", "exec")
        try:
            exec(code, {"helper_that_fails": helper_that_fails})
        except RuntimeError as error:
            text = short_traceback((type(error), error, error.__traceback__))
        frames = shown_frames(text)
        assert frames[-2:] == [
            (f"generated_{number}.py", "<module>"),
            (__file__, "helper_that_fails"),
        ], text
    assert "[" not in text.split("RuntimeError")[0]  # nothing folded: every frame is the app's


# --------------------------------------------------------------------------------------
# One traceback per exception: the server's copy is dropped


def served_by(server: str, app: ASGIApp) -> ASGIApp:
    """*app* with what each server does when the app raises (in the request's task)."""

    async def served(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:
            if server == "uvicorn":
                logging.getLogger("uvicorn.error").error(
                    "Exception in ASGI application\n", exc_info=exc
                )
            elif server == "hypercorn":
                logging.getLogger("hypercorn.error").exception("Error in ASGI Framework")
            else:  # granian's Rust core formats the traceback into the message
                text = "".join(traceback.format_exception(exc))
                logging.getLogger("_granian.utils").error(
                    "Application callable raised an exception\n%s", text
                )
            raise

    return served


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "granian"])
@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_the_servers_copy_of_a_traceback_the_access_log_wrote_is_dropped(
    server: str, kind: str
) -> None:
    stream, buffer = binary_stream()
    configure(format="json", stream=stream)
    app = served_by(server, AccessLogMiddleware(failing_app))
    drive = request(app, "GET", "/") if kind == "http" else websocket(app, "/")
    with pytest.raises(RuntimeError):
        await drive
    [line] = lines_of(buffer)
    assert line["event"] == ("http.request" if kind == "http" else "websocket.connection")
    assert "helper_that_fails" in line["exception"]
    logging.getLogger("uvicorn.error").error("Exception in ASGI application\n", exc_info=True)
    assert len(lines_of(buffer)) == 2  # another exception's record is not dropped


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "granian"])
async def test_the_server_writes_the_traceback_the_access_log_did_not(server: str) -> None:
    stream, buffer = binary_stream()
    configure(format="json", stream=stream)
    app = served_by(server, AccessLogMiddleware(failing_app, exclude_paths=["/health"]))
    with pytest.raises(RuntimeError):
        await request(app, "GET", "/health")
    [line] = lines_of(buffer)
    assert line.get("logger", "").startswith(("uvicorn", "hypercorn", "_granian"))


async def test_the_servers_other_lines_after_a_written_traceback_still_come_out() -> None:
    stream, buffer = binary_stream()
    configure(format="json", stream=stream)
    access_logged = AccessLogMiddleware(failing_app)

    async def served(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await access_logged(scope, receive, send)
        except RuntimeError:  # in the same task: lines about something else, no traceback
            logging.getLogger("uvicorn.error").warning("Connection lost")
            logging.getLogger("_granian.utils").error("Connection reset by peer")
            raise

    with pytest.raises(RuntimeError):
        await request(served)
    assert events_of(buffer) == ["http.request", "Connection lost", "Connection reset by peer"]


def test_a_root_logger_reconfigured_after_the_servers_first_line_is_claimed_at_its_next(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream, buffer = binary_stream()
    configure(format="json", stream=stream)
    server = logging.getLogger("uvicorn.error")
    server.info("Started server process")
    # An app factory, run later, replaces the root logger's handlers with a file's only.
    kept = logging.handlers.BufferingHandler(100)
    logging.getLogger().handlers = [kept]
    server.info("Application startup complete")
    assert events_of(buffer) == ["Started server process", "Application startup complete"]
    assert [record.getMessage() for record in kept.buffer] == ["Application startup complete"]
    assert capsys.readouterr() == ("", "")


def test_uvicorns_websocket_access_lines_go_with_the_servers_access_log() -> None:
    stream, buffer = binary_stream()
    configure(format="json", stream=stream)
    silence_server_access_logs()  # asgikit's access log is in the pipeline
    server = logging.getLogger("uvicorn.error")
    server.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", "/chat")
    server.info('%s - "WebSocket %s" %d', "127.0.0.1:5000", "/chat", 500)
    server.info("connection open")
    server.info("connection rejected (%d %s)", 403, "Forbidden")
    server.info("connection closed")
    logging.getLogger("uvicorn.access").info('127.0.0.1:5000 - "GET / HTTP/1.1" 200')
    server.info("Shutting down")
    assert events_of(buffer) == ["Shutting down"]


# The file is left for logging to close: nothing else may hold it (that is the case).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("stdlib", [True, False])
def test_json_to_a_file_the_caller_opened_keeps_writing_after_collection(
    tmp_path: Path, stdlib: bool
) -> None:
    """Only the file object's buffer was kept: once the file object was collected it
    closed the buffer, and every line after raised ``ValueError: write to closed file``."""
    import gc

    path = tmp_path / "app.jsonl"
    configure(format="json", stdlib=stdlib, stream=open(path, "a"))  # noqa: SIM115 - kept by logging
    gc.collect()
    structlog.get_logger().info("first")
    gc.collect()
    structlog.get_logger().info("second")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["first", "second"]


@pytest.mark.parametrize("tracebacks", ["short", "full"])
def test_newlines_inside_exception_groups_cannot_start_a_line_of_their_own(
    tracebacks: Any,
) -> None:
    """The traceback module writes a group's messages with its margin (``  | ``) after
    each line break: a search for the message as raised missed them."""
    stream = io.StringIO()
    configure(format="console", stream=stream, colors=False, tracebacks=tracebacks)
    inner = ExceptionGroup("nested\n- FAKE nested", [KeyError("k")])
    group = ExceptionGroup("group\nFAKE group", [ValueError("inner\nFAKE inner"), inner])
    group.add_note("note\nFAKE note")
    try:
        raise group
    except ExceptionGroup:
        structlog.get_logger().exception("boom")
    lines = stream.getvalue().splitlines()
    assert not [line for line in lines if line.lstrip(" |+-").startswith("FAKE")]
    for escaped in ("group\\nFAKE group", "inner\\nFAKE inner", "note\\nFAKE note"):
        assert any(escaped in line for line in lines), escaped
