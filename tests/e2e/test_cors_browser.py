"""CORSMiddleware in a real browser: headless Chromium, uvicorn, two loopback origins.

A page server listens on two ports, so it is two origins: the *allowed* one (listed in
the API's policy) and the *denied* one. The API, behind CORSMiddleware, listens on a
third port. Each test loads a page from one origin and has it ``fetch`` (or open a
websocket to) the API, then checks what the browser let the script see, and what the
API actually received.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from asgikit.middleware.cors import CORSMiddleware
from asgikit.types import Receive, Scope, Send

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
)
pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install uvicorn)")

from .cors_servers import chromium, loopback_socket, port_of, serve  # noqa: E402

CHROMIUM = (
    os.environ.get("ASGIKIT_CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
    or shutil.which("google-chrome")
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium; or set ASGIKIT_CHROMIUM)",
)

TIMEOUT_MS = 10_000


@dataclass
class Api:
    """The API behind CORSMiddleware; it records every request that reaches it."""

    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def methods(self, path: str) -> list[str]:
        with self.lock:
            return [method for method, seen_path, _ in self.seen if seen_path == path]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": "hello"})
            await send({"type": "websocket.close", "code": 1000})
            return
        with self.lock:
            self.seen.append((scope["method"], scope["path"], headers))
        body = json.dumps(
            {
                "method": scope["method"],
                "cookie": headers.get("cookie"),
                "custom": headers.get("x-custom"),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                    (b"x-total-count", b"42"),
                    (b"x-secret", b"hidden"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def page(scope: Scope, receive: Receive, send: Send) -> None:
    """The page origins: an empty HTML page (scripts are run through Playwright)."""
    body = b"<!doctype html><title>cors e2e</title><p>page"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/html"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


@dataclass
class Setup:
    allowed: Any  # a Playwright page on the allowed origin
    denied: Any  # a Playwright page on the denied origin
    api_url: str
    api: Api


FETCH = """
async ([url, init]) => {
    try {
        const response = await fetch(url, init);
        return {
            ok: true,
            status: response.status,
            body: await response.json(),
            total: response.headers.get("x-total-count"),
            secret: response.headers.get("x-secret"),
        };
    } catch (error) {
        return {ok: false, error: String(error)};
    }
}
"""

WEBSOCKET = """
(url) => new Promise((resolve) => {
    const socket = new WebSocket(url);
    socket.onmessage = (event) => resolve({opened: true, message: event.data});
    socket.onerror = () => resolve({opened: false});
})
"""


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    assert CHROMIUM is not None
    page_allowed, page_denied, api_socket = loopback_socket(), loopback_socket(), loopback_socket()
    allowed_origin = f"http://127.0.0.1:{port_of(page_allowed)}"
    denied_origin = f"http://127.0.0.1:{port_of(page_denied)}"
    api_url = f"http://127.0.0.1:{port_of(api_socket)}"
    api = Api()
    cors = CORSMiddleware(
        api,
        allow_origins=[allowed_origin],
        allow_methods=["GET", "PUT"],
        allow_headers=["X-Custom"],
        allow_credentials=True,
        expose_headers=["X-Total-Count"],
        check_websocket_origin=True,
        policies=[{"path": "/public", "allow_origins": ["*"]}],
    )
    with (
        serve(page, [page_allowed, page_denied]),
        serve(cors, [api_socket]),
        chromium(CHROMIUM) as endpoint,
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.connect_over_cdp(endpoint, timeout=TIMEOUT_MS)
        try:
            context = browser.new_context()
            context.set_default_timeout(TIMEOUT_MS)
            context.add_cookies([{"name": "session", "value": "s3cret", "url": api_url}])
            allowed, denied = context.new_page(), context.new_page()
            allowed.goto(allowed_origin + "/")
            denied.goto(denied_origin + "/")
            yield Setup(allowed, denied, api_url, api)
            context.close()
        finally:
            browser.close()


def fetch(page: Any, url: str, **init: Any) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(FETCH, [url, init])
    return result


def test_allowed_origin_reads_the_response_and_exposed_headers_only(setup: Setup) -> None:
    result = fetch(setup.allowed, f"{setup.api_url}/api/items")
    assert result["ok"], result
    assert result["body"] == {"method": "GET", "cookie": None, "custom": None}
    assert result["total"] == "42"  # exposed
    assert result["secret"] is None  # not exposed: the browser hides it


def test_denied_origin_is_blocked_by_the_browser(setup: Setup) -> None:
    result = fetch(setup.denied, f"{setup.api_url}/api/denied-get")
    assert not result["ok"] and "TypeError" in result["error"]
    # A simple GET is sent anyway: CORS protects the response, not the server.
    assert setup.api.methods("/api/denied-get") == ["GET"]


def test_credentials_work_only_with_the_exact_origin(setup: Setup) -> None:
    exact = fetch(setup.allowed, f"{setup.api_url}/api/me", credentials="include")
    assert exact["ok"], exact
    assert exact["body"]["cookie"] == "session=s3cret"
    from_denied = fetch(setup.denied, f"{setup.api_url}/api/me", credentials="include")
    assert not from_denied["ok"]
    # The public policy answers "*", which browsers refuse for credentialed requests...
    star = fetch(setup.allowed, f"{setup.api_url}/public/me", credentials="include")
    assert not star["ok"]
    # ...and accept for anonymous ones, from any origin.
    anonymous = fetch(setup.denied, f"{setup.api_url}/public/me")
    assert anonymous["ok"] and anonymous["body"]["cookie"] is None


def test_a_preflighted_put_with_a_custom_header_succeeds(setup: Setup) -> None:
    result = fetch(
        setup.allowed,
        f"{setup.api_url}/api/put",
        method="PUT",
        headers={"X-Custom": "yes", "Content-Type": "application/json"},
        body="{}",
    )
    assert result["ok"], result
    assert result["body"] == {"method": "PUT", "cookie": None, "custom": "yes"}
    # The preflight was answered by the middleware: only the PUT reached the app.
    assert setup.api.methods("/api/put") == ["PUT"]


def test_denied_preflights_keep_the_request_from_the_app(setup: Setup) -> None:
    header = fetch(
        setup.allowed, f"{setup.api_url}/api/bad-header", method="PUT", headers={"X-Other": "1"}
    )
    assert not header["ok"]
    method = fetch(setup.allowed, f"{setup.api_url}/api/bad-method", method="DELETE")
    assert not method["ok"]
    origin = fetch(
        setup.denied, f"{setup.api_url}/api/bad-origin", method="PUT", headers={"X-Custom": "1"}
    )
    assert not origin["ok"]
    for path in ("/api/bad-header", "/api/bad-method", "/api/bad-origin"):
        assert setup.api.methods(path) == [], path


def test_websocket_origin_check(setup: Setup) -> None:
    ws_url = setup.api_url.replace("http://", "ws://") + "/ws"
    assert setup.allowed.evaluate(WEBSOCKET, ws_url) == {"opened": True, "message": "hello"}
    assert setup.denied.evaluate(WEBSOCKET, ws_url) == {"opened": False}
