"""The pure parsing behind ProxyHeadersMiddleware: trust, lists, nodes, hosts, Forwarded."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgikit.hosts import parse_host, parse_port
from asgikit.middleware.proxy_headers.forwarded import (
    MAX_BYTES,
    MAX_HOPS,
    ForwardedElement,
    TrustedProxies,
    parse_forwarded_element,
    parse_node,
    parse_proto,
    tail_elements,
)

# ---- trusted proxies --------------------------------------------------------------------


def test_trusted_proxies_parse_addresses_and_networks_from_a_str() -> None:
    trusted = TrustedProxies.parse(" 127.0.0.1, 10.0.0.0/8 ,, ::1, 2001:db8::/32 ,")
    assert trusted.addresses == {ip_address("127.0.0.1"), ip_address("::1")}
    assert trusted.networks == (ip_network("10.0.0.0/8"), ip_network("2001:db8::/32"))
    assert not trusted.everyone and not trusted.unix


def test_trusted_proxies_parse_an_iterable_unix_and_star() -> None:
    trusted = TrustedProxies.parse(["192.0.2.1", "UNIX"])
    assert trusted.unix and not trusted.everyone
    assert trusted.addresses == {ip_address("192.0.2.1")}
    everyone = TrustedProxies.parse("*")
    assert everyone.everyone and everyone.unix
    assert ip_address("203.0.113.9") in everyone
    assert TrustedProxies.parse(()) == TrustedProxies(False, False, frozenset(), ())


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ("localhost", "'localhost' is not an IP address, a CIDR network, 'unix' or '*'"),
        (["10.0.0.1", ""], "entry '' is not an IP address"),
        ("10.0.0.0/33", "'10.0.0.0/33' is not a valid CIDR network"),
        ("10.0.0.0/abc", "'10.0.0.0/abc' is not a valid CIDR network"),
        ("10.0.0.1/8", "'10.0.0.1/8' has host bits set; did you mean '10.0.0.0/8'?"),
        ("2001:db8::1/32", "did you mean '2001:db8::/32'?"),
        ("10.0.0.0/8/8", "is not a valid CIDR network"),
        ("01.2.3.4", "'01.2.3.4' is not an IP address"),
    ],
)
def test_trusted_proxies_invalid_entries_are_named(entries: str | list[str], message: str) -> None:
    with pytest.raises(ValueError, match="trusted_proxies entry") as info:
        TrustedProxies.parse(entries)
    assert message in str(info.value)


def test_trusted_proxies_non_str_entries_raise_type_error() -> None:
    with pytest.raises(TypeError, match="entries must be str"):
        TrustedProxies.parse([b"127.0.0.1"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="entries must be str"):
        TrustedProxies.parse(b"127.0.0.1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", False),
        ("10.1.2.3", True),
        ("11.0.0.1", False),
        ("::1", True),
        ("2001:db8:ffff::1", True),
        ("2001:db9::1", False),
        ("::ffff:10.0.0.1", True),  # IPv4-mapped peer, IPv4 network
        ("::ffff:127.0.0.1", True),  # IPv4-mapped peer, IPv4 address
        ("::ffff:11.0.0.1", False),
        ("::ffff:0:0", False),
    ],
)
def test_trusted_proxies_membership(address: str, trusted: bool) -> None:
    proxies = TrustedProxies.parse("127.0.0.1, 10.0.0.0/8, ::1, 2001:db8::/32")
    assert (ip_address(address) in proxies) is trusted


def test_trusted_proxies_ipv6_network_matches_a_mapped_address_as_written() -> None:
    proxies = TrustedProxies.parse("::ffff:0:0/96")
    assert ip_address("::ffff:10.0.0.1") in proxies
    assert ip_address("10.0.0.1") not in proxies


# ---- lists ------------------------------------------------------------------------------


def test_tail_elements_are_rightmost_first_stripped_without_empties() -> None:
    assert tail_elements([b" a ,\tb,, c ,"]) == ([b"c", b"b", b"a"], True)
    assert tail_elements([b"a, b", b"c"]) == ([b"c", b"b", b"a"], True)
    assert tail_elements([b""]) == ([], True)


def test_tail_elements_split_on_every_comma_quotes_or_not() -> None:
    elements, complete = tail_elements([b'for="a, b", for=c'])
    assert elements == [b"for=c", b'b"', b'for="a'] and complete


def test_tail_elements_keep_at_most_max_hops() -> None:
    exact = [b"%d" % i for i in range(MAX_HOPS)]
    assert tail_elements([b",".join(exact)]) == (exact[::-1], True)
    longer = [b"%d" % i for i in range(MAX_HOPS + 5)]
    elements, complete = tail_elements([b",".join(longer)])
    assert elements == longer[::-1][:MAX_HOPS]
    assert not complete


def test_tail_elements_read_only_the_last_max_bytes() -> None:
    rightmost = b"203.0.113.7, 10.0.0.2"
    filler = b"x" * MAX_BYTES
    elements, complete = tail_elements([filler + b"," + rightmost])
    assert elements == [b"10.0.0.2", b"203.0.113.7"] and not complete
    # A cut that lands inside an element drops that element rather than read half of it.
    value = b"1.2.3.4," + b"9" * (MAX_BYTES - 4) + b",5.6.7.8"
    elements, complete = tail_elements([value])
    assert elements == [b"5.6.7.8"] and not complete
    exactly = b"a" * (MAX_BYTES - 2) + b",b"
    assert tail_elements([exactly]) == ([b"b", b"a" * (MAX_BYTES - 2)], True)


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=20))
def test_tail_elements_stay_within_the_bounds(values: list[bytes]) -> None:
    elements, complete = tail_elements(values)
    assert len(elements) <= MAX_HOPS
    assert sum(map(len, elements)) <= MAX_BYTES
    for element in elements:
        assert element and b"," not in element
        assert element == element.strip(b" \t")
    if complete:
        naive = [p.strip(b" \t") for p in b",".join(values).split(b",")]
        assert elements == [p for p in naive if p][::-1]


# ---- ports, nodes, hosts, protos ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "port"),
    [
        (b"1", 1),
        (b"80", 80),
        (b"65535", 65535),
        (b"08080", 8080),
        (b"0", None),
        (b"65536", None),
        (b"000080", None),
        (b"", None),
        (b"+80", None),
        (b" 80", None),
        (b"8_0", None),
        (b"-1", None),
        ("٨٠".encode(), None),
    ],
)
def test_parse_port(value: bytes, port: int | None) -> None:
    assert parse_port(value) == port


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"192.0.2.60", ("192.0.2.60", 0)),
        (b"192.0.2.60:4711", ("192.0.2.60", 4711)),
        (b"192.0.2.60:_port-1", ("192.0.2.60", 0)),
        (b"2001:db8:cafe::17", ("2001:db8:cafe::17", 0)),
        (b"2001:DB8:CAFE:0::17", ("2001:db8:cafe::17", 0)),
        (b"[2001:db8:cafe::17]", ("2001:db8:cafe::17", 0)),
        (b"[2001:db8:cafe::17]:4711", ("2001:db8:cafe::17", 4711)),
        (b"[2001:db8:cafe::17]:_hidden", ("2001:db8:cafe::17", 0)),
        (b"::ffff:10.0.0.1", ("::ffff:a00:1", 0)),
        (b"unknown", None),
        (b"_hidden", None),
        (b"_gazonk", None),
        (b"", None),
        (b"example.com", None),
        (b"example.com:80", None),
        (b"192.0.2.60:", None),
        (b"192.0.2.60:0", None),
        (b"192.0.2.60:65536", None),
        (b"192.0.2.60:80:80", None),
        (b"192.0.2.60:_", None),
        (b"192.0.2.60:_a b", None),
        (b"[2001:db8::1", None),
        (b"[2001:db8::1]80", None),
        (b"[2001:db8::1]:", None),
        (b"[192.0.2.60]", None),  # brackets are for IPv6
        (b"[192.0.2.60]:80", None),
        (b"2001:db8::1:80:80:80:80:80:80", None),
        (b"fe80::1%eth0", None),
        (b"[fe80::1%25eth0]:80", None),
        (b"01.2.3.4", None),
        (b"256.1.1.1", None),
        (b" 192.0.2.60", None),
        (b"192.0.2.60\r\nx-injected: 1", None),
        (b"192.0.2.60\x00", None),
        ("192.0.2.\uff16\uff10".encode(), None),  # fullwidth digits
        (b"\xff\xfe", None),
        (b"1" * 65, None),
        (b"\x01\x02\x03\x04", None),  # four bytes: never read as a packed address
    ],
)
def test_parse_node(value: bytes, expected: tuple[str, int] | None) -> None:
    parsed = parse_node(value)
    assert (None if parsed is None else (str(parsed[0]), parsed[1])) == expected


@given(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.one_of(st.none(), st.integers(1, 65535)),
)
def test_parse_node_reads_every_address_as_a_proxy_writes_it(
    address: IPv4Address | IPv6Address, port: int | None
) -> None:
    text = str(address)
    if port is None:
        written = [text, f"[{text}]"] if address.version == 6 else [text]
    else:
        written = [f"[{text}]:{port}" if address.version == 6 else f"{text}:{port}"]
    for value in written:
        assert parse_node(value.encode("ascii")) == (address, port or 0)


@given(
    st.one_of(
        st.ip_addresses(v=4).map(lambda a: str(a).encode()),
        st.lists(st.integers(0, 999).map(str), min_size=1, max_size=5).map(
            lambda parts: ".".join(parts).encode()
        ),
        st.binary(max_size=20),
        st.text(alphabet="0123456789.", max_size=20).map(str.encode),
    )
)
def test_ipv4_fast_path_agrees_with_ipaddress(value: bytes) -> None:
    try:
        expected: IPv4Address | None = IPv4Address(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        expected = None
    parsed = parse_node(value)
    if expected is None:
        assert parsed is None or parsed[0].version == 6
    else:
        assert parsed == (expected, 0)


@given(st.binary(max_size=80))
def test_parse_node_never_raises_and_gives_an_address_or_none(value: bytes) -> None:
    parsed = parse_node(value)
    if parsed is not None:
        address, port = parsed
        assert isinstance(address, IPv4Address | IPv6Address)
        assert 0 <= port <= 65535
        assert value.isascii() and b"%" not in value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"example.com", ("example.com", None)),
        (b"Example.COM:8443", ("Example.COM", 8443)),
        (b"my_host.internal", ("my_host.internal", None)),
        (b"192.0.2.1:80", ("192.0.2.1", 80)),
        (b"[2001:db8::1]", ("2001:db8::1", None)),
        (b"[2001:DB8::1]:443", ("2001:db8::1", 443)),
        (b"[::ffff:192.0.2.1]", ("::ffff:c000:201", None)),
        (b"a" * 253, ("a" * 253, None)),
        (b"a" * 254, None),
        (b"", None),
        (b":80", None),
        (b"example.com:", None),
        (b"example.com:0", None),
        (b"example.com:65536", None),
        (b"example.com:123456", None),
        (b"example.com:80:80", None),
        (b"exa mple.com", None),
        (b"example.com/path", None),
        (b"user@example.com", None),
        (b"example.com\r\nx-injected: 1", None),
        (b"example.com\n", None),
        (b"example.com\x00", None),
        (b"[2001:db8::1", None),
        (b"[not:an:address]", None),
        (b"[1:2:3]", None),
        (b"[::1::2]:80", None),
        (b"[2001:db8::zz]", None),
        (b"2001:db8::1", None),
        (b'"example.com"', None),
        ("exämple.com".encode(), None),
    ],
)
def test_parse_host(value: bytes, expected: tuple[str, int | None] | None) -> None:
    assert parse_host(value) == expected


@given(st.binary(max_size=300))
def test_parse_host_accepts_nothing_unsafe(value: bytes) -> None:
    parsed = parse_host(value)
    if parsed is not None:
        assert value.isascii()
        assert not set(value) & set(b" \t\r\n\x00/@\\\"',;?#")
        assert all(0x21 <= char < 0x7F for char in value)
        host, port = parsed
        assert host and (port is None or 1 <= port <= 65535)


@pytest.mark.parametrize(
    ("value", "secure"),
    [
        (b"https", True),
        (b"HTTPS", True),
        (b"wss", True),
        (b"http", False),
        (b"Http", False),
        (b"ws", False),
        (b"ftp", None),
        (b"https ", None),
        (b"", None),
    ],
)
def test_parse_proto(value: bytes, secure: bool | None) -> None:
    assert parse_proto(value) is secure


# ---- Forwarded elements -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        (b"for=192.0.2.60", (b"192.0.2.60", None, None)),
        (
            b"for=192.0.2.60;proto=http;by=203.0.113.43",
            (b"192.0.2.60", b"http", None),
        ),
        (b'For="[2001:db8:cafe::17]:4711"', (b"[2001:db8:cafe::17]:4711", None, None)),
        (b"for=[2001:db8::17]:4711", (b"[2001:db8::17]:4711", None, None)),
        (b'PROTO=https;HOST="example.com:8443"', (None, b"https", b"example.com:8443")),
        (b"for=_hidden; proto=https ;", (b"_hidden", b"https", None)),
        (b"for=unknown;;host=example.com", (b"unknown", None, b"example.com")),
        (b'for="\\_hid\\"den"', (b'_hid"den', None, None)),
        (b'for=""', (b"", None, None)),
        (b"ext=token;for=192.0.2.1", (b"192.0.2.1", None, None)),
        (b";", (None, None, None)),
        (b"for=192.0.2.1;for=192.0.2.2", None),  # a repeated parameter
        (b"for=192.0.2.1;FOR=192.0.2.2", None),
        (b"for", None),
        (b"=192.0.2.1", None),
        (b"for=", None),
        (b"for =192.0.2.1", None),
        (b"for= 192.0.2.1", None),
        (b"f(r=192.0.2.1", None),
        (b"for=192.0.2.1 x", None),
        (b'for="192.0.2.1', None),
        (b'for=192.0.2.1"', None),
        (b'for="192.0.2.1"x', None),
        (b'for="a"b"', None),
        (b'for="a\\"', None),
        (b'for="a\\"b"c"', None),
        (b'for="a\x00"', None),
        (b'for="a\r\nx: y"', None),
        (b'for="\xc3\xa4"', None),
        (b"for=\xc3\xa4", None),
        (b'for="', None),
        (b'host="a;b"', None),
    ],
)
def test_parse_forwarded_element(
    element: bytes, expected: tuple[bytes | None, bytes | None, bytes | None] | None
) -> None:
    parsed = parse_forwarded_element(element)
    assert parsed == (None if expected is None else ForwardedElement(*expected))


_quotable = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=",;"), max_size=40
)


@given(_quotable, _quotable, _quotable)
def test_parse_forwarded_element_unquotes_what_a_proxy_quotes(
    for_: str, proto: str, host: str
) -> None:
    def quote(value: str) -> bytes:
        return b'"' + value.replace("\\", "\\\\").replace('"', '\\"').encode("ascii") + b'"'

    element = b"for=" + quote(for_) + b";Proto=" + quote(proto) + b";host=" + quote(host)
    assert parse_forwarded_element(element) == ForwardedElement(
        for_.encode("ascii"), proto.encode("ascii"), host.encode("ascii")
    )


@given(st.binary(max_size=200))
def test_parse_forwarded_element_never_raises(element: bytes) -> None:
    parsed = parse_forwarded_element(element)
    if parsed is not None:
        assert element.isascii()
        for value in parsed:
            assert value is None or all(0x20 <= c < 0x7F or c == 0x09 for c in value)
