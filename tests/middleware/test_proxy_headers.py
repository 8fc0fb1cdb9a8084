"""ProxyHeadersMiddleware: trust, chain walking, scheme and host, bounds, the contract."""

from __future__ import annotations

import ipaddress
import tracemalloc
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgikit.contract import enforce
from asgikit.hosts import parse_host
from asgikit.middleware.proxy_headers import PEER_SCOPE_KEY, ProxyHeadersMiddleware
from asgikit.middleware.proxy_headers.forwarded import MAX_BYTES, MAX_HOPS
from asgikit.testing import (
    ClientDisconnected,
    http_scope,
    lifespan,
    request,
    run_lifespan,
    websocket,
)
from asgikit.types import Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

PROXY = ("127.0.0.1", 50000)
STRANGER = ("198.51.100.9", 40000)
NETWORK = "127.0.0.1, ::1, 10.0.0.0/8, 2001:db8:1::/48"


class Recorder:
    """An app that keeps the scope it was called with, then answers 200 (or accepts)."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    @property
    def scope(self) -> Scope:
        assert len(self.scopes) == 1, f"the app was called {len(self.scopes)} times"
        return self.scopes[0]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": scope["scheme"]})
            await send({"type": "websocket.close", "code": 1000})
        else:
            await receive()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})


async def call(
    fields: Any = (),
    /,
    *,
    client: tuple[str, int] | None = PROXY,
    checked: bool = True,
    **options: Any,
) -> Scope:
    """One request through the middleware (inside two contract checkers); the app's scope."""
    recorder = Recorder()
    middleware = ProxyHeadersMiddleware(enforce(recorder) if checked else recorder, **options)
    app = enforce(middleware) if checked else middleware
    response = await request(app, headers=fields, client=client)
    assert response.status == 200
    return recorder.scope


def xff(value: str, **more: str) -> list[tuple[str, str]]:
    return [("x-forwarded-for", value), *((f"x-forwarded-{k}", v) for k, v in more.items())]


# ---- options ----------------------------------------------------------------------------


def test_options_are_validated_at_start_up() -> None:
    with pytest.raises(ValueError, match=r"'proxy\.internal' is not an IP address"):
        ProxyHeadersMiddleware(Recorder(), trusted_proxies="10.0.0.1, proxy.internal")
    with pytest.raises(ValueError, match=r"did you mean '10\.0\.0\.0/8'"):
        ProxyHeadersMiddleware(Recorder(), trusted_proxies=["10.0.0.1/8"])
    with pytest.raises(ValueError, match="unknown header family 'x-forwarded-for'"):
        ProxyHeadersMiddleware(Recorder(), headers=("forwarded", "x-forwarded-for"))
    with pytest.raises(ValueError, match="at least one"):
        ProxyHeadersMiddleware(Recorder(), headers=())
    with pytest.raises(TypeError, match="headers entries must be str"):
        ProxyHeadersMiddleware(Recorder(), headers=[b"forwarded"])  # type: ignore[list-item]


async def test_headers_option_accepts_a_comma_separated_str_in_any_case() -> None:
    scope = await call(
        [("forwarded", "for=192.0.2.1;proto=https"), ("x-forwarded-for", "192.0.2.1")],
        headers=" Forwarded , X-Forwarded",
    )
    assert scope["client"] == ("192.0.2.1", 0) and scope["scheme"] == "https"
    scope = await call(xff("192.0.2.2"), headers="forwarded")
    assert scope["client"] == PROXY


# ---- untrusted peers --------------------------------------------------------------------


async def test_untrusted_peer_changes_nothing_and_gets_the_same_objects() -> None:
    recorder = Recorder()
    middleware = ProxyHeadersMiddleware(recorder)
    scope = http_scope(
        headers=[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=203.0.113.8;proto=https;host=evil.example"),
        ],
        client=STRANGER,
    )
    before = dict(scope)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        pass

    await middleware(scope, receive, send)
    assert recorder.scope is scope and scope == before
    assert PEER_SCOPE_KEY not in scope


async def test_untrusted_peer_inside_the_checkers() -> None:
    scope = await call(xff("203.0.113.7", proto="https", host="evil.example"), client=STRANGER)
    assert scope["client"] == STRANGER and scope["scheme"] == "http"
    assert scope["server"] == ("testserver", 80) and PEER_SCOPE_KEY not in scope


@settings(max_examples=75, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.one_of(st.ip_addresses().map(str), st.text(max_size=20)), max_size=6),
    st.sampled_from(["198.51.100.9", "10.0.0.1", "::2", "2001:db8:2::1"]),
)
def test_spoofing_from_an_untrusted_peer_never_changes_the_client(
    anyio_backend: str, hops: list[str], peer: str
) -> None:
    value = ", ".join(hops).encode("utf-8")

    async def main() -> None:
        scope = await call(
            [(b"x-forwarded-for", value), (b"forwarded", b"for=" + value)],
            client=(peer, 1234),
            trusted_proxies="127.0.0.1, ::1",
        )
        assert scope["client"] == (peer, 1234)
        assert PEER_SCOPE_KEY not in scope

    anyio.run(main, backend=anyio_backend)


async def test_unix_socket_peer_is_trusted_only_if_configured() -> None:
    headers = xff("203.0.113.7", proto="https")
    scope = await call(headers, client=None)
    assert scope["client"] is None and scope["scheme"] == "http"
    scope = await call(headers, client=None, trusted_proxies="unix")
    assert scope["client"] == ("203.0.113.7", 0) and scope["scheme"] == "https"
    assert scope[PEER_SCOPE_KEY] is None
    scope = await call(headers, client=None, trusted_proxies="*")
    assert scope["client"] == ("203.0.113.7", 0)


async def test_a_peer_that_is_not_an_ip_address_is_untrusted_unless_star() -> None:
    headers = xff("203.0.113.7")
    assert (await call(headers, client=("/run/app.sock", 0)))["client"] == ("/run/app.sock", 0)
    long_name = ("x" * 100, 0)
    assert (await call(headers, client=long_name))["client"] == long_name
    not_ascii = ("\u0661\u0662\u0667.0.0.1", 0)  # Arabic-Indic digits
    assert (await call(headers, client=not_ascii))["client"] == not_ascii
    scope = await call(headers, client=("/run/app.sock", 0), trusted_proxies="*")
    assert scope["client"] == ("203.0.113.7", 0)
    scope = await call(headers, client=long_name, trusted_proxies="*")
    assert scope["client"] == ("203.0.113.7", 0)


async def test_ipv4_mapped_peer_matches_an_ipv4_network() -> None:
    scope = await call(xff("203.0.113.7"), client=("::ffff:10.1.2.3", 5), trusted_proxies=NETWORK)
    assert scope["client"] == ("203.0.113.7", 0)
    scope = await call(xff("203.0.113.7"), client=("::ffff:11.1.2.3", 5), trusted_proxies=NETWORK)
    assert scope["client"] == ("::ffff:11.1.2.3", 5)


# ---- X-Forwarded-For --------------------------------------------------------------------


async def test_trusted_peer_x_forwarded_for_sets_client_and_keeps_the_peer() -> None:
    scope = await call(xff("203.0.113.7"))
    assert scope["client"] == ("203.0.113.7", 0)
    assert scope[PEER_SCOPE_KEY] == PROXY
    assert scope["scheme"] == "http" and scope["server"] == ("testserver", 80)


@pytest.mark.parametrize(
    ("chain", "client"),
    [
        # Trusted hops on the right are skipped; the first untrusted one is the client.
        ("203.0.113.7, 10.0.0.2", ("203.0.113.7", 0)),
        ("198.51.100.1, 203.0.113.7, 10.0.0.2, 10.0.0.3", ("203.0.113.7", 0)),
        ("203.0.113.7, 2001:db8:1::5, [::1]:8080", ("203.0.113.7", 0)),
        ("2001:db8:2::7, 10.0.0.2", ("2001:db8:2::7", 0)),
        ("[2001:DB8:2::7]:4711", ("2001:db8:2::7", 4711)),
        ("203.0.113.7:4711, 10.0.0.2", ("203.0.113.7", 4711)),
        # Every hop trusted: the leftmost.
        ("10.0.0.1:9, 10.0.0.2", ("10.0.0.1", 9)),
        # The walk stops at what is not an address: the last trusted hop is the client.
        ("203.0.113.7, unknown, 10.0.0.2", ("10.0.0.2", 0)),
        ("203.0.113.7, _hidden, 10.0.0.2:81", ("10.0.0.2", 81)),
        ("203.0.113.7, evil.example, 10.0.0.2", ("10.0.0.2", 0)),
        ("203.0.113.7, 999.0.0.1, 10.0.0.2", ("10.0.0.2", 0)),
        # ...or the peer itself, when the rightmost hop is not an address.
        ("203.0.113.7, unknown", PROXY),
        ("203.0.113.7, fe80::1%eth0", PROXY),
        # Empty elements are not hops.
        (" , 203.0.113.7 ,, 10.0.0.2,", ("203.0.113.7", 0)),
    ],
)
async def test_x_forwarded_for_chain(chain: str, client: tuple[str, int]) -> None:
    scope = await call(xff(chain), trusted_proxies=NETWORK)
    assert scope["client"] == client


async def test_repeated_x_forwarded_for_fields_form_one_chain() -> None:
    headers = [("x-forwarded-for", "203.0.113.7"), ("x-forwarded-for", "10.0.0.2, 10.0.0.3")]
    scope = await call(headers, trusted_proxies=NETWORK)
    assert scope["client"] == ("203.0.113.7", 0)


async def test_default_trust_is_loopback_only() -> None:
    scope = await call(xff("203.0.113.7, 10.0.0.2"))
    assert scope["client"] == ("10.0.0.2", 0)
    scope = await call(xff("203.0.113.7, ::1"), client=("::1", 7))
    assert scope["client"] == ("203.0.113.7", 0)


async def test_star_trusts_every_peer_and_hop() -> None:
    scope = await call(xff("192.0.2.1, 203.0.113.7"), client=STRANGER, trusted_proxies="*")
    assert scope["client"] == ("192.0.2.1", 0)
    assert scope[PEER_SCOPE_KEY] == STRANGER


async def test_chain_is_bounded_by_hops() -> None:
    trusted = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(MAX_HOPS + 8)]
    scope = await call(xff(", ".join(["203.0.113.7", *trusted])), trusted_proxies=NETWORK)
    # Beyond MAX_HOPS counts as malformed: the walk stops at the last hop examined.
    assert scope["client"] == (trusted[-MAX_HOPS], 0)
    exact = trusted[: MAX_HOPS - 1]
    scope = await call(xff(", ".join(["203.0.113.7", *exact])), trusted_proxies=NETWORK)
    assert scope["client"] == ("203.0.113.7", 0)


async def test_chain_is_bounded_by_bytes_and_reads_the_right_end() -> None:
    spam = ", ".join(["garbage" * 10] * 200)
    assert len(spam) > MAX_BYTES
    scope = await call(xff(f"{spam}, 203.0.113.7, 10.0.0.2"), trusted_proxies=NETWORK)
    assert scope["client"] == ("203.0.113.7", 0)
    many = ", ".join(["10.0.0.9"] * 1000)
    scope = await call(xff(many), trusted_proxies=NETWORK)
    assert scope["client"] == ("10.0.0.9", 0)


# ---- X-Forwarded-Proto ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proto", "scheme"),
    [("https", "https"), ("HTTPS", "https"), ("wss", "https"), ("http", "http"), ("ftp", "http")],
)
async def test_x_forwarded_proto_sets_the_scheme(proto: str, scheme: str) -> None:
    scope = await call(xff("203.0.113.7", proto=proto))
    assert scope["scheme"] == scheme


async def test_x_forwarded_proto_alone_sets_the_scheme_and_keeps_the_client() -> None:
    scope = await call([("x-forwarded-proto", "https")])
    assert scope["scheme"] == "https" and scope["client"] == PROXY
    assert scope[PEER_SCOPE_KEY] == PROXY


async def test_http_scheme_from_the_server_can_be_corrected_to_http() -> None:
    recorder = Recorder()
    app = enforce(ProxyHeadersMiddleware(enforce(recorder)))
    await request(app, headers=[("x-forwarded-proto", "http")], scheme="https")
    assert recorder.scope["scheme"] == "http"


@pytest.mark.parametrize(
    ("chain", "protos", "scheme"),
    [
        # Counts agree: the value at the hop where the walk ended.
        ("203.0.113.7, 10.0.0.2", "https, http", "https"),
        ("203.0.113.7, 10.0.0.2", "http, https", "http"),
        ("10.0.0.1, 10.0.0.2", "https, http", "https"),
        ("203.0.113.7, unknown, 10.0.0.2", "http, https, http", "https"),
        # Counts differ: the rightmost, what the nearest proxy set.
        ("203.0.113.7, 10.0.0.2", "http", "http"),
        ("203.0.113.7, 10.0.0.2", "http, http, https", "https"),
        ("198.51.100.1, 203.0.113.7, 10.0.0.2", "https, http", "http"),
        (" , ", "https", "https"),
    ],
)
async def test_x_forwarded_proto_position(chain: str, protos: str, scheme: str) -> None:
    scope = await call(xff(chain, proto=protos), trusted_proxies=NETWORK)
    assert scope["scheme"] == scheme


async def test_x_forwarded_proto_beyond_the_hop_bound_uses_the_rightmost() -> None:
    count = MAX_HOPS + 3
    chain = ", ".join(["10.0.0.1"] * count)
    protos = ", ".join(["https"] * (count - 1) + ["http"])
    scope = await call(xff(chain, proto=protos), trusted_proxies=NETWORK)
    assert scope["scheme"] == "http" and scope["client"] == ("10.0.0.1", 0)


async def test_empty_x_forwarded_headers_change_nothing() -> None:
    recorder = Recorder()
    middleware = ProxyHeadersMiddleware(recorder)
    scope = http_scope(headers=[("x-forwarded-proto", " , "), ("x-forwarded-host", "")])

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        pass

    await middleware(scope, receive, send)
    assert recorder.scope is scope


# ---- X-Forwarded-Host / -Port -----------------------------------------------------------


@pytest.mark.parametrize(
    ("more", "server", "host"),
    [
        ({"host": "example.com"}, ("example.com", 80), b"example.com"),
        ({"host": "example.com", "proto": "https"}, ("example.com", 443), b"example.com"),
        ({"host": "example.com:8443"}, ("example.com", 8443), b"example.com:8443"),
        ({"host": "example.com", "port": "8443"}, ("example.com", 8443), b"example.com:8443"),
        (
            {"host": "example.com", "port": "443", "proto": "https"},
            ("example.com", 443),
            b"example.com",
        ),
        ({"host": "example.com:81", "port": "8443"}, ("example.com", 81), b"example.com:81"),
        ({"host": "example.com", "port": "99999"}, ("example.com", 80), b"example.com"),
        ({"host": "[2001:db8::1]:8080"}, ("2001:db8::1", 8080), b"[2001:db8::1]:8080"),
        # Positional when the counts agree, else the rightmost.
        ({"host": "client.example, proxy.internal"}, ("client.example", 80), b"client.example"),
        ({"host": "a.example, b.example, c.example"}, ("c.example", 80), b"c.example"),
    ],
)
async def test_x_forwarded_host_rewrites_host_and_server(
    more: dict[str, str], server: tuple[str, int], host: bytes
) -> None:
    scope = await call(xff("203.0.113.7, 10.0.0.2", **more), trusted_proxies=NETWORK)
    assert scope["server"] == server
    assert [v for k, v in scope["headers"] if k == b"host"] == [host]


@pytest.mark.parametrize(
    "bad_host",
    ["exa mple.com", "example.com/x", "user@example.com", "example.com:0", "évil.com", "a\tb"],
)
async def test_invalid_forwarded_host_is_ignored(bad_host: str) -> None:
    headers = [("x-forwarded-host", bad_host.encode("utf-8")), ("x-forwarded-proto", "https")]
    scope = await call(headers)
    assert scope["server"] == ("testserver", 80)
    assert [v for k, v in scope["headers"] if k == b"host"] == [b"testserver"]
    assert scope["scheme"] == "https"


async def test_x_forwarded_port_without_a_host_is_ignored() -> None:
    recorder = Recorder()
    await ProxyHeadersMiddleware(recorder)(
        http_scope(headers=[("x-forwarded-port", "8443")]), _receive_nothing, _ignore
    )
    assert PEER_SCOPE_KEY not in recorder.scope and recorder.scope["server"] == ("testserver", 80)


async def test_host_replacement_builds_a_new_list_and_collapses_repeats() -> None:
    recorder = Recorder()
    headers = [
        (b"host", b"internal:8000"),
        (b"cookie", b"a=1"),
        (b"x-forwarded-host", b"example.com"),
        (b"host", b"other"),
        (b"cookie", b"b=2"),
    ]
    original = list(headers)
    scope = http_scope(headers=headers)
    await ProxyHeadersMiddleware(recorder)(scope, _receive_nothing, _ignore)
    seen = recorder.scope
    assert seen["headers"] == [
        (b"host", b"example.com"),
        (b"cookie", b"a=1"),
        (b"x-forwarded-host", b"example.com"),
        (b"cookie", b"b=2"),
    ]
    assert scope["headers"] == original and seen["headers"] is not scope["headers"]


async def test_same_host_and_server_keep_the_header_list() -> None:
    recorder = Recorder()
    scope = http_scope(
        headers=[("host", "example.com"), ("x-forwarded-host", "example.com")],
        server=("example.com", 80),
    )
    await ProxyHeadersMiddleware(recorder)(scope, _receive_nothing, _ignore)
    assert recorder.scope is scope


async def test_x_forwarded_host_is_added_when_the_scope_has_no_host_header() -> None:
    recorder = Recorder()
    scope = http_scope(headers=[("x-forwarded-host", "example.com")])
    scope["headers"] = [field for field in scope["headers"] if field[0] != b"host"]
    await ProxyHeadersMiddleware(recorder)(scope, _receive_nothing, _ignore)
    assert (b"host", b"example.com") in recorder.scope["headers"]


async def _receive_nothing() -> Message:
    return {"type": "http.request", "body": b""}


async def _ignore(message: Message) -> None:
    pass


# ---- Forwarded --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "client", "scheme", "server"),
    [
        ("for=203.0.113.7", ("203.0.113.7", 0), "http", ("testserver", 80)),
        (
            'for="[2001:db8:cafe::17]:4711";proto=https;host="example.com"',
            ("2001:db8:cafe::17", 4711),
            "https",
            ("example.com", 443),
        ),
        (
            "for=203.0.113.7;proto=http;by=10.0.0.2, for=10.0.0.2;proto=https",
            ("203.0.113.7", 0),
            "http",
            ("testserver", 80),
        ),
        (
            "for=198.51.100.1, for=203.0.113.7;host=a.example, for=10.0.0.2;host=b.example",
            ("203.0.113.7", 0),
            "http",
            ("a.example", 80),
        ),
        # Every hop trusted: the leftmost element, and its proto and host.
        ('for=10.0.0.1;proto=https, for="[::1]"', ("10.0.0.1", 0), "https", ("testserver", 80)),
        # Obfuscated or unknown: the last trusted hop is the client; proto/host from there.
        (
            "for=_hidden;proto=https;host=example.com, for=10.0.0.2",
            ("10.0.0.2", 0),
            "https",
            ("example.com", 443),
        ),
        ("for=unknown;proto=https", PROXY, "https", ("testserver", 80)),
        ("proto=https;host=example.com", PROXY, "https", ("example.com", 443)),
        # A malformed element contributes nothing and stops the walk.
        ('for=203.0.113.7, for="10.0.0.2;proto=https', PROXY, "http", ("testserver", 80)),
        (
            "for=203.0.113.7, for=10.0.0.3 junk;proto=https, for=10.0.0.2",
            ("10.0.0.2", 0),
            "http",
            ("testserver", 80),
        ),
        # A well-formed element with values that are not a scheme or a host: those ignored.
        ('for=203.0.113.7;proto=gopher;host="a b"', ("203.0.113.7", 0), "http", ("testserver", 80)),
        ("for=203.0.113.7;host=a b", PROXY, "http", ("testserver", 80)),
        ("for=192.0.2.1;for=192.0.2.2", PROXY, "http", ("testserver", 80)),
    ],
)
async def test_forwarded(
    value: str, client: tuple[str, int], scheme: str, server: tuple[str, int]
) -> None:
    scope = await call([("forwarded", value)], trusted_proxies=NETWORK)
    assert (scope["client"], scope["scheme"], scope["server"]) == (client, scheme, server)


async def test_forwarded_repeated_fields_form_one_chain() -> None:
    headers = [("forwarded", "for=203.0.113.7;proto=https"), ("forwarded", "for=10.0.0.2")]
    scope = await call(headers, trusted_proxies=NETWORK)
    assert scope["client"] == ("203.0.113.7", 0) and scope["scheme"] == "https"


async def test_an_unclosed_quote_from_the_client_cannot_swallow_the_proxy_element() -> None:
    # The client sent `Forwarded: for="`; its proxy appended its own quoted element.
    scope = await call([("forwarded", 'for=", for="203.0.113.7";proto=https')])
    assert scope["client"] == ("203.0.113.7", 0) and scope["scheme"] == "https"


async def test_a_client_written_forwarded_cannot_spoof_behind_an_x_forwarded_proxy() -> None:
    # nginx appends to X-Forwarded-For and passes the client's own Forwarded through.
    headers = [
        ("forwarded", "for=1.2.3.4;proto=https;host=evil.example"),
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-proto", "http"),
    ]
    scope = await call(headers)
    assert scope["client"] == ("127.0.0.1", 50000)  # the peer: neither chain is believed
    assert scope["scheme"] == "http" and scope["server"] == ("testserver", 80)
    assert (b"host", b"evil.example") not in scope["headers"]


async def test_a_client_written_x_forwarded_for_cannot_spoof_behind_a_forwarded_proxy() -> None:
    headers = [("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=198.51.100.1;proto=https")]
    scope = await call(headers)
    assert scope["client"] == ("127.0.0.1", 50000) and scope["scheme"] == "http"


async def test_both_families_agreeing_are_read_from_forwarded_and_never_mixed() -> None:
    headers = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "x.example"),
        ("forwarded", "for=203.0.113.7;proto=https;host=api.example"),
    ]
    scope = await call(headers)
    assert scope["client"] == ("203.0.113.7", 0)
    assert scope["scheme"] == "https" and scope["server"] == ("api.example", 443)


async def test_forwarded_alone_is_read_when_both_families_are_configured() -> None:
    scope = await call([("forwarded", "for=203.0.113.7;proto=https")])
    assert scope["client"] == ("203.0.113.7", 0) and scope["scheme"] == "https"


async def test_families_can_be_read_alone() -> None:
    headers = [("x-forwarded-for", "198.51.100.1"), ("forwarded", "for=203.0.113.7")]
    scope = await call(headers, headers=("x-forwarded",))
    assert scope["client"] == ("198.51.100.1", 0)
    scope = await call(headers, headers=["forwarded"])
    assert scope["client"] == ("203.0.113.7", 0)


async def test_forwarded_bounds_read_the_right_end() -> None:
    spam = ", ".join(['for="' + "x" * 50 + '"'] * 100)
    scope = await call([("forwarded", f"{spam}, for=203.0.113.7;proto=https")])
    assert scope["client"] == ("203.0.113.7", 0) and scope["scheme"] == "https"
    trusted = ", ".join(["for=10.0.0.1;proto=https"] * (MAX_HOPS + 1))
    scope = await call([("forwarded", trusted)], trusted_proxies=NETWORK)
    assert scope["client"] == ("10.0.0.1", 0) and scope["scheme"] == "http"


# ---- websocket and lifespan -------------------------------------------------------------


async def test_websocket_scheme_becomes_wss_and_client_is_rewritten() -> None:
    recorder = Recorder()
    app = enforce(ProxyHeadersMiddleware(enforce(recorder)))
    headers = xff("203.0.113.7", proto="https", host="example.com")
    session = await websocket(app, headers=headers)
    assert session.sent == ["wss"]
    scope = recorder.scope
    assert scope["client"] == ("203.0.113.7", 0) and scope["server"] == ("example.com", 443)
    session = await websocket(app, headers=[("forwarded", "proto=http")], scheme="wss")
    assert session.sent == ["ws"]


async def test_websocket_from_an_untrusted_peer_is_untouched() -> None:
    recorder = Recorder()
    app = enforce(ProxyHeadersMiddleware(enforce(recorder)))
    session = await websocket(app, headers=xff("203.0.113.7", proto="https"), client=STRANGER)
    assert session.sent == ["ws"] and recorder.scope["client"] == STRANGER


async def test_lifespan_passes_through_untouched() -> None:
    recorder = Recorder()
    state: dict[str, Any] = {}
    session = await run_lifespan(
        enforce(ProxyHeadersMiddleware(enforce(recorder), trusted_proxies="*")), state=state
    )
    assert [m["type"] for m in session.messages] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert recorder.scope is session.scope


async def test_unknown_scope_types_pass_through() -> None:
    recorder = Recorder()
    scope: Scope = {"type": "custom", "client": PROXY}
    await ProxyHeadersMiddleware(recorder)(scope, _receive_nothing, _ignore)
    assert recorder.scope is scope


# ---- the scope is copied, never mutated -------------------------------------------------


async def test_scope_is_copied_state_shared_and_original_untouched() -> None:
    recorder = Recorder()
    state: dict[str, Any] = {"db": object()}
    app = enforce(ProxyHeadersMiddleware(enforce(recorder)))
    async with lifespan(app, state=state):
        scope = http_scope(headers=xff("203.0.113.7", proto="https"), state=state)
        before = dict(scope)
        await request(app, scope=scope)
    seen = recorder.scopes[-1]
    assert seen is not scope and scope == before and PEER_SCOPE_KEY not in scope
    assert seen["state"] is state
    assert seen[PEER_SCOPE_KEY] == PROXY


async def test_trusted_peer_without_proxy_headers_gets_the_same_scope() -> None:
    recorder = Recorder()
    scope = http_scope(headers=[("user-agent", "x")])
    await ProxyHeadersMiddleware(recorder)(scope, _receive_nothing, _ignore)
    assert recorder.scope is scope


async def test_headers_that_repeat_what_the_scope_says_change_nothing() -> None:
    recorder = Recorder()
    scope = http_scope(headers=xff("127.0.0.1:50000", proto="http"))
    await ProxyHeadersMiddleware(recorder)(scope, _receive_nothing, _ignore)
    assert recorder.scope is scope and PEER_SCOPE_KEY not in scope


async def test_two_layers_keep_the_socket_peer() -> None:
    recorder = Recorder()
    inner = ProxyHeadersMiddleware(enforce(recorder), trusted_proxies=NETWORK)
    outer = ProxyHeadersMiddleware(enforce(inner), trusted_proxies=NETWORK)
    await request(enforce(outer), headers=xff("203.0.113.7, 10.0.0.2"))
    assert recorder.scope["client"] == ("203.0.113.7", 0)
    assert recorder.scope[PEER_SCOPE_KEY] == PROXY


# ---- the contract: streaming, exceptions, cancellation ----------------------------------


async def test_streaming_request_and_response_pass_through_the_checkers() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (body, scope["client"][0].encode(), b""):
            await send({"type": "http.response.body", "body": part, "more_body": part != b""})

    wrapped = enforce(ProxyHeadersMiddleware(enforce(app)))
    response = await request(wrapped, headers=xff("203.0.113.7"), body=[b"a", b"b", b"c"])
    assert response.chunks == [b"abc", b"203.0.113.7", b""]


async def test_client_disconnect_mid_response_propagates() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    wrapped = enforce(ProxyHeadersMiddleware(enforce(app)))
    with pytest.raises(ClientDisconnected):
        await request(wrapped, headers=xff("203.0.113.7"), disconnect_after=1)


class Boom(Exception):
    pass


@pytest.mark.parametrize("client", [PROXY, STRANGER])
async def test_app_exceptions_propagate_unchanged(client: tuple[str, int]) -> None:
    error = Boom("from the app")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise error

    wrapped = enforce(ProxyHeadersMiddleware(enforce(app)))
    with pytest.raises(Boom) as info:
        await request(wrapped, headers=xff("203.0.113.7"), client=client)
    assert info.value is error


@pytest.mark.parametrize("client", [PROXY, STRANGER])
async def test_cancellation_propagates(client: tuple[str, int]) -> None:
    started = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await anyio.sleep_forever()

    wrapped = enforce(ProxyHeadersMiddleware(enforce(app)))
    async with anyio.create_task_group() as tg:

        async def cancel_once_started() -> None:
            await started.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(cancel_once_started)
        await request(wrapped, headers=xff("203.0.113.7"), client=client)
        pytest.fail("the request returned although it was cancelled")
    assert tg.cancel_scope.cancelled_caught


# ---- caches -----------------------------------------------------------------------------


async def test_caches_stay_bounded_and_keep_answering_right() -> None:
    recorder = Recorder()
    middleware = ProxyHeadersMiddleware(recorder, trusted_proxies="10.0.0.0/8")
    for i in range(1500):
        peer = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        hop = f"203.0.{i // 256}.{i % 256}"
        for _ in range(2):  # the second time from the caches
            scope = http_scope(headers=xff(hop), client=(peer, 1))
            await middleware(scope, _receive_nothing, _ignore)
            assert recorder.scopes[-1]["client"] == (hop, 0)
            stranger = http_scope(headers=xff(hop), client=(f"11.0.{i // 256}.{i % 256}", 1))
            await middleware(stranger, _receive_nothing, _ignore)
            assert recorder.scopes[-1] is stranger


def _retained_by_proxy_headers(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes allocated by the middleware's own module and still alive."""
    here = ProxyHeadersMiddleware.__init__.__code__.co_filename
    return sum(
        stat.size for stat in snapshot.statistics("filename") if stat.traceback[0].filename == here
    )


async def _distinct_clients(
    middleware: ProxyHeadersMiddleware, start: int, count: int, long: bool
) -> None:
    for i in range(start, start + count):
        peer = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        hop = f"203.0.{i // 256 % 256}.{i % 256}"
        headers = [("forwarded", f'for="_{i:0600d}";proto=https')] if long else xff(hop)
        scope = http_scope(headers=headers, client=(peer, 1))
        await middleware(scope, _receive_nothing, _ignore)


@pytest.mark.parametrize("long", [False, True], ids=["short", "long headers"])
async def test_memory_stays_bounded_however_many_clients_and_header_sets(long: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pass  # keeps nothing

    middleware = ProxyHeadersMiddleware(app, trusted_proxies="10.0.0.0/8")
    tracemalloc.start()
    try:
        await _distinct_clients(middleware, 0, 3000, long)
        first = _retained_by_proxy_headers(tracemalloc.take_snapshot())
        await _distinct_clients(middleware, 3000, 6000, long)
        second = _retained_by_proxy_headers(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
    # Three times the clients, and what the middleware keeps does not grow with them
    # (unbounded caches would hold about three times as much).
    assert second < first * 1.5 + 64 * 1024, (first, second)


async def test_cached_results_follow_the_scope_they_are_applied_to() -> None:
    recorder = Recorder()
    middleware = ProxyHeadersMiddleware(recorder)
    headers = xff("203.0.113.7", proto="https", host="example.com")
    await middleware(http_scope(headers=headers), _receive_nothing, _ignore)
    await middleware(http_scope(headers=headers, client=("::1", 2)), _receive_nothing, _ignore)
    await websocket(middleware, headers=headers)
    first, second, third = recorder.scopes
    assert first["client"] == second["client"] == third["client"] == ("203.0.113.7", 0)
    assert (first[PEER_SCOPE_KEY], second[PEER_SCOPE_KEY]) == (PROXY, ("::1", 2))
    assert (first["scheme"], third["scheme"]) == ("https", "wss")


async def test_long_header_sets_are_not_cached() -> None:
    recorder = Recorder()
    middleware = ProxyHeadersMiddleware(recorder)
    value = 'for="' + "_" + "x" * 600 + '";proto=https'
    await middleware(http_scope(headers=[("forwarded", value)]), _receive_nothing, _ignore)
    assert recorder.scopes[-1]["scheme"] == "https"


# ---- any bytes --------------------------------------------------------------------------

_names = st.sampled_from(
    [
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"host",
    ]
)
_pieces = st.one_of(
    st.binary(max_size=60),
    st.sampled_from(
        [
            b"for=",
            b"proto=https",
            b"host=example.com",
            b'"',
            b",",
            b";",
            b"10.0.0.2",
            b"[2001:db8::1]:80",
            b"unknown",
            b"_x",
            b"\r\n",
            b"\xff",
        ]
    ),
    st.ip_addresses().map(lambda a: str(a).encode()),
)
_values = st.lists(_pieces, max_size=8).map(b"".join)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_names, _values), max_size=6), st.sampled_from(["http", "websocket"]))
def test_any_header_bytes_from_a_trusted_peer_never_raise(
    anyio_backend: str, fields: list[tuple[bytes, bytes]], kind: str
) -> None:
    async def main() -> None:
        recorder = Recorder()
        app = enforce(ProxyHeadersMiddleware(enforce(recorder), trusted_proxies=NETWORK))
        if kind == "http":
            await request(app, headers=fields)
        else:
            await websocket(app, headers=fields)
        scope = recorder.scope
        client = scope["client"]
        if client != PROXY:
            assert scope[PEER_SCOPE_KEY] == PROXY
            ipaddress.ip_address(client[0])
            assert 0 <= client[1] <= 65535
        expected = ("http", "https") if kind == "http" else ("ws", "wss")
        assert scope["scheme"] in expected
        host, port = scope["server"]
        if (host, port) != ("testserver", 80):
            hosts = [v for k, v in scope["headers"] if k == b"host"]
            assert len(hosts) == 1 and parse_host(hosts[0]) is not None
            assert 1 <= port <= 65535

    anyio.run(main, backend=anyio_backend)


# ---- the benchmark still measures what it claims --------------------------------------


def test_benchmark_runs_and_both_middleware_agree(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_proxy_headers

    assert bench_proxy_headers.main(["--rounds", "1", "--min-time", "0.001"]) == 0
    output = capsys.readouterr().out
    assert output.count("| uvicorn ProxyHeadersMiddleware | ") == 2
    assert "asgikit ProxyHeadersMiddleware, cache miss" in output
