"""DevInspectorMiddleware: recording, its pages, loopback refusal, options, pass-through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgikit.contract import enforce
from asgikit.middleware.inspector import DevInspectorMiddleware, logs
from asgikit.middleware.inspector.store import InspectorSpanProcessor
from asgikit.testing import ALL_HTTP_EXTENSIONS, Response, request, run_lifespan
from asgikit.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _log_hooks_released() -> Iterator[None]:
    """Requests without a lifespan leave the inspector's log hooks in: take them out."""
    yield
    while logs.installed():
        logs.release()
    logs.acquire()  # and a processor a test's structlog.testing.capture_logs() put back
    logs.release()


LOCAL = ("127.0.0.1", 8000)
RETRY_WAIT = 1.05
"""A little more than the second after which the global tracer provider is looked at
again, while none is set."""


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the body, answers 200 "hello" with a session cookie; 404 for /missing."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    status = 404 if scope["path"] == "/missing" else 200
    body = b"hello" if status == 200 else b"app 404"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"%d" % len(body)), (b"set-cookie", b"sid=s3cret")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def inspector(app: ASGIApp = hello, **options: Any) -> tuple[ASGIApp, DevInspectorMiddleware]:
    middleware = DevInspectorMiddleware(enforce(app), **options)
    return enforce(middleware), middleware


async def get(app: ASGIApp, path: str, **kwargs: Any) -> Response:
    kwargs.setdefault("server", LOCAL)
    return await request(app, kwargs.pop("method", "GET"), path, **kwargs)


async def listed(app: ASGIApp) -> list[dict[str, Any]]:
    response = await get(app, "/_asgikit/api/requests")
    assert response.status == 200
    assert response.header("content-type") == "application/json"
    rows: list[dict[str, Any]] = json.loads(response.body)
    return rows


async def detail(app: ASGIApp, number: int) -> dict[str, Any]:
    response = await get(app, f"/_asgikit/api/requests/{number}")
    assert response.status == 200, response.body
    found: dict[str, Any] = json.loads(response.body)
    return found


async def test_records_each_request_and_lists_them_newest_first() -> None:
    app, _ = inspector()
    await get(app, "/a", body=[b"12", b"345"], method="POST")
    await get(app, "/missing")
    rows = await listed(app)
    assert [(r["id"], r["method"], r["path"], r["status"], r["size"]) for r in rows] == [
        (2, "GET", "/missing", 404, 7),
        (1, "POST", "/a", 200, 5),
    ]
    first = await detail(app, 1)
    assert first["fields"]["http.request.body.size"] == 5
    assert first["fields"]["http.response.body.size"] == 5
    assert first["duration_ms"] > 0 and first["fields"]["ttfb_ms"] <= first["duration_ms"]
    assert first["request_id"] is None and first["trace_id"] is None and first["error"] is None


async def test_the_inspector_s_own_requests_are_not_recorded() -> None:
    app, _ = inspector()
    for path in ("/_asgikit/", "/_asgikit/api/requests", "/_asgikit/nothing", "/_asgikit"):
        await get(app, path)
    assert await listed(app) == []


async def test_the_request_id_and_route_template_are_recorded() -> None:
    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse("item")

    starlette = Starlette(routes=[Route("/items/{item_id:int}", item)])
    app, _ = inspector(starlette)
    await get(app, "/items/42", **{"asgikit.request_id": "rid-1"})
    [row] = await listed(app)
    assert row["route"] == "/items/{item_id}" and row["path"] == "/items/42"
    assert row["request_id"] == "rid-1"
    assert (await detail(app, 1))["fields"]["http.route"] == "/items/{item_id}"


async def test_an_exception_is_recorded_with_its_traceback_and_propagates() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("app")

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        with tracer.start_as_current_span("handler"), tracer.start_as_current_span("query"):
            raise KeyError("no such row")

    app, _ = inspector(failing, tracer_provider=provider)
    with pytest.raises(KeyError):
        await get(app, "/broken")
    found = await detail(app, 1)
    assert found["status"] == 500 and found["error"] == "KeyError"
    assert found["fields"]["error.type"] == "KeyError"
    exception = found["exception"]
    assert exception["type"] == "KeyError" and exception["message"] == "'no such row'"
    assert exception["traceback"].startswith("Traceback (most recent call last)")
    assert 'raise KeyError("no such row")' in exception["traceback"]
    # No span was current when it failed: the first span started inside joins the trace.
    assert [s["name"] for s in found["spans"]] == ["handler", "query"]
    assert found["spans"][0]["status"] == "ERROR"
    assert found["trace_id"] is not None


async def test_a_huge_traceback_keeps_its_end() -> None:
    async def deep(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("x" * 50_000)

    app, _ = inspector(deep, max_field_length=100)
    with pytest.raises(ValueError):
        await get(app, "/")
    exception = (await detail(app, 1))["exception"]
    assert len(exception["message"]) < 150 and exception["message"].endswith("chars]")
    assert exception["traceback"].startswith("...[") and len(exception["traceback"]) < 20_100
    assert exception["traceback"].endswith("x\n")


async def test_cancellation_is_recorded_and_never_swallowed() -> None:
    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(10)

    app, _ = inspector(slow)
    with anyio.move_on_after(0.05):
        await get(app, "/slow")
    [row] = await listed(app)
    assert row["status"] is None and row["error"] is not None


async def test_a_client_gone_mid_response_is_not_an_error() -> None:
    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(5):
            await send({"type": "http.response.body", "body": b"chunk", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    app, _ = inspector(streaming)
    with pytest.raises(OSError):
        await get(app, "/stream", disconnect_after=2)
    found = await detail(app, 1)
    assert found["error"] is None and found["fields"]["disconnected"] is True
    assert found["size"] == 5


async def test_a_disconnect_read_before_the_response_ended_is_recorded() -> None:
    async def reader(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass

    app, _ = inspector(reader)
    await get(app, "/", disconnect_after=2)
    assert (await detail(app, 1))["fields"]["disconnected"] is True


async def test_pathsend_bytes_are_counted(tmp_path: Path) -> None:
    file = tmp_path / "file.bin"
    file.write_bytes(b"x" * 1234)

    async def sender(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(file)})

    app, _ = inspector(sender)
    await get(app, "/file", extensions=ALL_HTTP_EXTENSIONS)
    assert (await listed(app))[0]["size"] == 1234


async def test_the_ring_is_bounded_and_dropped_requests_are_gone() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("app")

    async def traced(scope: Scope, receive: Receive, send: Send) -> None:
        with tracer.start_as_current_span("handler"):
            await hello(scope, receive, send)

    app, middleware = inspector(traced, max_requests=3, tracer_provider=provider)
    for i in range(5):
        await get(app, f"/{i}")
    assert [r["id"] for r in await listed(app)] == [5, 4, 3]
    assert (await get(app, "/_asgikit/api/requests/1")).status == 404
    assert middleware._store.trace_count() == (3, 0)  # only the kept requests' traces
    assert [s["name"] for s in (await detail(app, 5))["spans"]] == ["handler"]


async def test_the_page_is_self_contained_and_locked_down() -> None:
    app, _ = inspector(max_requests=7)
    response = await get(app, "/_asgikit/")
    assert response.status == 200
    assert response.header("content-type") == "text/html; charset=utf-8"
    page = response.body.decode()
    assert 'data-max="7"' in page and "<script>" in page and "EventSource" in page
    assert "http://" not in page and "https://" not in page  # no CDN: works offline
    policy = response.header("content-security-policy")
    assert policy is not None and "default-src 'none'" in policy and "sha256-" in policy
    assert response.header("cache-control") == "no-store"
    head = await get(app, "/_asgikit/", method="HEAD")
    assert head.body == b"" and head.header("content-length") == response.header("content-length")


async def test_the_bare_path_redirects_and_unknown_routes_are_404() -> None:
    app, _ = inspector(path="/debug/inspect/")
    redirect = await get(app, "/debug/inspect")
    assert redirect.status == 308 and redirect.header("location") == "/debug/inspect/"
    for path in ("/debug/inspect/api/nope", "/debug/inspect/api/requests/x"):
        assert (await get(app, path)).status == 404
    assert (await get(app, "/debug/inspect/api/requests/99")).status == 404
    posted = await get(app, "/debug/inspect/api/requests", method="POST")
    assert posted.status == 405 and posted.header("allow") == "GET"
    head = await get(app, "/debug/inspect/api/requests", method="HEAD")
    assert head.status == 200 and head.body == b"" and head.header("content-length") == "2"
    assert (await get(app, "/_asgikit/")).body == b"hello"  # the default path is the app's


async def test_a_non_loopback_server_switches_the_inspector_off_for_good() -> None:
    app, _ = inspector()
    await get(app, "/before")
    with structlog.testing.capture_logs() as logs:
        assert (await get(app, "/x", server=("192.168.1.20", 8000))).body == b"hello"
    [log] = logs
    assert log["event"] == "inspector.refused" and log["log_level"] == "error"
    assert "192.168.1.20" in log["reason"] and "allow_non_loopback" in log["reason"]
    # Off: the page is the app's now, even for loopback requests, and nothing is recorded.
    with structlog.testing.capture_logs() as logs:
        assert (await get(app, "/_asgikit/api/requests")).body == b"hello"
    assert logs == []


@pytest.mark.parametrize(
    "server", [("127.0.0.1", 8000), ("::1", 8000), ("localhost", 80), ("/tmp/app.sock", None)]
)
async def test_loopback_and_unix_socket_servers_are_accepted(
    server: tuple[str, int | None],
) -> None:
    app, _ = inspector()
    await get(app, "/x", server=server, headers={"host": "localhost"})
    assert len(await listed(app)) == 1


@pytest.mark.parametrize(
    ("changes", "headers"),
    [
        ({"client": ("10.1.2.3", 5000)}, {}),
        ({"asgikit.peer": ("10.1.2.3", 5000)}, {}),
        ({}, {"x-forwarded-for": "127.0.0.1"}),
        ({}, {"forwarded": "for=127.0.0.1"}),
        ({}, {"host": "attacker.example:8000"}),  # DNS rebinding
        ({}, {"host": "127.0.0.1.attacker.example"}),
    ],
)
async def test_the_page_is_refused_to_anyone_but_a_direct_loopback_client(
    changes: dict[str, Any], headers: dict[str, str]
) -> None:
    app, _ = inspector()
    response = await get(app, "/_asgikit/api/requests", headers=headers, **changes)
    assert response.body == b"hello"  # the app answered: the inspector is not there
    assert response.status == 200
    # ...and it does not switch off: loopback clients still get the page (where the
    # refused request is not listed: it was for the inspector's path).
    assert await listed(app) == []


@pytest.mark.parametrize("host", ["localhost:8000", "[::1]:8000", "127.0.0.2", "app.localhost"])
async def test_loopback_host_headers_are_accepted(host: str) -> None:
    app, _ = inspector()
    assert (await get(app, "/_asgikit/api/requests", headers={"host": host})).body == b"[]"


async def test_allow_non_loopback_serves_everyone() -> None:
    app, _ = inspector(allow_non_loopback=True)
    remote = {"server": ("203.0.113.1", 80), "client": ("198.51.100.7", 4000)}
    await get(app, "/x", **remote)
    response = await get(app, "/_asgikit/api/requests", headers={"host": "example.com"}, **remote)
    assert [r["path"] for r in json.loads(response.body)] == ["/x"]


def count_inspector_span_processor_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call an inspector's span processor gets (on_start, on_end), by name."""
    calls: list[str] = []
    on_start, on_end = InspectorSpanProcessor.on_start, InspectorSpanProcessor.on_end

    def counted_start(self: InspectorSpanProcessor, span: Any, parent_context: Any = None) -> None:
        calls.append("on_start")
        on_start(self, span, parent_context)

    def counted_end(self: InspectorSpanProcessor, span: Any) -> None:
        calls.append("on_end")
        on_end(self, span)

    monkeypatch.setattr(InspectorSpanProcessor, "on_start", counted_start)
    monkeypatch.setattr(InspectorSpanProcessor, "on_end", counted_end)
    return calls


async def test_disabled_is_a_pass_through_that_adds_no_span_processor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = count_inspector_span_processor_calls(monkeypatch)
    # The counting sees an enabled inspector's processor at work...
    enabled_provider = TracerProvider()
    inspector(tracer_provider=enabled_provider)
    with enabled_provider.get_tracer("app").start_as_current_span("seen"):
        pass
    assert calls == ["on_start", "on_end"]
    calls.clear()
    # ...and a disabled one's provider calls none: its spans reach no inspector.
    provider = TracerProvider()
    tracer = provider.get_tracer("app")

    async def traced(scope: Scope, receive: Receive, send: Send) -> None:
        with tracer.start_as_current_span("handler"):
            await hello(scope, receive, send)

    app, _ = inspector(traced, enabled=False, tracer_provider=provider)
    assert (await get(app, "/_asgikit/api/requests")).body == b"hello"
    await get(app, "/x")
    with tracer.start_as_current_span("outside"):
        pass
    assert calls == []


async def test_lifespan_passes_through() -> None:
    app, _ = inspector()
    lifespan = await run_lifespan(app)
    assert lifespan.messages[-1]["type"] == "lifespan.shutdown.complete"
    assert await listed(app) == []


async def test_without_an_sdk_provider_the_page_says_tracing_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(trace_api, "_TRACER_PROVIDER", NoOpTracerProvider())
    app, _ = inspector()
    await get(app, "/x")
    found = await detail(app, 1)
    assert found["tracing"] is False and found["spans"] == []
    # A provider that is set (if not an SDK one) is final: the inspector stops looking.
    # Were it still looking, an SDK provider showing up later would be found within a
    # second (see the next test) and its spans shown.
    provider = TracerProvider()
    tracer = provider.get_tracer("app")
    monkeypatch.setattr(trace_api, "_TRACER_PROVIDER", provider)
    await anyio.sleep(RETRY_WAIT)
    with tracer.start_as_current_span("handler"):
        await get(app, "/later")
    later = await detail(app, 2)
    assert later["path"] == "/later"
    assert later["tracing"] is False and later["spans"] == []


async def test_the_global_sdk_provider_is_used_once_it_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(trace_api, "_TRACER_PROVIDER", None)  # not set yet: a proxy
    provider = TracerProvider()
    tracer = provider.get_tracer("app")

    async def traced(scope: Scope, receive: Receive, send: Send) -> None:
        with tracer.start_as_current_span("handler"):
            await hello(scope, receive, send)

    app, _ = inspector(traced)

    await get(app, "/before")
    assert (await detail(app, 1))["tracing"] is False  # no provider yet
    monkeypatch.setattr(trace_api, "_TRACER_PROVIDER", provider)  # set after start-up
    await get(app, "/soon")  # looked at again at most once a second: not yet
    assert (await detail(app, 2))["tracing"] is False
    await anyio.sleep(RETRY_WAIT)  # a second later
    await get(app, "/after")
    before, soon, after = [await detail(app, n) for n in (1, 2, 3)]
    assert before["tracing"] is soon["tracing"] is after["tracing"] is True  # on, for the page
    assert before["spans"] == soon["spans"] == []  # ended before the processor was added
    assert [s["name"] for s in after["spans"]] == ["handler"]
    await get(app, "/next")  # attached once: the span is not collected twice
    assert [s["name"] for s in (await detail(app, 4))["spans"]] == ["handler"]


BAD_OPTIONS = [
    ({"path": 3}, TypeError, "path"),
    ({"path": "no-slash/"}, ValueError, "path"),
    ({"path": "/"}, ValueError, "path"),
    ({"path": "/é/"}, ValueError, "path"),
    ({"enabled": "yes"}, TypeError, "enabled"),
    ({"allow_non_loopback": 1}, TypeError, "allow_non_loopback"),
    ({"max_requests": 0}, ValueError, "max_requests"),
    ({"max_requests": True}, TypeError, "max_requests"),
    ({"max_spans": "10"}, TypeError, "max_spans"),
    ({"max_field_length": 8}, ValueError, "max_field_length"),
    ({"tracer_provider": object()}, TypeError, "tracer_provider"),
    ({"redact_headers": ["bad header"]}, ValueError, "redact_headers"),
    ({"redact_query_params": [3]}, TypeError, "redact_query_params"),
]


@pytest.mark.parametrize(("options", "error", "name"), BAD_OPTIONS)
def test_bad_options_name_the_option(
    options: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error) as raised:
        DevInspectorMiddleware(hello, **options)
    assert str(raised.value).startswith(name)


async def test_odd_messages_routes_and_chains_are_taken_in_stride() -> None:
    async def odd(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = object()  # a "route" without a path: no template
        await receive()
        await send({"type": "http.response.start", "status": 200, "trailers": True})
        await send({"type": "http.response.body", "body": b"ok"})
        await send({"type": "http.response.trailers", "headers": [], "more_trailers": False})
        assert (await receive())["type"] == "http.disconnect"  # after the end: not a drop

    app, _ = inspector(odd)
    chain: list[Scope] = []
    await get(app, "/odd", extensions=ALL_HTTP_EXTENSIONS, **{"asgikit.scope_chain": chain})
    found = await detail(app, 1)
    assert found["route"] is None and found["size"] == 2
    assert "disconnected" not in found["fields"]
    assert chain == []  # an outer middleware's chain is used as it is: no copy was made


def test_attribute_values_become_json() -> None:
    from asgikit.middleware.inspector.records import _value

    assert _value(b"bytes\xff", 100) == "bytes\ufffd"
    assert _value((1, 2.5, True, "x" * 20), 16) == [1, 2.5, True, "x" * 16 + "...[+4 chars]"]
    assert _value(None, 16) == "None"


def test_nothing_imports_the_inspector_unless_it_is_used() -> None:
    code = (
        "import sys, asgikit, asgikit.config, asgikit.pipeline, asgikit.middleware\n"
        "import asgikit.middleware.access_log, asgikit.middleware.request_id\n"
        "print('asgikit.middleware.inspector' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


async def test_concurrent_requests_are_each_recorded_once() -> None:
    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(0.001 * (hash(scope["path"]) % 5))
        await hello(scope, receive, send)

    app, _ = inspector(slow, max_requests=20)
    async with anyio.create_task_group() as group:
        for i in range(50):
            group.start_soon(get, app, f"/r{i}")
    rows = await listed(app)
    assert [r["id"] for r in rows] == list(range(50, 30, -1))
    assert len({r["path"] for r in rows}) == 20


@pytest.mark.parametrize(("workers", "says"), [("3", True), ("1", False), (None, False)])
async def test_the_page_says_when_it_shows_one_worker_of_several(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workers: str | None, says: bool
) -> None:
    # A shared store cannot be had: the directory for it is open to others.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / f"asgikit-inspector-{os.getuid()}").mkdir(mode=0o755)
    (tmp_path / f"asgikit-inspector-{os.getuid()}").chmod(0o755)
    if workers is None:
        monkeypatch.delenv("ASGIKIT_WORKERS", raising=False)
    else:
        monkeypatch.setenv("ASGIKIT_WORKERS", workers)
    app, _ = inspector()
    page = (await get(app, "/_asgikit/")).body.decode()
    assert ('id="notice"' in page) is says
    if says:
        assert f"one worker process (pid {os.getpid()}) of 3: each keeps its own" in page
