"""DevInspectorMiddleware in a real browser: headless Chromium watches requests arrive live.

uvicorn serves a Starlette app behind RequestIDMiddleware, the inspector and
TracingMiddleware on a loopback port; Chromium opens the inspector's page, the test makes
requests with httpx (and a websocket with ``websockets``) while it is open, and the rows
appear without a reload. The test then uses the page as a developer would: filters,
sorts, opens a request's span waterfall (ruler, collapsing, attributes), its log lines,
the 500's traceback, copies a request as curl, and clears the list. Two screenshots (the
list with a request open, and the failed request's detail) are saved as test artifacts
and, with ``ASGIKIT_UPDATE_SCREENSHOTS=1``, as docs/img/inspector.png and
docs/img/inspector-detail.png.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from asgikit.middleware.inspector import DevInspectorMiddleware
from asgikit.middleware.request_id import RequestIDMiddleware
from asgikit.testing import run_lifespan
from asgikit.types import ASGIApp
from tests._processes import needs_tool, which

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
)
pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install uvicorn)")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")
ws_client = pytest.importorskip("websockets.sync.client", reason="websockets is not installed")

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route, WebSocketRoute  # noqa: E402
from starlette.websockets import WebSocket  # noqa: E402

from .cors_servers import chromium, loopback_socket, port_of, serve  # noqa: E402

pytestmark = needs_tool("chromium", "Debian: apt-get install chromium")

TIMEOUT_MS = 10_000
IN_VIEW = (
    "(() => { const a = document.querySelector('pre.tb').getBoundingClientRect(); "
    "const b = document.getElementById('focus-frame').getBoundingClientRect(); "
    "return b.top >= a.top && b.bottom <= a.bottom; })()"
)
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "img"


def build_app(provider: TracerProvider) -> ASGIApp:
    """A small Starlette app whose handlers open spans and write log lines of their own."""
    tracer = provider.get_tracer("shop")
    log = structlog.get_logger("shop")
    db_log = logging.getLogger("shop.db")

    async def item(request: Request) -> JSONResponse:
        # Short sleeps give the waterfall (and the docs' screenshot) visible bars.
        log.info("item.requested", item_id=request.path_params["item_id"])
        with tracer.start_as_current_span("db.query") as span:
            span.set_attribute("db.query.text", "SELECT * FROM items WHERE id = ?")
            with tracer.start_as_current_span("cache.get"):
                await anyio.sleep(0.002)
            db_log.warning("slow query: %d ms", 4)
            await anyio.sleep(0.004)
        with tracer.start_as_current_span("render"):
            await anyio.sleep(0.002)
            body = {"id": int(request.path_params["item_id"]), "name": "teapot"}
        return JSONResponse(body, headers={"set-cookie": "session=s3cret"})

    async def boom(request: Request) -> JSONResponse:
        with tracer.start_as_current_span("charge"):
            log.error("payment.failed", provider="acme")
            raise RuntimeError("the payment service is down")

    async def echo(socket: WebSocket) -> None:
        await socket.accept()
        for _ in range(2):
            await socket.send_text("echo: " + await socket.receive_text())
        await socket.close()

    app = Starlette(
        routes=[
            Route("/items/{item_id:int}", item),
            Route("/checkout", boom, methods=["POST"]),
            WebSocketRoute("/live", echo),
        ]
    )
    from asgikit.middleware.tracing import TracingMiddleware

    traced = TracingMiddleware(app, tracer_provider=provider, meter_provider=MeterProvider())
    inspector = DevInspectorMiddleware(traced, tracer_provider=provider)
    return RequestIDMiddleware(inspector)


@pytest.fixture
def browser_page() -> Iterator[tuple[Any, str, list[str]]]:
    executable = which("chromium")
    assert executable is not None
    sock = loopback_socket()
    base = f"http://127.0.0.1:{port_of(sock)}"
    problems: list[str] = []
    app = build_app(TracerProvider())
    db_log = logging.getLogger("shop.db")
    saved_level = db_log.level
    db_log.setLevel(logging.INFO)
    try:
        with (
            serve(app, [sock]),
            chromium(executable) as endpoint,
            sync_api.sync_playwright() as playwright,
        ):
            browser = playwright.chromium.connect_over_cdp(endpoint, timeout=TIMEOUT_MS)
            try:
                context = browser.new_context(viewport={"width": 1500, "height": 900})
                context.set_default_timeout(TIMEOUT_MS)
                page = context.new_page()
                page.on(
                    "console",
                    lambda m: problems.append(m.text) if m.type == "error" else None,
                )
                page.on("pageerror", lambda error: problems.append(str(error)))
                yield page, base, problems
                context.close()  # ends the event stream before the server stops
            finally:
                browser.close()
    finally:
        db_log.setLevel(saved_level)
        anyio.run(run_lifespan, app)  # the shutdown takes the inspector's log hooks out


def client_of(base: str) -> Any:
    """An httpx client that opens a connection per request: a keep-alive connection the
    server closes after a 500 must not make the next request fail (a race, not a bug)."""
    return httpx.Client(
        base_url=base, timeout=5, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)
    )


def make_requests(page: Any, base: str) -> None:
    """Two item requests, a websocket, a 500, a 404: five rows."""
    with client_of(base) as client:
        assert client.get("/items/7", headers={"authorization": "Bearer t0ken"}).status_code == 200
        page.locator("tr.req").nth(0).wait_for()
        assert client.get("/items/42?access_token=abc&page=2").status_code == 200
        with ws_client.connect(base.replace("http", "ws") + "/live") as socket:
            for text in ("one", "two"):
                socket.send(text)
                assert socket.recv(timeout=5) == "echo: " + text
        assert client.post("/checkout").status_code == 500
        assert client.get("/nowhere").status_code == 404
    page.locator("tr.req").nth(4).wait_for()  # (no string eval: the page's CSP forbids it)


def save(page: Any, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name))
    if os.environ.get("ASGIKIT_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / name, DOCS_IMAGES / name)


def texts(page: Any) -> list[str]:
    return [str(text) for text in page.locator("tr.req").all_inner_texts()]


def test_the_list_is_live_filterable_sortable_and_clearable(
    browser_page: tuple[Any, str, list[str]],
) -> None:
    page, base, problems = browser_page
    page.goto(base + "/_asgikit/")
    page.wait_for_selector("#live.on")  # the event stream is open
    assert page.locator("tr.req").count() == 0
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads
    make_requests(page, base)
    assert page.evaluate("window.loadedOnce") is True
    rows = texts(page)
    assert len(rows) == 5
    assert "/nowhere" in rows[0] and "404" in rows[0]
    assert "/checkout" in rows[1] and "500" in rows[1] and "RuntimeError" in rows[1]
    assert "WS" in rows[2] and "/live" in rows[2] and "2 in / 2 out" in rows[2]
    assert "/items/{item_id} /items/7" in rows[4]  # route, then path

    box = page.locator("#filter")
    for query, expected in [
        ("5xx", ["/checkout"]),
        ("status:404", ["/nowhere"]),
        ("method:POST", ["/checkout"]),
        ("path:/items", ["/items/42", "/items/7"]),
        ("is:ws", ["/live"]),
        ("teapot-not-anywhere", []),
        ("RuntimeError", ["/checkout"]),  # any field: the error's type
        ("level:warning", ["/items/42", "/items/7"]),  # the worst log line's level
        ("get 2xx", ["/items/42", "/items/7"]),  # words are and-ed (the websocket is a 101)
    ]:
        box.fill(query)
        shown = texts(page)
        assert len(shown) == len(expected), (query, shown)
        for row, path in zip(shown, expected, strict=True):
            assert path in row, (query, shown)
    assert page.locator("#count").inner_text() == "2 of 5 requests"
    box.fill("")

    page.locator("th[data-key=duration_ms]").click()  # shortest first
    durations = [float(t.split("\t")[4]) for t in texts(page)]
    assert durations == sorted(durations)
    page.locator("th[data-key=duration_ms]").click()  # longest first
    durations = [float(t.split("\t")[4]) for t in texts(page)]
    assert durations == sorted(durations, reverse=True)
    page.locator("th[data-key=status]").click()
    assert "101" in texts(page)[0] and "500" in texts(page)[-1]
    page.locator("th[data-key=id]").click()  # back to newest first
    assert "/nowhere" in texts(page)[0]

    page.locator("#clear").click()
    page.wait_for_selector("tr.req", state="detached")
    assert page.locator("#count").inner_text() == "0 requests"
    with client_of(base) as client:
        client.get("/items/1")
    page.locator("tr.req").nth(0).wait_for()
    page.reload()  # the server forgot them too: only the new one comes back
    page.wait_for_selector("#live.on")
    page.locator("tr.req").nth(0).wait_for()
    assert page.locator("tr.req").count() == 1
    assert problems == []  # no script error, no CSP violation


def test_a_request_s_detail_shows_spans_logs_traceback_and_curl(
    browser_page: tuple[Any, str, list[str]], tmp_path: Path
) -> None:
    page, base, problems = browser_page
    page.goto(base + "/_asgikit/")
    page.wait_for_selector("#live.on")
    make_requests(page, base)
    rows = page.locator("tr.req")

    rows.nth(3).click()  # GET /items/42
    page.wait_for_selector(".waterfall .span-row")
    names = page.locator(".waterfall .span-name").all_inner_texts()
    assert {"db.query", "cache.get", "render"} <= {name.strip("▾▸ ") for name in names}
    ticks = page.locator(".ruler .tick").all_inner_texts()
    assert len(ticks) >= 3 and ticks[0].startswith("0")
    assert all(text.endswith(" ms") for text in ticks)
    # Every bar is visible, the shortest too, and says its exact duration.
    widths = [box["width"] for box in (b.bounding_box() for b in page.locator(".bar").all())]
    assert min(widths) >= 3
    labels = page.locator(".bar-label").all_inner_texts()
    assert all(label.endswith(" ms") for label in labels)
    detail = page.locator("#detail").inner_text()
    assert "access_token=[REDACTED]&page=2" in detail
    assert "s3cret" not in detail  # set-cookie is redacted

    logs = page.locator("tr.log")
    assert logs.count() == 2
    assert "item.requested" in logs.nth(0).inner_text()
    assert "item_id=42" in logs.nth(0).inner_text()
    assert "request_id=" in logs.nth(0).inner_text()  # the context the request id bound
    assert "slow query: 4 ms" in logs.nth(1).inner_text()
    assert logs.nth(1).locator(".lv").inner_text() == "WARNING"
    assert logs.nth(1).locator(".lv-warning").count() == 1

    db_row = page.locator(".span-row", has_text="db.query").first
    db_row.locator(".toggle").click()  # collapse: cache.get is hidden, render is not
    assert page.locator(".span-row", has_text="cache.get").is_hidden()
    assert page.locator(".span-row", has_text="render").is_visible()
    db_row.locator(".toggle").click()
    assert page.locator(".span-row", has_text="cache.get").is_visible()
    db_row.click()
    assert "SELECT * FROM items" in page.locator(".span-info").inner_text()

    page.locator("#copy-curl").click()
    curl = page.locator("pre.curl").inner_text()
    assert curl.startswith("curl ") and "/items/42?access_token=[REDACTED]&page=2" in curl
    assert "'user-agent: python-httpx/" in curl
    assert "-X" not in curl
    save(page, tmp_path, "inspector.png")

    rows.nth(1).click()  # the 500
    page.wait_for_selector("pre.tb")
    pane = page.locator("pre.tb")
    assert "RuntimeError: the payment service is down" in pane.inner_text()
    focus = page.locator("#focus-frame")
    assert "in boom" in focus.inner_text()  # the app's frame, not a library's
    assert focus.is_visible()
    for _ in range(50):  # scrolled into the pane's view (no wait_for_function: CSP)
        if page.evaluate(IN_VIEW):
            break
        page.wait_for_timeout(100)
    assert page.evaluate(IN_VIEW)
    assert page.locator("pre.tb .lib").count() > 0  # middleware frames dimmed
    assert "payment.failed" in page.locator("tr.log").first.inner_text()
    assert page.locator("tr.log .lv-error").count() == 1
    assert "charge" in page.locator(".waterfall").inner_text()
    page.locator("#copy-curl").click()
    assert page.locator("pre.curl").inner_text().startswith("curl -X POST ")
    save(page, tmp_path, "inspector-detail.png")

    rows.nth(2).click()  # the websocket: messages counted, no curl
    page.wait_for_selector("h2", state="attached")
    page.locator("#detail h2", has_text="WEBSOCKET").wait_for()
    assert "2 messages in, 2 out" in page.locator("#detail").inner_text()
    assert page.locator("#copy-curl").count() == 0
    assert problems == []
