"""DevInspectorMiddleware in a real browser: headless Chromium watches requests arrive live.

uvicorn serves a Starlette app behind RequestIDMiddleware, the inspector and
TracingMiddleware on a loopback port; Chromium opens the inspector's page, the test makes
requests with httpx while it is open, and the rows appear without a reload. Opening one
shows its span waterfall. The screenshot is saved as a test artifact (and, with
``ASGIKIT_UPDATE_SCREENSHOTS=1``, as docs/img/inspector.png).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from asgikit.middleware.inspector import DevInspectorMiddleware
from asgikit.middleware.request_id import RequestIDMiddleware
from asgikit.types import ASGIApp
from tests._processes import needs_tool, which

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
)
pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install uvicorn)")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from .cors_servers import chromium, loopback_socket, port_of, serve  # noqa: E402

pytestmark = needs_tool("chromium", "Debian: apt-get install chromium")

TIMEOUT_MS = 10_000
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "img" / "inspector.png"


def build_app(provider: TracerProvider) -> ASGIApp:
    """A small Starlette app whose handlers open spans of their own, under the stack."""
    tracer = provider.get_tracer("shop")

    async def item(request: Request) -> JSONResponse:
        # Short sleeps give the waterfall (and the docs' screenshot) visible bars.
        with tracer.start_as_current_span("db.query") as span:
            span.set_attribute("db.query.text", "SELECT * FROM items WHERE id = ?")
            with tracer.start_as_current_span("cache.get"):
                await anyio.sleep(0.002)
            await anyio.sleep(0.004)
        with tracer.start_as_current_span("render"):
            await anyio.sleep(0.002)
            body = {"id": int(request.path_params["item_id"]), "name": "teapot"}
        return JSONResponse(body, headers={"set-cookie": "session=s3cret"})

    async def boom(request: Request) -> JSONResponse:
        with tracer.start_as_current_span("charge"):
            raise RuntimeError("the payment service is down")

    app = Starlette(
        routes=[Route("/items/{item_id:int}", item), Route("/checkout", boom, methods=["POST"])]
    )
    try:
        from asgikit.middleware.tracing import TracingMiddleware
    except ImportError:  # pragma: no cover - tracing ships beside the inspector
        traced: ASGIApp = app
    else:
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
    with (
        serve(build_app(TracerProvider()), [sock]),
        chromium(executable) as endpoint,
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.connect_over_cdp(endpoint, timeout=TIMEOUT_MS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 820})
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            page.on(
                "console",
                lambda message: problems.append(message.text) if message.type == "error" else None,
            )
            page.on("pageerror", lambda error: problems.append(str(error)))
            yield page, base, problems
            context.close()  # ends the event stream before the server stops
        finally:
            browser.close()


def test_requests_appear_live_and_show_their_waterfall(
    browser_page: tuple[Any, str, list[str]], tmp_path: Path
) -> None:
    page, base, problems = browser_page
    page.goto(base + "/_asgikit/")
    page.wait_for_selector("#live.on")  # the event stream is open
    assert page.locator("tr.req").count() == 0
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads

    with httpx.Client(base_url=base, timeout=5) as client:
        assert client.get("/items/7", headers={"authorization": "Bearer t0ken"}).status_code == 200
        page.locator("tr.req").nth(0).wait_for()
        assert client.get("/items/42?access_token=abc&page=2").status_code == 200
        assert client.post("/checkout").status_code == 500
        page.locator("tr.req").nth(2).wait_for()  # (no string eval: the page's CSP forbids it)
    assert page.locator("tr.req").count() == 3
    assert page.evaluate("window.loadedOnce") is True

    rows = page.locator("tr.req")
    assert "/checkout" in rows.nth(0).inner_text()
    assert "500" in rows.nth(0).inner_text()
    assert "/items/{item_id} /items/7" in rows.nth(2).inner_text()  # route, then path

    rows.nth(1).click()
    page.wait_for_selector(".waterfall .span-row")
    names = page.locator(".waterfall .span-name").all_inner_texts()
    assert {"db.query", "cache.get", "render"} <= set(names)
    assert len(names) >= 4  # the server span too (and its ASGI send spans, if any)
    detail = page.locator("#detail").inner_text()
    assert "access_token=[REDACTED]&page=2" in detail
    assert "s3cret" not in detail  # set-cookie is redacted
    page.locator(".span-row", has_text="db.query").first.click()
    assert "SELECT * FROM items" in page.locator(".span-info").inner_text()
    page.screenshot(path=str(tmp_path / "inspector.png"))
    if os.environ.get("ASGIKIT_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGE.parent.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "inspector.png", DOCS_IMAGE)

    rows.nth(0).click()
    page.wait_for_selector("pre.tb")
    assert "RuntimeError: the payment service is down" in page.locator("pre.tb").inner_text()
    assert "charge" in page.locator(".waterfall").inner_text()
    assert problems == []  # no script error, no CSP violation
