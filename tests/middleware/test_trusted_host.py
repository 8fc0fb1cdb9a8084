"""TrustedHostMiddleware: which Host values pass, what a refusal and a www redirect look
like, websockets, proxy headers, excluded paths and option checks."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgikit.answers import DECISION_FIELD, DETAILS
from asgikit.contract import enforce
from asgikit.hosts import parse_host
from asgikit.middleware.proxy_headers import ProxyHeadersMiddleware
from asgikit.middleware.trusted_host import TrustedHostMiddleware
from asgikit.scopes import DECISION_KEY
from asgikit.testing import http_scope, request, run_lifespan, websocket, websocket_scope
from asgikit.testing.http import Response
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

DENIAL = {"websocket.http.response": {}}
calls: list[Scope] = []


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Records the scope it was called with; answers 200 ``ok`` or accepts."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    calls.append(scope)
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wrapped(**options: Any) -> ASGIApp:
    return enforce(TrustedHostMiddleware(enforce(app), **options))


@pytest.fixture(autouse=True)
def _clean() -> None:
    calls.clear()


async def get(host: bytes | None, path: str = "/", **options: Any) -> Response:
    """One GET with exactly the Host given (None: none at all); ``calls`` starts empty."""
    calls.clear()
    scope = http_scope("GET", path)
    scope["headers"] = [] if host is None else [(b"host", host)]
    return await request(wrapped(**options), scope=scope)


def assert_refused(response: Response) -> None:
    assert response.status == 400
    assert response.text == "Invalid host header"
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert response.header("content-length") == str(len(response.body))
    assert calls == []


SITE = ["example.com", "*.example.com"]


@pytest.mark.parametrize(
    "host",
    [
        b"example.com",
        b"EXAMPLE.com",
        b"example.com:8443",
        b"api.example.com",
        b"a.b.example.com",
        b"API.Example.COM:80",
    ],
)
async def test_allowed_hosts_reach_the_app(host: bytes) -> None:
    response = await get(host, allowed_hosts=SITE)
    assert response.status == 200
    assert len(calls) == 1


@pytest.mark.parametrize(
    "host",
    [
        b"evil.com",
        b"evil-example.com",
        b"example.com.evil.com",
        b"notexample.com",
        b".example.com",  # nothing before the dot: not a subdomain
        b"example.com.",  # a trailing dot is another spelling: list it to allow it
        b"example.co",
    ],
)
async def test_other_hosts_are_refused_with_400(host: bytes) -> None:
    response = await get(host, allowed_hosts=SITE)
    assert_refused(response)


async def test_the_entries_are_case_insensitive_too() -> None:
    response = await get(b"example.com", allowed_hosts=["Example.COM"])
    assert response.status == 200


async def test_a_wildcard_does_not_cover_the_domain_itself() -> None:
    assert (await get(b"a.example.com", allowed_hosts=["*.example.com"])).status == 200
    assert_refused(await get(b"example.com", allowed_hosts=["*.example.com"]))


async def test_a_trailing_dot_passes_when_listed() -> None:
    response = await get(b"example.com.", allowed_hosts=["example.com."])
    assert response.status == 200


@pytest.mark.parametrize(
    "host",
    [
        b"",
        b" ",
        b"example.com ",
        b"exa mple.com",
        b"example.com\t",
        "bücher.example.com".encode(),
        "bücher.example.com".encode("latin-1"),
        b"evil.com@example.com",
        b"example.com@evil.com",
        b"user:pw@example.com",
        b"example.com/evil",
        b"example.com?x",
        b"example.com#x",
        b"example.com\\evil",
        b"example.com\r\nx-injected: 1",
        b"example.com\x00",
        b"a" * 300 + b".example.com",
        b"example.com:",
        b"example.com:0",
        b"example.com:65536",
        b"example.com:000443",
        b"example.com:http",
        b"example.com:-1",
        b"[::1",
        b"[::1]x",
        b"[:::]",
        b"[v1.]",
        b"[v1.x]:99999",
        b"example.com:80:80",
    ],
)
async def test_malformed_hosts_are_refused_with_400(host: bytes) -> None:
    response = await get(host, allowed_hosts=["example.com", "*.example.com", "[::1]", "[v1.x]"])
    assert_refused(response)


async def test_a_very_long_but_valid_name_is_matched_like_any_other() -> None:
    host = b"a." * 100 + b"example.com"  # 211 bytes: within a DNS name's 253
    assert (await get(host, allowed_hosts=SITE)).status == 200


async def test_a_request_without_host_is_refused() -> None:
    assert_refused(await get(None, allowed_hosts=SITE))


@pytest.mark.parametrize("second", [b"example.com", b"evil.com"])
async def test_two_host_headers_are_refused_even_when_both_are_allowed(second: bytes) -> None:
    scope = http_scope("GET", "/")
    scope["headers"] = [(b"host", b"example.com"), (b"accept", b"*/*"), (b"host", second)]
    response = await request(wrapped(allowed_hosts=SITE), scope=scope)
    assert_refused(response)


@pytest.mark.parametrize(
    ("host", "status"),
    [
        (b"[::1]", 200),
        (b"[::1]:8000", 200),
        (b"[0:0:0:0:0:0:0:1]", 200),  # the same address, written out
        (b"[::2]", 400),
        (b"[2001:db8::1]:443", 200),
        (b"[2001:DB8:0::1]", 200),
        (b"10.0.0.5", 200),
        (b"10.0.0.5:8000", 200),
        (b"10.0.0.6", 400),
        (b"[v1.fe80::a+en1]", 200),  # an RFC 3986 IPvFuture literal
        (b"[V1.FE80::A+EN1]:8080", 200),
        (b"[v2.fe80::a+en1]", 400),
    ],
)
async def test_ip_literals_match_as_addresses(host: bytes, status: int) -> None:
    allowed = ["[::1]", "[2001:db8::1]", "10.0.0.5", "[v1.fe80::a+en1]"]
    response = await get(host, allowed_hosts=allowed)
    assert response.status == status


async def test_the_refusal_is_recorded_as_a_decision_with_its_reason() -> None:
    reasons = {}
    for name, headers in {
        "not_allowed": [(b"host", b"evil.com")],
        "malformed": [(b"host", b"evil.com@example.com")],
        "missing": [],
        "repeated": [(b"host", b"example.com"), (b"host", b"example.com")],
    }.items():
        holder: dict[str, Any] = {}
        scope = http_scope("GET", "/", **{DECISION_KEY: holder})
        scope["headers"] = headers
        await request(wrapped(allowed_hosts=SITE), scope=scope)
        reasons[name] = holder
    for name, holder in reasons.items():
        assert holder == {DECISION_FIELD: "host_refused", DETAILS: {"trusted_host.reason": name}}


async def test_an_allowed_request_gets_the_servers_receive_send_and_scope() -> None:
    middleware = TrustedHostMiddleware(enforce(app), allowed_hosts=SITE)
    seen: dict[str, Any] = {}

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.update(scope=scope, receive=receive, send=send)

    async def receive() -> Message:
        raise AssertionError("not called")

    async def send(message: Message) -> None:
        raise AssertionError("not called")

    middleware.app = inner
    scope = http_scope("GET", "/", headers={"host": "example.com"})
    await middleware(scope, receive, send)
    assert seen == {"scope": scope, "receive": receive, "send": send}
    assert seen["scope"] is scope


@pytest.mark.parametrize("host", [None, b"", b"evil.com@x", b"anything.example"])
async def test_by_default_every_request_passes_unchecked(host: bytes | None) -> None:
    response = await request(enforce(TrustedHostMiddleware(enforce(app))), scope=_scope(host))
    assert response.status == 200


@pytest.mark.parametrize("allowed", [None, "*", ["example.com", "*"]])
async def test_a_star_anywhere_allows_every_host(allowed: Any) -> None:
    response = await request(wrapped(allowed_hosts=allowed), scope=_scope(b"evil.com"))
    assert response.status == 200


def _scope(host: bytes | None, path: str = "/", **extra: Any) -> Scope:
    scope = http_scope("GET", path, **extra)
    scope["headers"] = [] if host is None else [(b"host", host)]
    return scope


async def test_a_comma_separated_str_lists_hosts() -> None:
    options = {"allowed_hosts": "example.com, *.example.org"}
    assert (await get(b"example.com", **options)).status == 200
    assert (await get(b"a.example.org", **options)).status == 200
    assert_refused(await get(b"example.org", **options))


# www redirect


@pytest.mark.parametrize(
    ("scheme", "host", "path", "location"),
    [
        ("http", b"example.com", "/", "http://www.example.com/"),
        ("https", b"example.com", "/a/b?x=1&y=2", "https://www.example.com/a/b?x=1&y=2"),
        ("https", b"Example.com:8443", "/p", "https://www.Example.com:8443/p"),
        (
            "http",
            b"example.com",
            "/caf\u00e9 bar?q=a b",
            "http://www.example.com/caf%C3%A9%20bar?q=a%20b",
        ),
    ],
)
async def test_www_redirect_keeps_scheme_port_path_and_query(
    scheme: str, host: bytes, path: str, location: str
) -> None:
    holder: dict[str, Any] = {}
    scope = _scope(host, path, scheme=scheme, **{DECISION_KEY: holder})
    response = await request(wrapped(allowed_hosts=["www.example.com"]), scope=scope)
    assert response.status == 307
    assert response.header("location") == location
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert calls == []
    assert holder == {DECISION_FIELD: "www_redirect", DETAILS: {"redirect.status": 307}}


async def test_www_redirect_escapes_what_a_location_cannot_carry() -> None:
    scope = _scope(b"example.com", "/")
    scope["raw_path"] = b"/a b/\xff<x>\"'"
    scope["query_string"] = b"q=\r\n<b>&r=%41"
    response = await request(wrapped(allowed_hosts=["www.example.com"]), scope=scope)
    assert response.header("location") == (
        "http://www.example.com/a%20b/%FF%3Cx%3E%22'?q=%0D%0A%3Cb%3E&r=%41"
    )


async def test_without_raw_path_the_location_escapes_the_decoded_path() -> None:
    scope = _scope(b"example.com", "/100% sure")
    del scope["raw_path"]
    response = await request(wrapped(allowed_hosts=["www.example.com"]), scope=scope)
    assert response.header("location") == "http://www.example.com/100%25%20sure"


async def test_www_redirect_off_refuses_instead() -> None:
    response = await get(b"example.com", allowed_hosts=["www.example.com"], www_redirect=False)
    assert_refused(response)


async def test_no_www_redirect_when_the_host_itself_is_allowed_or_only_a_wildcard_covers_www() -> (
    None
):
    assert (
        await get(b"example.com", allowed_hosts=["example.com", "www.example.com"])
    ).status == 200
    assert_refused(await get(b"example.com", allowed_hosts=["*.example.com"]))
    assert_refused(await get(b"example.com@x", allowed_hosts=["www.example.com"]))


# excluded paths


@pytest.mark.parametrize("host", [b"10.0.0.7:8000", None, b"bad host"])
async def test_excluded_paths_pass_whatever_the_host(host: bytes | None) -> None:
    options = {"allowed_hosts": SITE, "exclude_paths": ["/health"]}
    assert (await get(host, "/health", **options)).status == 200
    assert (await get(host, "/health/ready", **options)).status == 200
    assert_refused(await get(host, "/healthz", **options))


# websockets


async def test_an_allowed_websocket_is_accepted() -> None:
    session = await websocket(wrapped(allowed_hosts=SITE), headers={"host": "api.example.com"})
    assert session.accepted


async def test_a_refused_websocket_gets_the_400_denial_when_the_server_offers_it() -> None:
    session = await websocket(
        wrapped(allowed_hosts=SITE), headers={"host": "evil.com"}, extensions=DENIAL
    )
    assert not session.accepted
    assert session.denial is not None
    assert session.denial.status == 400
    assert session.denial.text == "Invalid host header"
    assert calls == []


async def test_a_refused_websocket_is_closed_before_accept_without_the_extension() -> None:
    session = await websocket(wrapped(allowed_hosts=SITE), headers={"host": "evil.com"})
    assert not session.accepted
    assert session.close_code == 1008
    assert calls == []


async def test_a_websocket_to_the_bare_domain_is_denied_with_a_redirect_to_www() -> None:
    scope = websocket_scope("/chat", scheme="wss", extensions=DENIAL)
    scope["headers"] = [(b"host", b"example.com")]
    session = await websocket(wrapped(allowed_hosts=["www.example.com"]), scope=scope)
    assert session.denial is not None
    assert session.denial.status == 307
    assert session.denial.header("location") == "wss://www.example.com/chat"


async def test_lifespan_passes_through() -> None:
    await run_lifespan(wrapped(allowed_hosts=SITE))


# proxy headers


async def test_the_host_a_trusted_proxy_forwarded_is_the_one_checked() -> None:
    stack = enforce(
        ProxyHeadersMiddleware(
            TrustedHostMiddleware(enforce(app), allowed_hosts=["api.example.com"]),
            trusted_proxies=["10.0.0.1"],
        )
    )
    forwarded = {"host": "10.0.0.9:8000", "x-forwarded-host": "api.example.com"}
    trusted = await request(stack, headers=forwarded, client=("10.0.0.1", 4000))
    assert trusted.status == 200
    untrusted = await request(stack, headers=forwarded, client=("192.0.2.1", 4000))
    assert untrusted.status == 400  # the forwarded host came from the client itself


# options


@pytest.mark.parametrize(
    "entry",
    [
        "example.*",
        "*example.com",
        "*.*.example.com",
        "ex*mple.com",
        "**.example.com",
        "*.",
        "",
        "example.com:8000",
        "*.example.com:8000",
        "http://example.com",
        "example.com/",
        "exa mple.com",
        "*.[::1]",
        "[::1]:80",
        "[zz]",
    ],
)
def test_a_bad_entry_fails_at_start_up_naming_the_option(entry: str) -> None:
    with pytest.raises(ValueError, match=r"^allowed_hosts: "):
        TrustedHostMiddleware(app, allowed_hosts=["ok.example.com", entry])


def test_a_unicode_entry_is_refused_with_its_ascii_form() -> None:
    with pytest.raises(ValueError, match=r"^allowed_hosts: .*'xn--bcher-kva\.example'"):
        TrustedHostMiddleware(app, allowed_hosts=["bücher.example"])
    with pytest.raises(ValueError, match=r"^allowed_hosts: .*its ASCII \(xn--\) form"):
        TrustedHostMiddleware(app, allowed_hosts=["é" * 64 + ".example"])  # no IDNA form


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"allowed_hosts": 5}, TypeError),
        ({"allowed_hosts": [b"example.com"]}, TypeError),
        ({"www_redirect": "yes"}, TypeError),
        ({"exclude_paths": ["health"]}, ValueError),
    ],
)
def test_bad_option_types_fail_at_start_up(options: dict[str, Any], error: type[Exception]) -> None:
    name = next(iter(options))
    with pytest.raises(error, match=rf"^{name}"):
        TrustedHostMiddleware(app, **options)


def test_the_entries_are_kept_in_lowercase_as_given() -> None:
    middleware = TrustedHostMiddleware(app, allowed_hosts=["Example.com", "*.API.example.com"])
    assert middleware.allowed_hosts == ["example.com", "*.api.example.com"]
    assert TrustedHostMiddleware(app).allowed_hosts == ["*"]
    assert middleware.www_redirect is True


async def test_many_distinct_hosts_keep_being_judged_right() -> None:
    # More distinct Host values than the verdict cache holds: it starts over, and the
    # verdicts stay right before and after.
    middleware = TrustedHostMiddleware(app, allowed_hosts=SITE)
    for index in range(1100):
        host = b"h%d.example.com" % index if index % 2 else b"h%d.evil.com" % index
        response = await request(middleware, scope=_scope(host))
        assert response.status == (200 if index % 2 else 400)
    # Seen just now: judged from the cache, the same way.
    assert (await request(middleware, scope=_scope(b"h1099.example.com"))).status == 200
    assert (await request(middleware, scope=_scope(b"h1098.evil.com"))).status == 400


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode)))
def test_any_host_bytes_get_the_app_only_when_valid_and_allowed(host: bytes) -> None:
    parsed = parse_host(host)
    name = None if parsed is None else parsed[0].lower()
    allowed = name is not None and (
        name in ("example.com", "::1") or (name.endswith(".example.com") and name[0] != ".")
    )

    async def main() -> None:
        calls.clear()
        response = await get(host, allowed_hosts=["example.com", "*.example.com", "[::1]"])
        assert response.status == (200 if allowed else 400)
        assert len(calls) == (1 if allowed else 0)

    anyio.run(main)
