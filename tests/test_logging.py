"""asgikit.logging: configure() for console and JSON, the console processors, the bridge."""

from __future__ import annotations

import calendar
import io
import json
import logging
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asgikit.logging
import asgikit.logging.console
from asgikit.contract import enforce
from asgikit.logging import (
    AccessLineFormatter,
    EscapeControlCharacters,
    Field,
    UTCTimeStamper,
    configure,
    escape_control_characters,
    structlog_contextvar,
)
from asgikit.middleware import RequestIDMiddleware
from asgikit.middleware.access_log import AccessLogMiddleware
from asgikit.testing import request
from asgikit.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.anyio

SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
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
    saved_servers = [(s.handlers[:], s.propagate, s.level, s.disabled) for s in servers]
    for server in servers:  # as a fresh process has them, whatever earlier tests did
        server.setLevel(logging.NOTSET)
        server.disabled = False
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:], level = saved_root
    root.setLevel(level)
    for server, (handlers, propagate, server_level, disabled) in zip(
        servers, saved_servers, strict=True
    ):
        server.handlers[:] = handlers
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
    uvicorn_error.addHandler(logging.NullHandler())
    uvicorn_error.propagate = False
    stream, buffer = binary_stream()
    configure(format="json", stream=stream)
    configure(format="json", stream=stream)  # again: still one handler
    assert sum(isinstance(h, asgikit.logging._Handler) for h in logging.getLogger().handlers) == 1
    for name in SERVER_LOGGERS:
        assert logging.getLogger(name).handlers == [] and logging.getLogger(name).propagate

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
