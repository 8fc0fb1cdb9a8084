"""The CORS policy's pure logic: origin parsing, matching, preflight answers, caches."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from asgikit.middleware.cors.origins import MAX_ORIGIN_BYTES, Origin, parse_origin
from asgikit.middleware.cors.policy import Policy, path_policies
from asgikit.paths import PathTable

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
HOST = st.lists(LABEL, min_size=2, max_size=4).map(".".join)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://example.com", Origin("https", "example.com", None, False)),
        ("HTTPS://EXAMPLE.com:443", Origin("https", "example.com", None, False)),
        ("http://example.com:443", Origin("http", "example.com", 443, False)),
        ("wss://example.com:443", Origin("wss", "example.com", None, False)),
        ("http://127.0.0.1:8000", Origin("http", "127.0.0.1", 8000, False)),
        ("http://[::FFFF:1.2.3.4]", Origin("http", "[::ffff:102:304]", None, False)),
        ("http://[::1]:80", Origin("http", "[::1]", None, False)),
        ("https://*.Example.com", Origin("https", "example.com", None, True)),
        ("http://*.localhost:3000", Origin("http", "localhost", 3000, True)),
        ("https://*.bücher.example", Origin("https", "xn--bcher-kva.example", None, True)),
        (
            "chrome-extension://abcdefghijklmnop",
            Origin("chrome-extension", "abcdefghijklmnop", None, False),
        ),
        ("capacitor://localhost", Origin("capacitor", "localhost", None, False)),
    ],
)
def test_parse_origin_normalises(value: str, expected: Origin) -> None:
    assert parse_origin(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("example.com", "has no scheme: write it as scheme://host"),
        ("1http://example.com", "has an invalid scheme '1http'"),
        (
            "https://example.com/",
            "ends with a slash: an origin has no path, write 'https://example.com'",
        ),
        ("https://example.com/app", "has a path: an origin has none, write 'https://example.com'"),
        ("https://example.com?x", "has a query or fragment"),
        ("https://example.com#x", "has a query or fragment"),
        ("https://user@example.com", "has user information"),
        ("https://[::g]", "invalid IPv6 address"),
        ("https://[::1]x", "text after the IPv6 address"),
        ("https://a.*.example.com", "'\\*' may only be the whole leftmost label"),
        ("https://*example.com", "'\\*' may only be the whole leftmost label"),
        ("https://*.com", "every site under a top-level domain"),
        ("https://", "has no host"),
        ("https://:8080", "has no host"),
        ("https://exa mple.com", "invalid host name 'exa mple.com'"),
        ("https://a..com", "invalid host name"),
        ("https://" + "é" * 70 + ".com", "invalid host name"),
        ("https://example.com:", "invalid port ''"),
        ("https://example.com:99999", "invalid port '99999'"),
        ("https://example.com:8a", "invalid port '8a'"),
        ("https://example.com:٣", "invalid port"),
        ("https://[::1]:x", "invalid port 'x'"),
    ],
)
def test_parse_origin_explains_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_origin(value)


@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "Https"]),
    host=HOST,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    upper=st.booleans(),
)
def test_normalising_is_idempotent(scheme: str, host: str, port: int | None, upper: bool) -> None:
    text = f"{scheme}://{host.upper() if upper else host}" + (f":{port}" if port else "")
    once = parse_origin(text).serialise()
    assert parse_origin(once).serialise() == once
    assert once == f"{scheme.lower()}://{host}" + (
        f":{port}" if port and port != {"http": 80, "https": 443}[scheme.lower()] else ""
    )


@given(labels=st.lists(LABEL, min_size=1, max_size=3).map(".".join), suffix=HOST, evil=HOST)
def test_wildcards_match_subdomains_only(labels: str, suffix: str, evil: str) -> None:
    policy = Policy(allow_origins=[f"https://*.{suffix}"])

    def allowed(origin: str) -> bool:
        return policy.allowed_origin(origin.encode()) is not None

    assert allowed(f"https://{labels}.{suffix}")
    assert not allowed(f"https://{suffix}")
    assert not allowed(f"http://{labels}.{suffix}")
    assert not allowed(f"https://{labels}.{suffix}:8443")
    appended = f"{labels}.{suffix}.{evil}"
    assume(not appended.endswith(f".{suffix}"))  # else it is a subdomain after all
    assert not allowed(f"https://{appended}")
    assert not allowed(f"https://{labels}{suffix}")
    assert not allowed(f"https://{labels}-{suffix}")


def test_allowed_origin_answers() -> None:
    policy = Policy(
        allow_origins=["https://a.example.com", "null"],
        allow_origin_regex=r"https://b\d+\.example\.com",
    )
    assert policy.allowed_origin(b"https://a.example.com") == b"https://a.example.com"
    assert policy.allowed_origin(b"null") == b"null"
    assert policy.allowed_origin(b"https://b12.example.com") == b"https://b12.example.com"
    assert policy.allowed_origin(b"https://b12.example.com.evil") is None
    assert policy.allowed_origin(b"https://A.example.com") is None  # browsers send lowercase
    assert Policy(allow_origins="*").allowed_origin(b"whatever") == b"*"


def test_origin_decisions_are_cached_in_a_bounded_lru() -> None:
    policy = Policy(allow_origins=["https://*.example.com"], report_only=True)
    first = policy.actual(b"https://host0.example.com")
    assert policy.actual(b"https://host0.example.com") is first  # the cached answer
    for i in range(1, 1500):
        policy.actual(f"https://host{i}.example.com".encode())
    last = policy.actual(b"https://host1499.example.com")
    assert policy.actual(b"https://host1499.example.com") is last
    again = policy.actual(b"https://host0.example.com")
    assert again == first and again is not first  # evicted: the cache is bounded
    too_long = b"https://" + b"a" * MAX_ORIGIN_BYTES + b".example.com"
    answer = policy.actual(too_long)
    assert answer == (((b"access-control-allow-origin", too_long),), True)
    assert policy.actual(too_long) is not answer  # judged every time, never cached


def test_large_preflights_are_answered_but_not_cached() -> None:
    policy = Policy(allow_origins=["https://a.example.com"], allow_headers="*")
    requested = b",".join(b"x-header-%d" % i for i in range(200))
    answer = policy.preflight(b"https://a.example.com", b"GET", requested, False)
    assert answer.status == 200
    assert (b"access-control-allow-headers", requested) in answer.headers
    assert policy.preflight(b"https://a.example.com", b"GET", requested, False) is not answer
    again = policy.preflight(b"https://a.example.com", b"GET", b"x-a", False)
    assert again is policy.preflight(b"https://a.example.com", b"GET", b"x-a", False)


def test_cached_answers_are_immutable_tuples() -> None:
    policy = Policy(allow_origins=["https://a.example.com"], allow_credentials=True)
    headers, denied = policy.actual(b"https://a.example.com")
    assert isinstance(headers, tuple) and not denied
    answer = policy.preflight(b"https://a.example.com", b"GET", None, False)
    assert isinstance(answer.headers, tuple)


def test_policies_are_chosen_by_the_longest_path_pattern() -> None:
    api = {"allow_origins": ["https://api.example"]}
    admin = {"allow_origins": ["https://admin.example"]}
    [(admin_path, admin_policy), (api_path, api_policy)] = path_policies(
        [{"path": "/api/admin", **admin}, {"path": "/api/", **api}]
    )
    assert (admin_path, api_path) == ("/api/admin", "/api")
    default = Policy()
    select = PathTable([(admin_path, admin_policy), (api_path, api_policy)], default).match
    assert select("/api") is api_policy
    assert select("/api/") is api_policy
    assert select("/api/users") is api_policy
    assert select("/api/admin") is admin_policy
    assert select("/api/admin/x") is admin_policy
    assert select("/api/administrator") is api_policy
    assert select("/apis") is default
    assert select("/") is default
    [(root, everything)] = path_policies([{"path": "/", **api}])
    assert PathTable([(root, everything)], default).match("/anything") is everything


def test_a_policy_path_must_be_a_path_pattern() -> None:
    with pytest.raises(ValueError, match=r"policies\[0\]: 'path': expected a path"):
        path_policies([{"path": "api"}])
    with pytest.raises(ValueError, match="repeats another policy's path"):
        path_policies([{"path": "/api"}, {"path": "/api/"}])
