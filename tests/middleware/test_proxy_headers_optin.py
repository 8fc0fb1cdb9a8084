"""ProxyHeadersMiddleware's opt-in families: X-Forwarded-Prefix, X-Real-IP and
CF-Connecting-IP, read only from trusted peers."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgikit.contract import enforce
from asgikit.middleware.proxy_headers import PEER_SCOPE_KEY, ProxyHeadersMiddleware
from asgikit.middleware.proxy_headers.forwarded import parse_prefix
from asgikit.testing import http_scope, request, websocket
from asgikit.types import Receive, Scope, Send

pytestmark = pytest.mark.anyio

PROXY = ("127.0.0.1", 50000)
STRANGER = ("198.51.100.9", 40000)
PREFIXED = ["x-forwarded", "x-forwarded-prefix"]


async def scope_seen(
    fields: Any = (),
    *,
    path: str = "/items",
    root_path: str = "",
    client: tuple[str, int] = PROXY,
    **options: Any,
) -> Scope:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    served = enforce(ProxyHeadersMiddleware(enforce(app), **options))
    scope = http_scope("GET", path, headers=fields, client=client, root_path=root_path)
    response = await request(served, scope=scope)
    assert response.status == 200
    return seen[0]


async def test_a_trusted_prefix_goes_in_front_of_root_path_and_path() -> None:
    scope = await scope_seen([("x-forwarded-prefix", "/api")], headers=PREFIXED)
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == (
        "/api",
        "/api/items",
        b"/api/items",
    )
    assert scope[PEER_SCOPE_KEY] == PROXY


async def test_the_prefix_comes_before_the_servers_own_root_path() -> None:
    scope = await scope_seen(
        [("x-forwarded-prefix", "/edge/")], headers=PREFIXED, path="/app/items", root_path="/app"
    )
    assert (scope["root_path"], scope["path"]) == ("/edge/app", "/edge/app/items")


async def test_an_escaped_prefix_is_decoded_in_path_and_kept_raw_in_raw_path() -> None:
    scope = await scope_seen([("x-forwarded-prefix", "/my%20app")], headers=PREFIXED)
    assert (scope["root_path"], scope["raw_path"]) == ("/my app", b"/my%20app/items")


async def test_the_prefix_is_read_only_when_asked_for() -> None:
    scope = await scope_seen([("x-forwarded-prefix", "/api")])
    assert (scope["root_path"], scope["path"]) == ("", "/items")


async def test_an_untrusted_peer_cannot_set_a_prefix() -> None:
    scope = await scope_seen([("x-forwarded-prefix", "/api")], headers=PREFIXED, client=STRANGER)
    assert (scope["root_path"], scope["path"]) == ("", "/items")


@pytest.mark.parametrize(
    "value",
    [
        "api",  # not absolute
        "//evil.example",  # a scheme-relative URL in every link built from it
        "/a//b",
        "/a/../b",
        "/./a",
        "/a?x=1",
        "/a#x",
        "/a\\b",
        "/a%2Fb",  # an escaped slash would add a segment the proxy never had
        "/a%00b",
        "/a%0d%0aSet-Cookie:x",
        "/%ff",  # not UTF-8
        "/%5C%5Cevil.example",  # "/\\evil.example": browsers read "//evil.example"
        "/a%3Fx=1",
        "/a%23x",
        "/" + "a" * 600,
        "/",
        "",
    ],
)
async def test_a_malformed_prefix_is_ignored(value: str) -> None:
    assert parse_prefix(value.encode("latin-1")) is None
    scope = await scope_seen([("x-forwarded-prefix", value)], headers=PREFIXED)
    assert (scope["root_path"], scope["path"]) == ("", "/items")


async def test_with_several_prefixes_the_trusted_hops_one_is_used() -> None:
    # The client sent its own prefix; the proxy appended its address and its prefix.
    fields = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-prefix", "/forged, /api"),
    ]
    scope = await scope_seen(fields, headers=PREFIXED)
    assert (scope["client"][0], scope["root_path"]) == ("203.0.113.7", "/api")


async def test_starlette_routes_under_the_forwarded_prefix_and_builds_urls_with_it() -> None:
    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.url_for("item")))

    app = Starlette(routes=[Route("/items", item, name="item")])
    served = ProxyHeadersMiddleware(app, headers=PREFIXED)
    response = await request(
        served,
        "GET",
        "/items",
        headers={"x-forwarded-prefix": "/api", "x-forwarded-proto": "https", "host": "a.example"},
    )
    assert response.status == 200
    assert response.text == "https://a.example/api/items"


@pytest.mark.parametrize("family", ["x-real-ip", "cf-connecting-ip"])
async def test_a_single_address_header_names_the_client(family: str) -> None:
    scope = await scope_seen([(family, "203.0.113.9")], headers=[family])
    assert scope["client"] == ("203.0.113.9", 0)
    assert scope[PEER_SCOPE_KEY] == PROXY


async def test_a_single_address_header_wins_over_a_trusted_chain_and_keeps_its_scheme() -> None:
    fields = [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-real-ip", "[2001:db8::7]:4711"),
    ]
    scope = await scope_seen(fields, headers=["x-forwarded", "x-real-ip"])
    assert (scope["client"], scope["scheme"]) == (("2001:db8::7", 4711), "https")


@pytest.mark.parametrize(
    "fields",
    [
        [("x-real-ip", "203.0.113.9, 198.51.100.1")],  # a list: not what a proxy sets
        [("x-real-ip", "203.0.113.9"), ("x-real-ip", "198.51.100.1")],
        [("x-real-ip", "not-an-address")],
        [("x-real-ip", "203.0.113.9"), ("cf-connecting-ip", "198.51.100.1")],  # disagree
    ],
)
async def test_a_single_address_that_is_not_one_address_is_ignored(fields: Any) -> None:
    scope = await scope_seen(fields, headers=["x-real-ip", "cf-connecting-ip"])
    assert scope["client"] == PROXY


async def test_two_single_address_headers_that_agree_are_used() -> None:
    fields = [("x-real-ip", "203.0.113.9"), ("cf-connecting-ip", "203.0.113.9")]
    scope = await scope_seen(fields, headers=["x-real-ip", "cf-connecting-ip"])
    assert scope["client"] == ("203.0.113.9", 0)


async def test_single_address_headers_are_ignored_unless_asked_for_or_untrusted() -> None:
    assert (await scope_seen([("x-real-ip", "203.0.113.9")]))["client"] == PROXY
    stranger = await scope_seen(
        [("x-real-ip", "203.0.113.9")], headers=["x-real-ip"], client=STRANGER
    )
    assert stranger["client"] == STRANGER


async def test_websockets_get_the_prefix_too() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})

    served = enforce(ProxyHeadersMiddleware(enforce(app), headers=PREFIXED))
    await websocket(served, "/ws", headers={"x-forwarded-prefix": "/api"})
    assert (seen[0]["root_path"], seen[0]["path"]) == ("/api", "/api/ws")


def test_an_unknown_family_names_the_families_there_are() -> None:
    with pytest.raises(ValueError, match="x-forwarded-prefix"):
        ProxyHeadersMiddleware(lambda *a: None, headers=["x-forwarded-prefixes"])  # type: ignore[arg-type, return-value]


async def test_a_scope_without_raw_path_gets_none_made_up() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    scope = http_scope("GET", "/items", headers={"x-forwarded-prefix": "/api"}, client=PROXY)
    del scope["raw_path"]
    await request(enforce(ProxyHeadersMiddleware(enforce(app), headers=PREFIXED)), scope=scope)
    assert seen[0]["path"] == "/api/items" and "raw_path" not in seen[0]


async def test_a_single_address_header_from_beyond_an_untrusted_hop_is_ignored() -> None:
    # nginx (trusted) appended the address that connected to it, an untrusted one, and
    # passed on a CF-Connecting-IP that this client forged.
    fields = [("x-forwarded-for", "198.51.100.23"), ("cf-connecting-ip", "1.2.3.4")]
    scope = await scope_seen(fields, headers=["x-forwarded", "cf-connecting-ip"])
    assert scope["client"] == ("198.51.100.23", 0)


async def test_a_single_address_header_behind_trusted_hops_only_is_used() -> None:
    # Every hop of the chain is one of ours (a load balancer): the edge's field counts.
    fields = [("x-forwarded-for", "127.0.0.1"), ("cf-connecting-ip", "203.0.113.9")]
    scope = await scope_seen(fields, headers=["x-forwarded", "cf-connecting-ip"])
    assert scope["client"] == ("203.0.113.9", 0)
