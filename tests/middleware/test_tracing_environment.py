"""TracingMiddleware and OpenTelemetry's instrumentation variables: excluded URLs and
header capture, with the meaning OpenTelemetry's contrib instrumentation gives them
(checked against opentelemetry-util-http and the contrib ASGI middleware themselves)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.instrumentation.asgi import (
    collect_custom_headers_attributes,
    get_host_port_url_tuple,
)
from opentelemetry.util.http import (
    SanitizeValue,
    get_excluded_urls,
    normalise_request_header_name,
)

from asgikit.middleware.tracing import TracingMiddleware
from asgikit.testing import http_scope, request, websocket
from asgikit.types import Receive, Scope, Send
from tests.middleware.test_tracing import Telemetry, responder
from tests.telemetry_env import without_otel_variables

pytestmark = pytest.mark.anyio

EXCLUDED = "OTEL_PYTHON_EXCLUDED_URLS"
ASGI_EXCLUDED = "OTEL_PYTHON_ASGI_EXCLUDED_URLS"
REQUEST = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"
RESPONSE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE"
SANITIZE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    without_otel_variables(monkeypatch)


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


def traced_paths(telemetry: Telemetry) -> list[str]:
    return [str(dict(span.attributes or {})["url.path"]) for span in telemetry.spans()]


# --------------------------------------------------------------------------------------
# excluded URLs


async def test_excluded_urls_are_searched_in_the_full_url(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EXCLUDED, r"healthz, ^https://admin\.example\.com/,/static/.*\.js$")
    app = telemetry.wrap(responder())
    await request(app, "GET", "/healthz")
    await request(app, "GET", "/api/healthz/deep")  # found anywhere, not only at the start
    await request(app, "GET", "/users", scheme="https", headers=[("host", "admin.example.com")])
    await request(app, "GET", "/static/app.js?v=2")  # the query is not part of the URL
    await request(app, "GET", "/users", headers=[("host", "shop.example.com")])
    await request(app, "GET", "/static/app.css")
    assert traced_paths(telemetry) == ["/users", "/static/app.css"]
    assert len(telemetry.points("http.server.request.duration")) == 1  # nor measured
    [point] = telemetry.points("http.server.request.duration")
    assert point.count == 2


async def test_the_asgi_variable_wins_even_empty(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EXCLUDED, "/a")
    monkeypatch.setenv(ASGI_EXCLUDED, "/b")
    app = telemetry.wrap(responder())
    await request(app, "GET", "/a")
    await request(app, "GET", "/b")
    monkeypatch.setenv(ASGI_EXCLUDED, "")
    app = telemetry.wrap(responder())
    await request(app, "GET", "/a")
    assert traced_paths(telemetry) == ["/a", "/a"]


async def test_variables_are_read_when_the_middleware_is_made(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = telemetry.wrap(responder())
    monkeypatch.setenv(EXCLUDED, "/old")
    monkeypatch.setenv(REQUEST, "accept")
    after = telemetry.wrap(responder())
    monkeypatch.delenv(EXCLUDED)
    monkeypatch.delenv(REQUEST)
    for app in (before, after):
        await request(app, "GET", "/old", headers=[("accept", "*/*")])
        await request(app, "GET", "/new", headers=[("accept", "*/*")])
    assert traced_paths(telemetry) == ["/old", "/new", "/new"]
    captured = [
        dict(span.attributes or {}).get("http.request.header.accept") for span in telemetry.spans()
    ]
    assert captured == [None, None, ("*/*",)]


async def test_excluded_urls_and_exclude_paths_add_up(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EXCLUDED, "/metrics")
    app = telemetry.wrap(responder(), exclude_paths=["/health"])
    for path in ("/health", "/metrics", "/orders"):
        await request(app, "GET", path)
    assert traced_paths(telemetry) == ["/orders"]


async def test_excluded_urls_cover_websockets(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["path"])
        await receive()
        await send({"type": "websocket.close", "code": 1000})

    monkeypatch.setenv(EXCLUDED, "^ws://testserver/live")
    wrapped = telemetry.wrap(app)
    await websocket(wrapped, "/live")
    await websocket(wrapped, "/chat")
    assert seen == ["/live", "/chat"]
    assert traced_paths(telemetry) == ["/chat"]


def test_a_pattern_that_is_not_a_regular_expression_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ASGI_EXCLUDED, "ok,/users/(")
    with pytest.raises(ValueError, match=r"^OTEL_PYTHON_ASGI_EXCLUDED_URLS: '/users/\(' is not"):
        TracingMiddleware(responder())


SCOPES = [
    {"path": "/healthz"},
    {"path": "/api/v1/users", "headers": [(b"host", b"api.example.com:8443")]},
    {"path": "/ping", "headers": [], "server": ("10.0.0.5", 8000)},
    {"path": "/ping", "headers": [], "server": ("10.0.0.5", 80)},
    {"path": "/ping", "headers": [], "server": None},
    {"path": "/docs", "scheme": "https", "headers": [(b"host", b"docs.example.com")]},
]


@pytest.mark.parametrize(
    "patterns",
    [
        "healthz",
        r"^http://testserver/",
        r"example\.com:8443",
        r"^http://10\.0\.0\.5:8000/ping$",
        r"^http://10\.0\.0\.5/ping$",
        r"^http://0\.0\.0\.0/ping$",
        r"^https://docs\.",
        r"users$,docs",
    ],
)
@pytest.mark.parametrize("variable", [EXCLUDED, ASGI_EXCLUDED])
async def test_the_same_requests_are_excluded_as_by_contrib(
    monkeypatch: pytest.MonkeyPatch, patterns: str, variable: str
) -> None:
    monkeypatch.setenv(variable, patterns)
    contrib = get_excluded_urls("ASGI")
    for fields in SCOPES:
        telemetry = Telemetry()
        scope = http_scope("GET", fields["path"], scheme=fields.get("scheme", "http"))
        scope.update({key: value for key, value in fields.items() if key != "path"})
        if "headers" not in fields:
            scope["headers"] = [(b"host", b"testserver")]
        await request(telemetry.wrap(responder()), scope=scope)
        excluded = contrib.url_disabled(get_host_port_url_tuple(scope)[2])
        assert (telemetry.spans() == []) is excluded, (patterns, fields)


# --------------------------------------------------------------------------------------
# header capture


REQUEST_HEADERS = [
    ("accept", "text/html"),
    ("accept", "application/json"),
    ("x-session-id", "s3cr3t"),
    ("x-request-start", "t=1"),
    ("user-agent", "curl"),
    ("authorization", "Bearer abc"),
]


async def test_request_and_response_headers_from_the_variables(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REQUEST, "ACCEPT, X-.*,authorization")
    monkeypatch.setenv(RESPONSE, "content-type,x-cache")
    monkeypatch.setenv(SANITIZE, ".*session.*,set-cookie")
    response_headers = [
        (b"content-type", b"text/plain"),
        (b"x-cache", b"hit"),
        (b"x-cache", b"miss"),
        (b"x-cache-status", b"fresh"),  # not a full match of x-cache
    ]
    app = telemetry.wrap(responder(headers=response_headers))
    await request(app, headers=REQUEST_HEADERS)
    captured = {
        key: value
        for key, value in dict(telemetry.span().attributes or {}).items()
        if ".header." in key
    }
    assert captured == {
        "http.request.header.accept": ("text/html", "application/json"),
        "http.request.header.x-session-id": ("[REDACTED]",),
        "http.request.header.x-request-start": ("t=1",),
        "http.request.header.authorization": ("[REDACTED]",),  # always, whatever asked
        "http.response.header.content-type": ("text/plain",),
        "http.response.header.x-cache": ("hit", "miss"),
    }


async def test_the_options_win_over_the_variables(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REQUEST, "accept")
    monkeypatch.setenv(RESPONSE, "content-type")
    monkeypatch.setenv(SANITIZE, "session")  # redacts what the options capture too
    app = telemetry.wrap(
        responder(headers=[(b"content-type", b"text/plain")]),
        capture_request_headers=["user-agent", "x-session-id"],
        capture_response_headers=[],  # none, whatever the variable says
    )
    await request(app, headers=REQUEST_HEADERS)
    captured = {
        key: value
        for key, value in dict(telemetry.span().attributes or {}).items()
        if ".header." in key
    }
    assert captured == {
        "http.request.header.user-agent": ("curl",),
        "http.request.header.x-session-id": ("[REDACTED]",),
    }


async def test_many_header_names_stay_correct(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REQUEST, "x-.*")
    app = telemetry.wrap(responder())
    for n in range(1500):  # more names than the middleware remembers
        await request(app, headers=[(f"x-h{n}", str(n)), ("y-h", "no")])
    for n, span in enumerate(telemetry.spans()):
        attributes = dict(span.attributes or {})
        headers = {key: value for key, value in attributes.items() if ".header." in key}
        assert headers == {f"http.request.header.x-h{n}": (str(n),)}


def test_a_header_pattern_that_is_not_a_regular_expression_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SANITIZE, "[session")
    with pytest.raises(ValueError, match=r"^OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE"):
        TracingMiddleware(responder())


@pytest.mark.parametrize(
    ("wanted", "sanitize"),
    [
        ("accept", ""),
        ("Accept,X-.*", "session"),
        (".*", ".*session.*,agent"),
        ("x-(session|request)-.*", "^x-session"),
        ("user-agent", "AGENT"),
    ],
)
async def test_the_same_values_are_captured_as_by_contrib(
    monkeypatch: pytest.MonkeyPatch, wanted: str, sanitize: str
) -> None:
    monkeypatch.setenv(REQUEST, wanted)
    monkeypatch.setenv(SANITIZE, sanitize)
    telemetry = Telemetry()
    headers = [(n, v) for n, v in REQUEST_HEADERS if n != "authorization"] + [("host", "t")]
    await request(telemetry.wrap(responder()), headers=headers)
    ours = {
        key.replace("-", "_"): list(value)
        for key, value in dict(telemetry.span().attributes or {}).items()
        if key.startswith("http.request.header.")
    }
    scope: dict[str, Any] = {"headers": [(n.encode(), v.encode()) for n, v in headers]}
    theirs = collect_custom_headers_attributes(
        scope,
        SanitizeValue([item for item in sanitize.split(",") if item]),
        wanted.split(","),
        normalise_request_header_name,
    )
    assert ours == theirs
