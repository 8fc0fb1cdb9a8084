"""DevInspectorMiddleware: the app's log lines attached to their request, websockets in
the list, the clear endpoint, copy-as-curl and the traceback's focus frame."""

from __future__ import annotations

import importlib
import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from asgikit.logging import Field, configure
from asgikit.middleware.inspector import logs
from asgikit.testing import http_scope, lifespan, request, websocket
from asgikit.types import Receive, Scope, Send

from .test_inspector import (
    LOCAL,
    _log_hooks_released,  # noqa: F401 - autouse here too
    detail,
    get,
    hello,
    inspector,
    listed,
)

pytestmark = pytest.mark.anyio

app_log = logging.getLogger("shop.db")


@pytest.fixture(autouse=True)
def _info_level() -> Iterator[None]:
    loggers = [app_log, logging.getLogger("shop")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


async def chatty(scope: Scope, receive: Receive, send: Send) -> None:
    """Logs through structlog and logging, then answers like ``hello``."""
    if scope["type"] == "http":
        structlog.get_logger("shop").info("item.loaded", item_id=7)
        app_log.warning("slow query: %d ms", 40, extra={"table": "items"})
        app_log.debug("cache miss")
        logging.getLogger("uvicorn.access").warning("a server's access line: not kept")
    await hello(scope, receive, send)


async def test_structlog_and_logging_lines_are_attached_to_their_request() -> None:
    app_log.info("before any request")  # outside a request: kept nowhere
    app, _ = inspector(chatty)
    structlog.contextvars.bind_contextvars(request_id="rid-9")
    try:
        await get(app, "/items/7")
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    app_log.info("after the request")
    structlog.get_logger("shop").info("after the request")
    [row] = await listed(app)
    assert row["logs"] == 3 and row["log_level"] == "warning"
    found = await detail(app, 1)
    first, second, third = found["log_lines"]
    assert (first["level"], first["event"]) == ("info", "item.loaded")
    assert first["fields"]["item_id"] == "7"
    assert first["fields"]["request_id"] == "rid-9"  # the context bound for the request
    assert (second["level"], second["logger"]) == ("warning", "shop.db")
    assert second["event"] == "slow query: 40 ms"
    assert second["fields"] == {"request_id": "rid-9", "table": "items"}
    assert third["level"] == "debug" and third["event"] == "cache miss"
    assert first["time"] <= second["time"] <= third["time"]
    assert found["logs_dropped"] == 0


async def test_lines_are_bounded_per_request_and_cut() -> None:
    async def loud(scope: Scope, receive: Receive, send: Send) -> None:
        for number in range(5):
            app_log.info("line %d %s", number, "x" * 100, extra={f"f{i}": i for i in range(40)})
        await hello(scope, receive, send)

    app, _ = inspector(loud, max_log_lines=2, max_field_length=20)
    await get(app, "/")
    [row] = await listed(app)
    assert row["logs"] == 5
    found = await detail(app, 1)
    assert found["logs_dropped"] == 3 and len(found["log_lines"]) == 2
    line = found["log_lines"][0]
    assert line["event"] == "line 0 " + "x" * 13 + "...[+87 chars]"
    assert len(line["fields"]) == 31 and line["fields"]["..."] == "[+10 fields]"


async def test_a_value_that_cannot_be_shown_does_not_break_logging() -> None:
    async def odd(scope: Scope, receive: Receive, send: Send) -> None:
        app_log.debug("odd value", extra={"odd": Unprintable()})
        await hello(scope, receive, send)

    app, _ = inspector(odd)
    await get(app, "/")
    [line] = (await detail(app, 1))["log_lines"]
    assert line["fields"] == {"odd": "<Unprintable>"}


async def test_a_logged_exception_keeps_its_traceback() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            raise ValueError("bad row")
        except ValueError:
            app_log.exception("could not load")
        await hello(scope, receive, send)

    app, _ = inspector(failing)
    await get(app, "/")
    [line] = (await detail(app, 1))["log_lines"]
    assert line["level"] == "error" and line["event"] == "could not load"
    assert line["fields"]["exception"].endswith("ValueError: bad row\n")


async def test_capture_logs_false_keeps_none_and_installs_nothing() -> None:
    app, _ = inspector(chatty, capture_logs=False)
    await get(app, "/")
    assert not logs.installed()
    [row] = await listed(app)
    assert row["logs"] == 0 and row["log_level"] is None
    assert (await detail(app, 1))["log_lines"] == []


async def test_the_lifespan_installs_the_hooks_and_its_shutdown_takes_them_out() -> None:
    app, _ = inspector(chatty)
    async with lifespan(app):
        assert logs.installed()
        assert any(isinstance(h, logs.CaptureHandler) for h in logging.getLogger().handlers)
        assert logs.capture_event in structlog.get_config()["processors"]
        await get(app, "/")
    assert not logs.installed()
    assert not any(isinstance(h, logs.CaptureHandler) for h in logging.getLogger().handlers)
    assert logs.capture_event not in structlog.get_config()["processors"]
    logs.release()  # one release too many does nothing
    assert (await listed(app))[0]["logs"] == 3
    async with lifespan(app):  # started once: a second lifespan puts nothing back
        await get(app, "/")
        assert not logs.installed()
    assert (await listed(app))[0]["logs"] == 0


async def test_without_capture_the_lifespan_installs_nothing() -> None:
    app, _ = inspector(capture_logs=False)
    async with lifespan(app):
        assert not logs.installed()
    assert not logs.installed()


async def test_two_inspectors_share_one_set_of_hooks() -> None:
    first, _ = inspector(chatty)
    second, _ = inspector(chatty)
    async with lifespan(first), lifespan(second):
        await get(first, "/")
        await get(second, "/")
    assert [r["logs"] for r in await listed(first)] == [3]  # each line once
    assert [r["logs"] for r in await listed(second)] == [3]


async def test_hooks_taken_out_by_a_new_logging_set_up_come_back() -> None:
    app, _ = inspector(chatty)
    await get(app, "/")
    logging.getLogger().handlers.clear()
    structlog.reset_defaults()
    other, _ = inspector(chatty)
    await get(other, "/")
    assert (await listed(other))[0]["logs"] == 3


@pytest.mark.parametrize("stdlib", [True, False])
async def test_asgikit_logging_lines_are_captured_once(stdlib: bool) -> None:
    out = io.StringIO()
    configure(format="json", level="debug", stdlib=stdlib, stream=out)
    app, _ = inspector(chatty)
    await get(app, "/")
    assert (await listed(app))[0]["logs"] == 3
    assert "item.loaded" in out.getvalue()  # and still written as usual


async def test_structlog_through_logging_is_captured_once() -> None:
    # structlog renders, then hands the line to logging: kept once, from structlog.
    structlog.configure(
        processors=[structlog.stdlib.add_log_level, structlog.processors.KeyValueRenderer()],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    app, _ = inspector(chatty)
    await get(app, "/")
    lines = (await detail(app, 1))["log_lines"]
    assert [line["event"] for line in lines] == ["item.loaded", "slow query: 40 ms", "cache miss"]


async def test_structlog_wrapped_for_a_formatter_is_read_from_the_record() -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    app, _ = inspector(chatty)
    await get(app, "/")
    first = (await detail(app, 1))["log_lines"][0]
    assert first["event"] == "item.loaded" and first["logger"] == "shop"
    assert first["level"] == "info" and first["fields"]["item_id"] == "7"
    assert logs.capture_event not in structlog.get_config()["processors"]


async def test_a_refused_inspector_takes_its_hooks_out() -> None:
    app, _ = inspector(chatty)
    await get(app, "/")
    assert logs.installed()
    await get(app, "/", server=("10.0.0.1", 80))
    assert not logs.installed()


async def chat(scope: Scope, receive: Receive, send: Send) -> None:
    """Echoes text frames; closes with 4000 on "bye"; denies /denied; fails on /boom."""
    assert scope["type"] == "websocket"
    await receive()
    if scope["path"] == "/denied":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if scope["path"] == "/boom":
            raise RuntimeError("socket handler failed")
        structlog.get_logger("shop").info("chat.message", text=message["text"])
        if message["text"] == "bye":
            await send({"type": "websocket.close", "code": 4000})
            return
        await send({"type": "websocket.send", "text": "echo " + message["text"]})


async def test_websockets_are_listed_with_their_messages_counted() -> None:
    app, _ = inspector(chat)
    session = await websocket(app, "/chat", frames=["a", "b", "bye"], server=LOCAL)
    assert session.accepted
    await websocket(app, "/denied", server=LOCAL)
    [denied, row] = await listed(app)
    assert (row["kind"], row["status"], row["path"]) == ("websocket", 101, "/chat")
    assert (row["received"], row["size"], row["logs"]) == (3, 2, 3)
    found = await detail(app, 1)
    assert found["fields"][Field.WS_CLOSE_CODE] == 4000
    assert found["curl"] is None and found["response_headers"] == []
    assert (denied["status"], denied["received"], denied["size"]) == (403, 0, 0)


async def test_a_failing_websocket_is_recorded_and_propagates() -> None:
    app, _ = inspector(chat)
    with pytest.raises(RuntimeError):
        await websocket(app, "/boom", frames=["x"], server=LOCAL)
    found = await detail(app, 1)
    assert found["error"] == "RuntimeError" and found["kind"] == "websocket"
    assert "socket handler failed" in found["exception"]["traceback"]


async def test_the_page_s_clear_request_forgets_every_kept_request() -> None:
    app, _ = inspector()
    await get(app, "/a")
    await get(app, "/b")
    clear = "/_asgikit/api/clear"
    assert (await get(app, clear, method="POST")).status == 403  # a form or another site
    refused = await get(app, clear)
    assert refused.status == 405 and refused.header("allow") == "POST"
    assert len(await listed(app)) == 2
    done = await get(app, clear, method="POST", headers={"x-asgikit-inspector": "clear"})
    assert done.status == 204
    assert await listed(app) == []
    assert (await get(app, "/_asgikit/api/requests/1")).status == 404
    await get(app, "/c")
    assert [r["id"] for r in await listed(app)] == [3]  # numbers go on


async def test_a_cleared_request_s_trace_is_let_go() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    tracer = provider.get_tracer("t")

    async def traced(scope: Scope, receive: Receive, send: Send) -> None:
        with tracer.start_as_current_span("work"):
            await hello(scope, receive, send)

    app, _ = inspector(traced, tracer_provider=provider, max_requests=1)
    await get(app, "/a")
    await get(app, "/_asgikit/api/clear", method="POST", headers={"x-asgikit-inspector": "clear"})
    await get(app, "/b")
    await get(app, "/c")  # drops /b: its trace is let go once, not twice
    assert [s["name"] for s in (await detail(app, 3))["spans"]] == ["work"]


async def test_copy_as_curl_is_redacted_like_the_log_line() -> None:
    app, _ = inspector()
    await get(
        app,
        "/search it?q=shoes&access_token=abc",
        method="POST",
        headers={"authorization": "Bearer t0ken", "x-shop": "it's", "content-length": "0"},
    )
    curl = (await detail(app, 1))["curl"]
    assert curl == (
        "curl -X POST -H 'authorization: [REDACTED]' -H 'x-shop: it'\"'\"'s' "
        "'http://127.0.0.1:8000/search%20it?q=shoes&access_token=[REDACTED]'"
    )


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (("::1", 8000), "curl 'http://[::1]:8000/'"),
        (("/tmp/app.sock", None), "curl --unix-socket /tmp/app.sock http://localhost/"),
        (None, "curl http://localhost/"),
    ],
)
async def test_copy_as_curl_without_a_host_header_uses_the_server(
    server: tuple[str, int | None] | None, expected: str
) -> None:
    app, _ = inspector()
    scope = http_scope("GET", "/", server=server)
    scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"host"]
    scope["server"] = server
    await request(app, "GET", "/", scope=scope)
    assert (await detail(app, 1))["curl"] == expected


async def test_library_frames_without_source_lines_are_dimmed_too() -> None:
    async def importing(scope: Scope, receive: Receive, send: Send) -> None:
        importlib.import_module("no_such_module_for_the_inspector")

    app, _ = inspector(importing)
    with pytest.raises(ModuleNotFoundError):
        await get(app, "/")
    exception: dict[str, Any] = (await detail(app, 1))["exception"]
    lines = exception["traceback"].split("\n")
    assert "in importing" in lines[exception["focus_line"]]
    frozen = [i for i, line in enumerate(lines) if '"<frozen ' in line]
    assert frozen and set(frozen) <= set(exception["library_lines"])


async def test_the_traceback_opens_on_the_app_s_innermost_frame() -> None:
    def deep() -> None:
        import json

        json.loads("{")  # fails in the standard library, called from here

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        deep()

    app, _ = inspector(failing)
    with pytest.raises(ValueError):
        await get(app, "/")
    exception: dict[str, Any] = (await detail(app, 1))["exception"]
    lines = exception["traceback"].split("\n")
    focus = exception["focus_line"]
    assert lines[focus].endswith("in deep") and 'json.loads("{")' in lines[focus + 1]
    library = exception["library_lines"]
    assert any("asgikit" in lines[i] or "middleware" in lines[i] for i in library)
    assert any("json" in lines[i] for i in library if i > focus)
    assert focus not in library


async def test_a_websocket_without_log_capture_is_listed_all_the_same() -> None:
    app, _ = inspector(chat, capture_logs=False)
    await websocket(app, "/chat", frames=["a"], server=LOCAL)
    [row] = await listed(app)
    assert (row["kind"], row["received"], row["logs"]) == ("websocket", 1, 0)
