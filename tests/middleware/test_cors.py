"""CORSMiddleware: the Fetch CORS protocol, Starlette's suite in spirit, the contract."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgikit.contract import enforce
from asgikit.middleware.cors import CORSMiddleware
from asgikit.testing import (
    ALL_HTTP_EXTENSIONS,
    DISCONNECT,
    ClientDisconnected,
    lifespan,
    request,
    run_lifespan,
    websocket,
    websocket_scope,
)
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

SITE = "https://app.example.com"
OTHER = "https://evil.example.net"
PREFLIGHT_VARY = (
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, "
    "Access-Control-Request-Private-Network"
)
CORS_NAMES = (
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-expose-headers",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
    "access-control-allow-private-network",
)
SPA: dict[str, Any] = {
    "allow_origins": [SITE],
    "allow_methods": ["GET", "PUT"],
    "allow_headers": ["X-Custom"],
    "allow_credentials": True,
    "expose_headers": ["X-Total-Count"],
}


class App:
    """Answers 200 "ok" with the given headers (the same list object every time)."""

    def __init__(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.headers = headers if headers is not None else [(b"content-type", b"text/plain")]
        self.scopes: list[Scope] = []
        self.sends: list[Send] = []

    @property
    def called(self) -> bool:
        return bool(self.scopes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        self.sends.append(send)
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": "hello"})
            await send({"type": "websocket.close", "code": 1000})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            await send({"type": "http.response.body", "body": b"ok"})


def wrapped(app: ASGIApp | None = None, **options: Any) -> ASGIApp:
    return enforce(CORSMiddleware(enforce(app or App()), **options))


def preflight_headers(
    origin: str = SITE, method: str = "PUT", headers: str | None = None, **more: str
) -> dict[str, str]:
    fields = {"origin": origin, "access-control-request-method": method}
    if headers is not None:
        fields["access-control-request-headers"] = headers
    fields.update(more)
    return fields


def cors_headers(response: Any) -> dict[str, str | None]:
    return {name: response.header(name) for name in CORS_NAMES if response.header(name)}


# ---- not a CORS request ------------------------------------------------------------------


async def test_no_origin_gets_only_vary_origin_when_the_answer_depends_on_it() -> None:
    app = App([(b"content-type", b"text/plain"), (b"vary", b"Accept-Encoding")])
    response = await request(wrapped(app, **SPA))
    assert response.headers == [
        (b"content-type", b"text/plain"),
        (b"vary", b"Accept-Encoding, Origin"),
    ]
    assert response.body == b"ok"


async def test_no_origin_with_allow_all_still_varies_on_origin() -> None:
    # A CORS request gets Access-Control-Allow-Origin: *, a plain one does not: a shared
    # cache must not serve one's response to the other (Fetch, "CORS protocol and HTTP
    # caches"). Starlette 1.10's test_cors_allow_all_except_credentials expects the same.
    app = App([(b"content-type", b"text/plain"), (b"vary", b"Accept-Encoding")])
    response = await request(wrapped(app, allow_origins=["*"]))
    assert response.headers == [
        (b"content-type", b"text/plain"),
        (b"vary", b"Accept-Encoding, Origin"),
    ]
    assert app.headers == [(b"content-type", b"text/plain"), (b"vary", b"Accept-Encoding")]


async def test_no_origin_with_credentialed_allow_any_still_varies() -> None:
    response = await request(
        wrapped(allow_origins="*", allow_credentials=True, allow_any_origin_with_credentials=True)
    )
    assert response.header("vary") == "Origin"


# ---- actual requests ---------------------------------------------------------------------


async def test_allowed_origin_gets_its_origin_credentials_and_exposed_headers() -> None:
    response = await request(wrapped(**SPA), headers={"origin": SITE})
    assert cors_headers(response) == {
        "access-control-allow-origin": SITE,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "X-Total-Count",
    }
    assert response.header("vary") == "Origin"
    assert response.body == b"ok"


async def test_allow_all_without_credentials_answers_star_and_varies_on_origin() -> None:
    # Starlette 1.10's test_cors_vary_header_is_set_for_non_credentialed_request.
    app = App([(b"vary", b"Accept-Encoding"), (b"vary", b"Accept-Language")])
    response = await request(
        wrapped(app, allow_origins=["*"], expose_headers=["X-Status"]),
        headers={"origin": "https://someplace.org", "cookie": "a=b"},
    )
    assert cors_headers(response) == {
        "access-control-allow-origin": "*",
        "access-control-expose-headers": "X-Status",
    }
    assert response.header_values("vary") == ["Accept-Encoding, Accept-Language, Origin"]


async def test_denied_origin_gets_no_cors_headers_but_vary() -> None:
    response = await request(wrapped(**SPA), headers={"origin": OTHER})
    assert cors_headers(response) == {}
    assert response.header("vary") == "Origin"
    assert response.body == b"ok"  # the browser, not the server, withholds it


async def test_the_policy_owns_the_cors_response_headers() -> None:
    app = App(
        [
            (b"access-control-allow-origin", b"*"),
            (b"set-cookie", b"a=1"),
            (b"access-control-allow-credentials", b"true"),
            (b"set-cookie", b"b=2"),
            (b"access-control-expose-headers", b"X-Secret"),
        ]
    )
    allowed = await request(wrapped(app, **SPA), headers={"origin": SITE})
    assert allowed.header_values("access-control-allow-origin") == [SITE]
    assert allowed.header_values("access-control-allow-credentials") == ["true"]
    assert allowed.header_values("access-control-expose-headers") == ["X-Total-Count"]
    assert allowed.header_values("set-cookie") == ["a=1", "b=2"]
    denied = await request(wrapped(app, **SPA), headers={"origin": OTHER})
    assert cors_headers(denied) == {}
    assert denied.header_values("set-cookie") == ["a=1", "b=2"]


@pytest.mark.parametrize(
    ("app_headers", "expected"),
    [
        ([], ["Origin"]),
        ([(b"vary", b"Accept-Encoding")], ["Accept-Encoding, Origin"]),
        (
            [(b"vary", b"Accept-Encoding"), (b"vary", b"Cookie")],
            ["Accept-Encoding, Cookie, Origin"],
        ),
        ([(b"vary", b"origin, Accept")], ["origin, Accept"]),
        ([(b"vary", b"*")], ["*"]),
        ([(b"vary", b"X-" + b"a" * 300)], ["X-" + "a" * 300 + ", Origin"]),
    ],
)
@pytest.mark.parametrize("origin", [SITE, OTHER, None])
async def test_vary_origin_is_merged_never_overwritten(
    app_headers: list[tuple[bytes, bytes]], expected: list[str], origin: str | None
) -> None:
    app = App([(b"content-type", b"text/plain"), *app_headers])
    response = await request(wrapped(app, **SPA), headers={"origin": origin} if origin else {})
    assert response.header_values("vary") == expected
    assert response.headers[0] == (b"content-type", b"text/plain")


async def test_vary_merges_with_compression_inside() -> None:
    body = b"x" * 1000

    async def big(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"1000")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    app = wrapped(GZipMiddleware(big, minimum_size=10), **SPA)
    for origin in (SITE, OTHER):
        response = await request(
            app,
            headers={"origin": origin, "accept-encoding": "gzip"},
            send_after_disconnect="ignore",
        )
        assert response.header("content-encoding") == "gzip"
        assert response.header_values("vary") == ["Accept-Encoding, Origin"]
    plain = await request(app, headers={"accept-encoding": "gzip"})
    assert plain.header_values("vary") == ["Accept-Encoding, Origin"]


async def test_nothing_leaks_between_requests() -> None:
    # Starlette's test_cors_allowed_origin_does_not_leak_between_credentialed_requests,
    # in spirit, across policies, origins and a layer outside that edits headers in place.
    inner = CORSMiddleware(
        enforce(App()),
        allow_origins=[SITE, "https://*.example.org"],
        allow_credentials=True,
    )

    async def vandal(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_and_vandalise(message: Message) -> None:
            if message["type"] != "http.response.start":
                await send(message)
                return
            await send({**message, "headers": list(message["headers"])})
            # A careless layer outside edits what it was given, after the fact.
            message["headers"].append((b"x-vandal", b"1"))
            message["headers"][0] = (b"access-control-allow-origin", b"*")

        await inner(scope, receive, send_and_vandalise)

    origins = [SITE, "https://a.example.org", OTHER, "https://b.example.org", SITE, OTHER]
    for origin in origins:
        response = await request(vandal, headers={"origin": origin})
        allowed = origin != OTHER
        assert response.header_values("access-control-allow-origin") == (
            [origin] if allowed else []
        )
        assert response.header_values("x-vandal") == []


async def test_the_apps_header_list_is_not_mutated() -> None:
    constant = [(b"content-type", b"text/plain"), (b"vary", b"Accept")]
    frozen = list(constant)
    app = App(constant)
    for headers in ({"origin": SITE}, {"origin": OTHER}, {}):
        await request(wrapped(app, **SPA), headers=headers)
    assert constant == frozen


async def test_plain_options_with_origin_reaches_the_app() -> None:
    app = App()
    response = await request(wrapped(app, **SPA), "OPTIONS", headers={"origin": SITE})
    assert app.called
    assert response.header("access-control-allow-origin") == SITE


async def test_options_with_acrm_but_no_origin_is_not_a_preflight() -> None:
    app = App()
    response = await request(
        wrapped(app, **SPA), "OPTIONS", headers={"access-control-request-method": "PUT"}
    )
    assert app.called and response.body == b"ok"


# ---- preflight ---------------------------------------------------------------------------


async def test_allowed_preflight_is_a_200_ok_with_every_header_as_from_starlette() -> None:
    app = App()
    response = await request(
        wrapped(app, **SPA, max_age=1200),
        "OPTIONS",
        headers=preflight_headers(headers="X-CUSTOM,content-type"),
    )
    assert not app.called
    assert response.status == 200 and response.body == b"OK"
    assert cors_headers(response) == {
        "access-control-allow-origin": SITE,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, PUT",
        "access-control-allow-headers": (
            "Accept, Accept-Language, Content-Language, Content-Type, X-Custom"
        ),
        "access-control-max-age": "1200",
    }
    assert response.header("vary") == PREFLIGHT_VARY
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert response.header("content-length") == "2"


async def test_preflight_without_requested_headers_sends_no_allow_headers() -> None:
    response = await request(wrapped(**SPA), "OPTIONS", headers=preflight_headers())
    assert response.status == 200
    assert response.header("access-control-allow-headers") is None


async def test_allow_all_preflight_answers_star_and_mirrors_headers() -> None:
    # Starlette's test_cors_allow_all_except_credentials, preflight half.
    response = await request(
        wrapped(allow_origins=["*"], allow_headers=["*"], allow_methods=["*"]),
        "OPTIONS",
        headers=preflight_headers(method="GET", headers="X-Example, authorization"),
    )
    assert response.status == 200
    assert response.header("access-control-allow-origin") == "*"
    assert response.header("access-control-allow-headers") == "X-Example, authorization"
    assert response.header("access-control-allow-credentials") is None


async def test_repeated_request_headers_fields_are_read_as_one_list() -> None:
    response = await request(
        wrapped(**SPA),
        "OPTIONS",
        headers=[
            *preflight_headers().items(),
            ("access-control-request-headers", "x-custom"),
            ("access-control-request-headers", "x-other"),
        ],
    )
    assert response.status == 403
    assert response.text == 'CORS preflight denied: header "x-other" is not allowed'


@pytest.mark.parametrize(
    ("headers", "text"),
    [
        (
            preflight_headers(origin=OTHER),
            f'CORS preflight denied: origin "{OTHER}" is not allowed',
        ),
        (
            preflight_headers(method="DELETE"),
            'CORS preflight denied: method "DELETE" is not allowed',
        ),
        (
            preflight_headers(method="put"),
            'CORS preflight denied: method "put" is not allowed',
        ),
        (
            preflight_headers(headers="x-custom, x-nope"),
            'CORS preflight denied: header "x-nope" is not allowed',
        ),
        (
            preflight_headers(origin=OTHER, method="PATCH", headers="x-nope-1,x-nope-2"),
            f'CORS preflight denied: origin "{OTHER}" is not allowed; method "PATCH" is not '
            'allowed; headers "x-nope-1", "x-nope-2" are not allowed',
        ),
    ],
)
async def test_denied_preflight_is_a_403_naming_what_was_denied(
    headers: dict[str, str], text: str
) -> None:
    app = App()
    response = await request(wrapped(app, **SPA), "OPTIONS", headers=headers)
    assert not app.called
    assert response.status == 403
    assert response.text == text
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert response.header("content-length") == str(len(response.body))
    assert not [name for name, _ in response.headers if name.startswith(b"access-control-")]
    assert response.header("vary") == PREFLIGHT_VARY


async def test_denial_reasons_escape_and_bound_what_the_client_sent() -> None:
    response = await request(
        wrapped(**SPA),
        "OPTIONS",
        headers=[
            ("origin", b"https://\x01" + b"a" * 200),
            ("access-control-request-method", "PUT"),
        ],
    )
    assert response.status == 403
    assert response.text.isprintable() and "\\x01" in response.text
    assert len(response.text) < 160 and '..." is not allowed' in response.text


async def test_methods_are_case_sensitive_except_the_six_browsers_normalise() -> None:
    app = wrapped(allow_origins=[SITE], allow_methods=["get", "delete", "patch"])
    for method, status in [("GET", 200), ("DELETE", 200), ("patch", 200), ("PATCH", 403)]:
        response = await request(app, "OPTIONS", headers=preflight_headers(method=method))
        assert response.status == status, method
    allowed = await request(app, "OPTIONS", headers=preflight_headers(method="GET"))
    assert allowed.header("access-control-allow-methods") == "GET, DELETE, patch"


async def test_star_methods_without_credentials_allow_any_requested_method() -> None:
    app = wrapped(allow_origins=[SITE], allow_methods="*")
    common = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, QUERY"
    response = await request(app, "OPTIONS", headers=preflight_headers(method="PUT"))
    assert response.header("access-control-allow-methods") == common
    response = await request(app, "OPTIONS", headers=preflight_headers(method="PROPFIND"))
    assert response.status == 200
    assert response.header("access-control-allow-methods") == f"{common}, PROPFIND"
    response = await request(app, "OPTIONS", headers=preflight_headers(method="BAD METHOD"))
    assert response.status == 403


async def test_star_methods_with_credentials_are_the_common_ones() -> None:
    app = wrapped(allow_origins=[SITE], allow_methods=["*", "PURGE"], allow_credentials=True)
    for method, status in [("PATCH", 200), ("PURGE", 200), ("PROPFIND", 403)]:
        response = await request(app, "OPTIONS", headers=preflight_headers(method=method))
        assert response.status == status, method


async def test_an_empty_method_list_denies_every_preflight() -> None:
    app = wrapped(allow_origins=[SITE], allow_methods=[])
    response = await request(app, "OPTIONS", headers=preflight_headers(method="GET"))
    assert response.status == 403


@pytest.mark.parametrize("allow", [True, False])
async def test_private_network_access(allow: bool) -> None:
    response = await request(
        wrapped(allow_origins=[SITE], allow_methods=["PUT"], allow_private_network=allow),
        "OPTIONS",
        headers=preflight_headers(**{"access-control-request-private-network": "true"}),
    )
    assert response.status == 200  # never fails the whole preflight
    assert response.header("access-control-allow-private-network") == ("true" if allow else None)
    assert response.header("vary") == PREFLIGHT_VARY


async def test_private_network_answer_only_when_asked() -> None:
    response = await request(
        wrapped(allow_origins=[SITE], allow_methods=["PUT"], allow_private_network=True),
        "OPTIONS",
        headers=preflight_headers(),
    )
    assert response.header("access-control-allow-private-network") is None


# ---- credentials -------------------------------------------------------------------------


def test_star_with_credentials_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="allow_any_origin_with_credentials=True") as info:
        CORSMiddleware(App(), allow_origins=["*"], allow_credentials=True)
    assert "every website" in str(info.value)


async def test_any_origin_with_credentials_reflects_and_never_sends_star() -> None:
    # Starlette's test_cors_allow_all, with the acknowledgement it does not ask for.
    app = wrapped(
        allow_origins=["*"],
        allow_credentials=True,
        allow_any_origin_with_credentials=True,
        allow_headers=["*"],
        allow_methods=["*"],
        expose_headers=["X-Status"],
    )
    origin = "https://example.org"
    response = await request(app, headers={"origin": origin})
    assert cors_headers(response) == {
        "access-control-allow-origin": origin,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "X-Status",
    }
    assert response.header("vary") == "Origin"
    preflight = await request(
        app, "OPTIONS", headers=preflight_headers(origin=origin, headers="X-Example")
    )
    assert preflight.header("access-control-allow-origin") == origin
    assert preflight.header("access-control-allow-headers") == "X-Example"
    assert preflight.header("access-control-allow-credentials") == "true"
    assert "*" not in (preflight.header("access-control-allow-methods") or "*")
    null = await request(app, headers={"origin": "null"})
    assert cors_headers(null) == {}


async def test_null_origin_only_when_listed() -> None:
    listed = await request(wrapped(allow_origins=["null"]), headers={"origin": "null"})
    assert listed.header("access-control-allow-origin") == "null"
    for options in (
        {"allow_origin_regex": ".*"},
        {"allow_origins": ["https://*.example.com"]},
        {"allow_origins": [SITE]},
    ):
        response = await request(wrapped(**options), headers={"origin": "null"})
        assert cors_headers(response) == {}, options
    public = await request(wrapped(allow_origins="*"), headers={"origin": "null"})
    assert public.header("access-control-allow-origin") == "*"


# ---- origins -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "sent"),
    [
        ("HTTPS://App.Example.COM:443", "https://app.example.com"),
        ("http://localhost:80", "http://localhost"),
        ("http://localhost:8000", "http://localhost:8000"),
        ("http://[0:0::1]:8080", "http://[::1]:8080"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
    ],
)
async def test_configured_origins_are_normalised(configured: str, sent: str) -> None:
    response = await request(wrapped(allow_origins=[configured]), headers={"origin": sent})
    assert response.header("access-control-allow-origin") == sent


async def test_a_comma_separated_str_is_a_list() -> None:
    app = wrapped(allow_origins=f"{SITE}, https://b.example.com", allow_methods="GET, PUT")
    for origin in (SITE, "https://b.example.com"):
        response = await request(app, headers={"origin": origin})
        assert response.header("access-control-allow-origin") == origin


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://a.example.com", True),
        ("https://a.b.example.com", True),
        ("https://xn--bcher-kva.example.com", True),
        ("https://example.com", False),
        ("https://a.example.com.evil.com", False),
        ("https://evil-example.com", False),
        ("https://aexample.com", False),
        ("http://a.example.com", False),
        ("https://a.example.com:8443", False),
        ("https://.example.com", False),
        ("https://a/b.example.com", False),
    ],
)
async def test_wildcard_subdomains(origin: str, allowed: bool) -> None:
    response = await request(
        wrapped(allow_origins=["https://*.example.com", "https://*.example.org:8443"]),
        headers={"origin": origin},
    )
    assert response.header("access-control-allow-origin") == (origin if allowed else None)


async def test_wildcard_with_a_port() -> None:
    app = wrapped(allow_origins=["https://*.example.org:8443"])
    response = await request(app, headers={"origin": "https://a.example.org:8443"})
    assert response.header("access-control-allow-origin") == "https://a.example.org:8443"
    response = await request(app, headers={"origin": "https://a.example.org"})
    assert response.header("access-control-allow-origin") is None


async def test_regex_is_a_full_match() -> None:
    # Starlette's test_cors_allow_origin_regex_fullmatch.
    app = wrapped(allow_origin_regex=r"https://.*\.example\.org", allow_headers=["X-Example"])
    good = await request(app, headers={"origin": "https://sub.example.org"})
    assert good.header("access-control-allow-origin") == "https://sub.example.org"
    bad = await request(app, headers={"origin": "https://sub.example.org.hacker.com"})
    assert bad.header("access-control-allow-origin") is None
    preflight = await request(
        app,
        "OPTIONS",
        headers=preflight_headers(origin="http://sub.example.org", method="GET"),
    )
    assert preflight.status == 403


async def test_over_long_origins_are_denied_without_matching() -> None:
    origin = "https://" + "a." * 300 + "example.com"
    response = await request(wrapped(allow_origin_regex=".*"), headers={"origin": origin})
    assert cors_headers(response) == {}


# ---- per-path policies -------------------------------------------------------------------


POLICIES: list[dict[str, Any]] = [
    {"path": "/public", "allow_origins": ["*"]},
    {"path": "/public/private/", "allow_origins": [SITE], "allow_credentials": True},
]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/public", "*"),
        ("/public/x", "*"),
        ("/public/private", SITE),
        ("/public/private/y", SITE),
        ("/publicity", None),
        ("/", None),
    ],
)
async def test_the_longest_path_prefix_wins(path: str, expected: str | None) -> None:
    app = wrapped(allow_origins=["https://other.example.com"], policies=POLICIES)
    response = await request(app, path=path, headers={"origin": SITE})
    assert response.header("access-control-allow-origin") == expected


async def test_path_policies_apply_to_preflights_and_every_path_varies() -> None:
    app = wrapped(policies=POLICIES)
    for path in ("/public/a", "/public/private/a", "/elsewhere"):
        plain = await request(app, path=path)
        assert plain.header("vary") == "Origin"
    preflight = await request(
        app, "OPTIONS", path="/public/a", headers=preflight_headers(method="GET")
    )
    assert preflight.status == 200
    assert preflight.header("access-control-allow-origin") == "*"


async def test_a_policy_takes_defaults_not_the_top_level_options() -> None:
    app = wrapped(allow_origins=[SITE], policies=[{"path": "/api", "expose_headers": ["X-A"]}])
    response = await request(app, path="/api/x", headers={"origin": SITE})
    assert cors_headers(response) == {}


@pytest.mark.parametrize(
    ("policies", "error", "match"),
    [
        ("/api", TypeError, "list of mappings"),
        ([["path", "/api"]], TypeError, r"policies\[0\]: a policy must be a mapping"),
        (
            [{"allow_origins": [SITE]}],
            ValueError,
            r"policies\[0\]: 'path': expected a path starting with '/'",
        ),
        ([{"path": "api"}], ValueError, "starting with '/'"),
        (
            [{"path": "/a"}, {"path": "/b", "allow_origin": [SITE]}],
            ValueError,
            r"policies\[1\]: unknown option 'allow_origin' \(did you mean 'allow_origins'\?\)",
        ),
        ([{"path": "/a", "zzz": 1}], ValueError, r"unknown option 'zzz'; known: path, "),
        ([{"path": "/a"}, {"path": "/a/"}], ValueError, "repeats another policy's path"),
        (
            [{"path": "/a", "allow_origins": ["https://a.com/"]}],
            ValueError,
            r"policies\[0\]: origin 'https://a.com/' ends with a slash",
        ),
        (
            [{"path": "/a", "allow_credentials": "yes"}],
            TypeError,
            r"policies\[0\]: allow_credentials: expected true or false",
        ),
    ],
)
def test_bad_policies_fail_at_start_up(policies: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        CORSMiddleware(App(), policies=policies)


# ---- websocket ---------------------------------------------------------------------------


async def test_websocket_origins_are_not_checked_by_default() -> None:
    app = App()
    session = await websocket(wrapped(app, **SPA), headers={"origin": OTHER})
    assert session.accepted and session.sent == ["hello"]


@pytest.mark.parametrize("headers", [{"origin": SITE}, {}])
async def test_websocket_from_an_allowed_origin_or_no_browser_reaches_the_app(
    headers: dict[str, str],
) -> None:
    app = App()
    session = await websocket(wrapped(app, **SPA, check_websocket_origin=True), headers=headers)
    assert session.accepted and app.called


async def test_websocket_from_a_denied_origin_gets_a_403_denial_response() -> None:
    app = App()
    session = await websocket(
        wrapped(app, **SPA, check_websocket_origin=True),
        headers={"origin": OTHER},
        extensions={"websocket.http.response": {}},
    )
    assert not app.called and not session.accepted
    denial = session.denial
    assert denial is not None and denial.status == 403
    assert denial.text == "WebSocket connection denied: origin not allowed"
    assert denial.header("content-length") == str(len(denial.body))


async def test_websocket_from_a_denied_origin_is_closed_without_the_extension() -> None:
    app = App()
    session = await websocket(
        wrapped(app, **SPA, check_websocket_origin=True), headers={"origin": OTHER}
    )
    assert not app.called and not session.accepted
    assert session.close_code == 1008  # the server turns a close before accept into a 403


async def test_websocket_client_gone_before_the_handshake() -> None:
    app = App()
    middleware = CORSMiddleware(app, **SPA, check_websocket_origin=True)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.disconnect", "code": 1006}

    async def send(message: Message) -> None:
        sent.append(message)  # pragma: no cover - nothing is sent

    await middleware(websocket_scope(headers={"origin": OTHER}), receive, send)
    assert sent == [] and not app.called


async def test_websocket_check_per_path_and_for_allow_all() -> None:
    app = wrapped(
        allow_origins=["*"],
        check_websocket_origin=True,
        policies=[{"path": "/ws/private", "allow_origins": [SITE], "check_websocket_origin": True}],
    )
    public = await websocket(app, "/ws/public", headers={"origin": OTHER})
    assert public.accepted
    private = await websocket(app, "/ws/private", headers={"origin": OTHER})
    assert not private.accepted
    unchecked = wrapped(policies=[{"path": "/ws/private", "check_websocket_origin": True}])
    elsewhere = await websocket(unchecked, "/ws/other", headers={"origin": OTHER})
    assert elsewhere.accepted


# ---- report-only -------------------------------------------------------------------------


async def test_report_only_denies_nothing_and_logs_what_it_would_deny() -> None:
    app = App()
    middleware = wrapped(
        app,
        allow_origins=[SITE],
        allow_methods=["GET"],
        check_websocket_origin=True,
        report_only=True,
    )
    with structlog.testing.capture_logs() as logs:
        allowed = await request(middleware, headers={"origin": SITE})
        actual = await request(middleware, path="/a", headers={"origin": OTHER})
        preflight = await request(
            middleware,
            "OPTIONS",
            path="/b",
            headers=preflight_headers(origin=OTHER, method="PATCH", headers="x-a"),
        )
        session = await websocket(middleware, "/ws", headers={"origin": OTHER})
    assert allowed.header("access-control-allow-origin") == SITE
    assert actual.header("access-control-allow-origin") == OTHER
    assert preflight.status == 200
    assert preflight.header("access-control-allow-origin") == OTHER
    assert preflight.header("access-control-allow-methods") == "GET, PATCH"
    assert preflight.header("access-control-allow-headers") == "x-a"
    assert session.accepted
    assert [(log["kind"], log["path"], log["origin"]) for log in logs] == [
        ("request", "/a", OTHER),
        ("preflight", "/b", OTHER),
        ("websocket", "/ws", OTHER),
    ]
    assert all(log["event"] == "cors.would_deny" and log["log_level"] == "warning" for log in logs)
    assert logs[1]["reason"] == (
        f'origin "{OTHER}" is not allowed; method "PATCH" is not allowed; '
        'header "x-a" is not allowed'
    )


async def test_report_only_with_an_empty_method_list_answers_the_requested_method() -> None:
    middleware = wrapped(allow_origins=[SITE], allow_methods=[], report_only=True)
    with structlog.testing.capture_logs() as logs:
        response = await request(middleware, "OPTIONS", headers=preflight_headers())
    assert response.header("access-control-allow-methods") == "PUT"
    assert len(logs) == 1


async def test_report_only_with_credentials_needs_the_acknowledgement() -> None:
    with pytest.raises(ValueError, match="report_only=True answers every origin"):
        CORSMiddleware(App(), allow_origins=[SITE], allow_credentials=True, report_only=True)
    middleware = wrapped(
        allow_origins=[SITE],
        allow_credentials=True,
        report_only=True,
        allow_any_origin_with_credentials=True,
    )
    with structlog.testing.capture_logs() as logs:
        response = await request(middleware, headers={"origin": OTHER})
    assert response.header("access-control-allow-origin") == OTHER
    assert response.header("access-control-allow-credentials") == "true"
    assert len(logs) == 1


# ---- the contract: lifespan, streaming, extensions, errors ------------------------------


async def test_lifespan_passes_through() -> None:
    app = App()
    session = await run_lifespan(wrapped(app, **SPA))
    assert [m["type"] for m in session.messages] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert app.scopes[0]["type"] == "lifespan"


async def test_state_is_shared_with_requests() -> None:
    app = App()
    middleware = wrapped(app, **SPA)
    async with lifespan(middleware) as session:
        await request(middleware, state=session.state, headers={"origin": SITE})
    assert app.scopes[1]["state"] is session.state


async def test_unknown_scope_types_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:  # pragma: no cover - never called
        return {}

    async def send(message: Message) -> None:  # pragma: no cover - never called
        pass

    await CORSMiddleware(app, **SPA, check_websocket_origin=True)(
        {"type": "custom.thing"}, receive, send
    )
    assert seen == ["custom.thing"]


@pytest.mark.parametrize("origin", [SITE, OTHER, None])
async def test_streaming_bodies_and_extensions_pass_through_in_order(origin: str | None) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.early_hint", "links": [b"</app.js>; rel=preload"]})
        headers = [(b"content-type", b"text/plain")]
        await send(
            {"type": "http.response.start", "status": 200, "headers": headers, "trailers": True}
        )
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        await send({"type": "http.response.trailers", "headers": [(b"x-sum", b"1")]})

    response = await request(
        wrapped(app, **SPA),
        body=[b"a", b"b", b"c"],
        headers={"origin": origin} if origin else {},
        extensions=ALL_HTTP_EXTENSIONS,
    )
    assert response.message_types == [
        "http.response.early_hint",
        "http.response.start",
        *["http.response.body"] * 4,
        "http.response.trailers",
    ]
    assert response.chunks == [b"a", b"b", b"c", b""]
    assert response.trailers == [(b"x-sum", b"1")]
    assert response.start.get("trailers") is True
    assert response.header("vary") == "Origin"


async def test_pathsend_passes_through() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/srv/file.txt"})

    response = await request(
        wrapped(app, **SPA), headers={"origin": SITE}, extensions=ALL_HTTP_EXTENSIONS
    )
    assert response.pathsend == "/srv/file.txt"
    assert response.header("access-control-allow-origin") == SITE


@pytest.mark.parametrize("started", [False, True])
@pytest.mark.parametrize("origin", [SITE, None])
async def test_app_exceptions_propagate_unchanged(started: bool, origin: str | None) -> None:
    error = RuntimeError("boom")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if started:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise error

    with pytest.raises(RuntimeError) as info:
        await request(wrapped(app, **SPA), headers={"origin": origin} if origin else {})
    assert info.value is error


async def test_an_error_page_from_inside_carries_cors_headers() -> None:
    async def boom(_: Any) -> Any:
        raise RuntimeError("boom")

    starlette_app = Starlette(routes=[Route("/", boom)])
    response = await request(
        wrapped(starlette_app, **SPA), headers={"origin": SITE}, raise_app_exceptions=False
    )
    assert isinstance(response.exception, RuntimeError)
    assert response.status == 500
    assert response.header("access-control-allow-origin") == SITE


async def test_cancellation_propagates() -> None:
    async def sleeping(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(10)

    with anyio.move_on_after(0.02) as scope:
        await request(wrapped(sleeping, **SPA), headers={"origin": SITE})
    assert scope.cancelled_caught


async def test_a_send_failing_after_disconnect_propagates() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    with pytest.raises(ClientDisconnected):
        await request(wrapped(app, **SPA), headers={"origin": SITE}, disconnect_after=2)


async def test_a_disconnect_mid_upload_reaches_the_app() -> None:
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(await receive())
        received.append(await receive())

    await request(wrapped(app, **SPA), headers={"origin": SITE}, body=[b"a", DISCONNECT])
    assert [m["type"] for m in received] == ["http.request", "http.disconnect"]


# ---- frameworks --------------------------------------------------------------------------


async def test_starlette_add_middleware() -> None:
    def homepage(_: Any) -> PlainTextResponse:
        return PlainTextResponse("Homepage")

    starlette_app = Starlette(routes=[Route("/", homepage)])
    starlette_app.add_middleware(CORSMiddleware, **SPA)
    response = await request(enforce(starlette_app), headers={"origin": SITE})
    assert response.text == "Homepage"
    assert response.header("access-control-allow-origin") == SITE
    preflight = await request(enforce(starlette_app), "OPTIONS", headers=preflight_headers())
    assert preflight.status == 200


# ---- options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"allow_origins": [SITE + "/"]}, ValueError, "ends with a slash"),
        ({"allow_origins": [SITE + "/app"]}, ValueError, "has a path"),
        ({"allow_origins": ["app.example.com"]}, ValueError, "has no scheme"),
        ({"allow_origins": b"https://a.com"}, TypeError, "allow_origins entries must be str"),
        ({"allow_origins": [1]}, TypeError, "allow_origins entries must be str"),
        ({"allow_origins": 5}, TypeError, "allow_origins must be a str or an iterable"),
        ({"allow_origin_regex": "https://(("}, ValueError, "not a valid regular expression"),
        ({"allow_origin_regex": b"x"}, TypeError, "allow_origin_regex must be a str"),
        ({"allow_methods": ["GET POST"]}, ValueError, "allow_methods: 'GET POST' is not"),
        ({"allow_headers": ["X Bad"]}, ValueError, "allow_headers: 'X Bad' is not"),
        ({"expose_headers": ["a:b"]}, ValueError, "expose_headers: 'a:b' is not"),
        ({"max_age": -1}, ValueError, "max_age: expected an integer of at least 0"),
        ({"max_age": "600"}, TypeError, "max_age: expected an integer"),
        ({"max_age": True}, TypeError, "max_age: expected an integer"),
        ({"allow_credentials": 1}, TypeError, "allow_credentials: expected true or false"),
        (
            {"allow_origins": [SITE], "allow_credentials": True, "expose_headers": "*"},
            ValueError,
            "browsers read '\\*' as a header named",
        ),
        (
            {"allow_origins": [SITE], "allow_any_origin_with_credentials": True},
            ValueError,
            "without both it has no effect",
        ),
        (
            {
                "allow_origins": [SITE],
                "allow_credentials": True,
                "allow_any_origin_with_credentials": True,
            },
            ValueError,
            "without both it has no effect",
        ),
    ],
)
def test_bad_options_fail_at_start_up(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        CORSMiddleware(App(), **options)


def test_positional_options_are_refused() -> None:
    with pytest.raises(TypeError):
        CORSMiddleware(App(), [SITE])  # type: ignore[misc]


# ---- properties --------------------------------------------------------------------------

ORIGINS = st.one_of(
    st.sampled_from([SITE, OTHER, "null", "https://a.example.com", "http://app.example.com"]),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    origin=ORIGINS,
    credentials=st.booleans(),
    any_origin=st.booleans(),
    method=st.sampled_from(["GET", "OPTIONS"]),
    acrm=st.sampled_from([None, "PUT", "GET", "patch"]),
)
def test_any_origin_gets_a_safe_answer(
    origin: str, credentials: bool, any_origin: bool, method: str, acrm: str | None
) -> None:
    options: dict[str, Any] = {
        "allow_origins": ["*"] if any_origin else [SITE, "https://*.example.com"],
        "allow_credentials": credentials,
        "allow_any_origin_with_credentials": any_origin and credentials,
        "allow_methods": ["GET", "PUT"],
    }
    headers = [("origin", origin.encode("latin-1"))]
    if acrm is not None:
        headers.append(("access-control-request-method", acrm.encode()))

    async def main() -> None:
        response = await request(wrapped(**options), method, headers=headers)
        acao = response.header_values("access-control-allow-origin")
        assert len(acao) <= 1
        if acao and acao[0] == "*":
            assert response.header("access-control-allow-credentials") is None
            assert not credentials
        elif acao:
            assert acao[0] == origin and origin != "null"
        if response.status == 403:
            assert not acao
        if not (any_origin and not credentials):
            vary = response.header("vary") or ""
            assert vary.startswith("Origin")

    anyio.run(main)
