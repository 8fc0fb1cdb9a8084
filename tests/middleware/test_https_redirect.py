"""HTTPSRedirectMiddleware: where http and ws go, which host and port the redirect names,
Strict-Transport-Security on https responses, proxy headers, excluded paths, options."""

from __future__ import annotations

from typing import Any

import pytest

from asgikit.answers import DECISION_FIELD, DETAILS
from asgikit.contract import enforce
from asgikit.middleware.https_redirect import HSTS_MAX_AGE, HTTPSRedirectMiddleware
from asgikit.middleware.proxy_headers import ProxyHeadersMiddleware
from asgikit.scopes import DECISION_KEY
from asgikit.testing import http_scope, request, run_lifespan, websocket, websocket_scope
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

DENIAL = {"websocket.http.response": {}}
calls: list[Scope] = []


def make_app(headers: list[tuple[bytes, bytes]] | None = None) -> ASGIApp:
    """Records the scope; answers 200 ``ok`` with *headers*, or accepts a websocket."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        calls.append(scope)
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept", "headers": []})
            await send({"type": "websocket.close", "code": 1000})
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers or []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def wrapped(app: ASGIApp | None = None, **options: Any) -> ASGIApp:
    return enforce(HTTPSRedirectMiddleware(enforce(app or make_app()), **options))


@pytest.fixture(autouse=True)
def _clean() -> None:
    calls.clear()


def _scope(host: bytes | None, path: str = "/", **extra: Any) -> Scope:
    scope = http_scope(extra.pop("method", "GET"), path, **extra)
    scope["headers"] = [] if host is None else [(b"host", host)]
    return scope


async def redirect_of(host: bytes | None, path: str = "/", **extra: Any) -> str | None:
    """The Location of the 307 an http request gets."""
    options = extra.pop("options", {})
    calls.clear()
    response = await request(wrapped(**options), scope=_scope(host, path, **extra))
    assert response.status == options.get("redirect_status", 307)
    assert calls == []
    return response.header("location")


async def test_an_http_request_is_redirected_to_https_with_path_and_query() -> None:
    holder: dict[str, Any] = {}
    scope = _scope(b"example.com", "/a/b?x=1&y=2", **{DECISION_KEY: holder})
    response = await request(wrapped(), scope=scope)
    assert response.status == 307
    assert response.header("location") == "https://example.com/a/b?x=1&y=2"
    assert response.text == "Temporary Redirect"
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert response.header("strict-transport-security") is None  # never over plain http
    assert calls == []
    assert holder == {DECISION_FIELD: "https_redirect", DETAILS: {"redirect.status": 307}}


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
async def test_every_method_gets_a_redirect_that_keeps_method_and_body(method: str) -> None:
    assert await redirect_of(b"example.com", "/form", method=method) == "https://example.com/form"


async def test_308_is_the_permanent_choice() -> None:
    response = await request(wrapped(redirect_status=308), scope=_scope(b"example.com"))
    assert response.status == 308
    assert response.text == "Permanent Redirect"
    assert response.header("location") == "https://example.com/"


@pytest.mark.parametrize(
    ("host", "location"),
    [
        (b"example.com", "https://example.com/"),
        (b"example.com:80", "https://example.com/"),
        (b"example.com:443", "https://example.com/"),
        (b"example.com:8080", "https://example.com:8080/"),
        (b"Example.COM", "https://Example.COM/"),
        (b"[::1]", "https://[::1]/"),
        (b"[0::1]:8000", "https://[::1]:8000/"),
        (b"10.0.0.5:80", "https://10.0.0.5/"),
    ],
)
async def test_the_port_80_or_443_is_dropped_and_any_other_kept(host: bytes, location: str) -> None:
    assert await redirect_of(host) == location


@pytest.mark.parametrize(
    ("host", "port", "location"),
    [
        (b"example.com:8000", 8443, "https://example.com:8443/"),
        (b"example.com", 8443, "https://example.com:8443/"),
        (b"example.com:8000", 443, "https://example.com/"),
    ],
)
async def test_https_port_names_the_port_of_the_redirect(
    host: bytes, port: int, location: str
) -> None:
    assert await redirect_of(host, options={"https_port": port}) == location


@pytest.mark.parametrize(
    ("host", "server", "location"),
    [
        (None, ("testserver", 80), "https://testserver/"),
        (None, ("10.0.0.1", 8000), "https://10.0.0.1:8000/"),
        (None, ("::1", 80), "https://[::1]/"),
        (None, ("[::1]", 443), "https://[::1]/"),
        (None, ("example.com", None), "https://example.com/"),
        (b"", ("testserver", 80), "https://testserver/"),
        (b"testserver:65536", ("testserver", 80), "https://testserver/"),
        (b"evil.com@example.com", ("testserver", 80), "https://testserver/"),
        (b"[:::]", ("testserver", 80), "https://testserver/"),
        (b"example.com/x", ("testserver", 80), "https://testserver/"),
    ],
)
async def test_without_a_valid_host_header_the_server_address_is_used(
    host: bytes | None, server: tuple[str, int | None], location: str
) -> None:
    assert await redirect_of(host, server=server) == location


@pytest.mark.parametrize(
    "server", [None, ("/run/app.sock", None), ("bad host", 80), ("bücher.example", 80)]
)
async def test_no_host_to_redirect_to_is_a_400(server: tuple[str, int | None] | None) -> None:
    holder: dict[str, Any] = {}
    scope = _scope(b"evil.com@x", server=server, **{DECISION_KEY: holder})
    response = await request(wrapped(), scope=scope)
    assert response.status == 400
    assert response.text == "Invalid host header"
    assert calls == []
    assert holder == {DECISION_FIELD: "host_refused", DETAILS: {"https_redirect.reason": "no_host"}}


async def test_the_location_escapes_what_a_header_cannot_carry() -> None:
    scope = _scope(b"example.com")
    scope["raw_path"] = b"//evil.com/a b/\xff<x>"
    scope["query_string"] = b"q=\r\n<b>&r=%41"
    response = await request(wrapped(), scope=scope)
    assert response.header("location") == (
        "https://example.com//evil.com/a%20b/%FF%3Cx%3E?q=%0D%0A%3Cb%3E&r=%41"
    )


async def test_without_raw_path_the_decoded_path_is_escaped() -> None:
    scope = _scope(b"example.com", "/100% caf\u00e9")
    del scope["raw_path"]
    response = await request(wrapped(), scope=scope)
    assert response.header("location") == "https://example.com/100%25%20caf%C3%A9"


async def test_a_scope_without_scheme_is_http() -> None:
    scope = _scope(b"example.com")
    del scope["scheme"]
    assert (await request(wrapped(), scope=scope)).status == 307


async def test_an_https_request_gets_the_servers_receive_send_and_scope() -> None:
    middleware = HTTPSRedirectMiddleware(make_app())
    seen: dict[str, Any] = {}

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.update(scope=scope, receive=receive, send=send)

    async def receive() -> Message:
        raise AssertionError("not called")

    async def send(message: Message) -> None:
        raise AssertionError("not called")

    middleware.app = inner
    scope = _scope(b"example.com", scheme="https")
    await middleware(scope, receive, send)
    assert seen == {"scope": scope, "receive": receive, "send": send}
    assert seen["scope"] is scope and seen["send"] is send and seen["receive"] is receive


async def test_a_scheme_no_server_sets_passes_without_hsts() -> None:
    # Not through the contract checker, which refuses such a scope.
    response = await request(
        HTTPSRedirectMiddleware(make_app(), hsts=True), scope=_scope(b"x", scheme="gopher")
    )
    assert response.status == 200
    assert response.header("strict-transport-security") is None


async def test_an_https_request_reaches_the_app_unchanged_without_hsts() -> None:
    response = await request(wrapped(), scope=_scope(b"example.com", scheme="https"))
    assert response.status == 200
    assert response.body == b"ok"
    assert response.header("strict-transport-security") is None


# excluded paths


async def test_excluded_paths_are_served_over_http() -> None:
    options = {"exclude_paths": ["/health"], "hsts": True}
    ok = await request(wrapped(**options), scope=_scope(b"10.0.0.9", "/health/live"))
    assert ok.status == 200
    assert ok.header("strict-transport-security") is None
    secure = await request(wrapped(**options), scope=_scope(b"x", "/health", scheme="https"))
    assert secure.header("strict-transport-security") is None  # the middleware stays out
    assert await redirect_of(b"example.com", "/healthz", options=options) == (
        "https://example.com/healthz"
    )


# HSTS


@pytest.mark.parametrize(
    ("options", "value"),
    [
        ({}, "max-age=31536000"),
        ({"hsts_max_age": 0}, "max-age=0"),
        ({"hsts_max_age": 300, "hsts_include_subdomains": True}, "max-age=300; includeSubDomains"),
        (
            {"hsts_max_age": 63072000, "hsts_include_subdomains": True, "hsts_preload": True},
            "max-age=63072000; includeSubDomains; preload",
        ),
    ],
)
async def test_hsts_is_added_to_https_responses(options: dict[str, Any], value: str) -> None:
    app = make_app([(b"content-type", b"text/plain"), (b"set-cookie", b"a=1")])
    response = await request(
        wrapped(app, hsts=True, **options), scope=_scope(b"example.com", scheme="https")
    )
    assert response.headers == [
        (b"content-type", b"text/plain"),
        (b"set-cookie", b"a=1"),
        (b"strict-transport-security", value.encode()),
    ]


async def test_hsts_the_app_set_is_kept_and_not_repeated() -> None:
    own = (b"strict-transport-security", b"max-age=60")
    response = await request(
        wrapped(make_app([own]), hsts=True), scope=_scope(b"example.com", scheme="https")
    )
    assert response.header_values("strict-transport-security") == ["max-age=60"]


async def test_hsts_written_in_capitals_by_the_app_is_found_too() -> None:
    # Some frameworks send names as written (Django): the contract checker would stop it,
    # so the app is not wrapped here.
    own = [(b"Strict-Transport-Security", b"max-age=60")]
    middleware = HTTPSRedirectMiddleware(make_app(own), hsts=True)
    response = await request(middleware, scope=_scope(b"example.com", scheme="https"))
    assert response.headers == own


async def test_hsts_leaves_the_apps_header_list_as_it_was() -> None:
    headers = [(b"content-type", b"text/plain")]
    await request(wrapped(make_app(headers), hsts=True), scope=_scope(b"x", scheme="https"))
    assert headers == [(b"content-type", b"text/plain")]


async def test_hsts_is_not_sent_on_a_websocket() -> None:
    scope = websocket_scope("/ws", scheme="wss")
    session = await websocket(wrapped(hsts=True), scope=scope)
    assert session.accepted
    [accept] = [m for m in session.messages if m["type"] == "websocket.accept"]
    assert accept["headers"] == []


# websockets


async def test_a_ws_handshake_is_denied_with_a_redirect_to_wss() -> None:
    scope = websocket_scope("/chat?room=1", scheme="ws", extensions=DENIAL)
    scope["headers"] = [(b"host", b"example.com:80")]
    holder: dict[str, Any] = {}
    scope[DECISION_KEY] = holder
    session = await websocket(wrapped(), scope=scope)
    assert not session.accepted
    assert session.denial is not None
    assert session.denial.status == 307
    assert session.denial.header("location") == "wss://example.com/chat?room=1"
    assert calls == []
    assert holder[DECISION_FIELD] == "https_redirect"


async def test_a_ws_handshake_is_closed_when_the_server_cannot_send_a_denial() -> None:
    session = await websocket(wrapped(), headers={"host": "example.com"})
    assert not session.accepted
    assert session.close_code == 1008
    assert calls == []


async def test_a_wss_handshake_reaches_the_app() -> None:
    session = await websocket(wrapped(), scope=websocket_scope("/ws", scheme="wss"))
    assert session.accepted


async def test_lifespan_passes_through() -> None:
    await run_lifespan(wrapped(hsts=True))


# proxy headers


def behind_proxy(**options: Any) -> ASGIApp:
    inner = HTTPSRedirectMiddleware(enforce(make_app()), **options)
    return enforce(ProxyHeadersMiddleware(inner, trusted_proxies=["10.0.0.1"]))


async def test_the_scheme_a_trusted_proxy_forwarded_is_the_one_checked() -> None:
    headers = {"host": "10.0.0.9:8000", "x-forwarded-proto": "https"}
    response = await request(behind_proxy(hsts=True), headers=headers, client=("10.0.0.1", 1))
    assert response.status == 200
    assert response.header("strict-transport-security") == f"max-age={HSTS_MAX_AGE}"
    untrusted = await request(behind_proxy(), headers=headers, client=("192.0.2.1", 1))
    assert untrusted.status == 307


async def test_the_redirect_names_the_host_a_trusted_proxy_forwarded() -> None:
    headers = {
        "host": "10.0.0.9:8000",
        "x-forwarded-proto": "http",
        "x-forwarded-host": "api.example.com",
    }
    response = await request(
        behind_proxy(), "GET", "/items?id=3", headers=headers, client=("10.0.0.1", 1)
    )
    assert response.status == 307
    assert response.header("location") == "https://api.example.com/items?id=3"


# options


@pytest.mark.parametrize(
    ("options", "error", "name"),
    [
        ({"redirect_status": 301}, ValueError, "redirect_status"),
        ({"redirect_status": 302}, ValueError, "redirect_status"),
        ({"redirect_status": True}, ValueError, "redirect_status"),
        ({"redirect_status": "307"}, ValueError, "redirect_status"),
        ({"https_port": 0}, ValueError, "https_port"),
        ({"https_port": 65536}, ValueError, "https_port"),
        ({"https_port": "8443"}, TypeError, "https_port"),
        ({"exclude_paths": ["health"]}, ValueError, "exclude_paths"),
        ({"hsts": "yes"}, TypeError, "hsts"),
        ({"hsts": True, "hsts_max_age": -1}, ValueError, "hsts_max_age"),
        ({"hsts": True, "hsts_max_age": 1.5}, TypeError, "hsts_max_age"),
        ({"hsts": True, "hsts_include_subdomains": 1}, TypeError, "hsts_include_subdomains"),
        ({"hsts": True, "hsts_preload": "true"}, TypeError, "hsts_preload"),
        ({"hsts": True, "hsts_preload": True}, ValueError, "hsts_preload"),
        (
            {
                "hsts": True,
                "hsts_preload": True,
                "hsts_include_subdomains": True,
                "hsts_max_age": 86400,
            },
            ValueError,
            "hsts_preload",
        ),
        ({"hsts_max_age": 600}, ValueError, "hsts_max_age"),
        ({"hsts_include_subdomains": True}, ValueError, "hsts_include_subdomains"),
        ({"hsts_preload": True}, ValueError, "hsts_preload"),
    ],
)
def test_bad_options_fail_at_start_up_naming_the_option(
    options: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=rf"^{name}\b"):
        HTTPSRedirectMiddleware(make_app(), **options)


def test_every_option_has_a_default() -> None:
    HTTPSRedirectMiddleware(make_app())
