"""RateLimitMiddleware's pure logic: rules, matching, keys, header values."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgikit.middleware.rate_limit.rules import (
    ANONYMOUS,
    RuleSet,
    build_rules,
    client_digest,
    rate_limit_value,
    reset_seconds,
)
from asgikit.middleware.rate_limit.store import Decision, MemoryStore, Quota
from asgikit.paths import compile_route
from asgikit.testing import http_scope
from asgikit.types import Scope


def tenant(scope: Scope) -> str | None:
    """An import-string key: the tenant from a header, or None."""
    for name, value in scope["headers"]:
        if name == b"x-tenant":
            return str(value.decode())
    return None


NOT_CALLABLE = 42


def rules(specs: list[dict[str, Any]], **options: Any) -> RuleSet:
    settings: dict[str, Any] = {"rate": None, "burst": None, "key": "client", "ipv6_prefix": 64}
    settings.update(options)
    return build_rules(specs, **settings)


def names(ruleset: RuleSet, path: str, method: str = "GET") -> list[str]:
    return [rule.name for rule in ruleset.match(path, method)]


# ---- matching ---------------------------------------------------------------------------


def test_path_prefix_matches_whole_segments() -> None:
    ruleset = rules([{"name": "api", "path": "/api/", "rate": "5/s"}])
    assert names(ruleset, "/api") == ["api"]
    assert names(ruleset, "/api/users") == ["api"]
    assert names(ruleset, "/apix") == []
    assert names(ruleset, "/") == []


def test_root_prefix_and_no_path_match_everything() -> None:
    ruleset = rules([{"name": "a", "path": "/", "rate": "5/s"}, {"name": "b", "rate": "5/s"}])
    assert names(ruleset, "/anything/at/all") == ["a", "b"]


def test_route_template_matches_one_segment_per_placeholder() -> None:
    ruleset = rules([{"name": "user", "route": "/users/{id}", "rate": "5/s"}])
    assert names(ruleset, "/users/1") == ["user"]
    assert names(ruleset, "/users/abc") == ["user"]
    assert names(ruleset, "/users/1/posts") == []
    assert names(ruleset, "/users/") == []
    assert names(ruleset, "/users") == []


@pytest.mark.parametrize(
    ("template", "matching", "not_matching"),
    [
        ("/files/{rest:path}", "/files/a/b/c", "/file/a"),
        ("/items/{n:int}", "/items/42", "/items/x"),
        ("/p/{x:float}.json", "/p/1.5.json", "/p/1.5xjson"),
        ("/u/{id:uuid}", "/u/12345678-1234-1234-1234-123456789abc", "/u/1234"),
        ("/a.b/{s:str}", "/a.b/x", "/aXb/x"),
    ],
)
def test_route_convertors(template: str, matching: str, not_matching: str) -> None:
    pattern = compile_route(template)
    assert pattern.fullmatch(matching)
    assert not pattern.fullmatch(not_matching)


def test_methods_narrow_a_rule_and_others_apply_to_every_method() -> None:
    ruleset = rules(
        [
            {"name": "writes", "methods": ["post", "PUT"], "rate": "5/s"},
            {"name": "all", "rate": "50/s"},
        ]
    )
    assert names(ruleset, "/x", "POST") == ["writes", "all"]
    assert names(ruleset, "/x", "PUT") == ["writes", "all"]
    assert names(ruleset, "/x", "GET") == ["all"]
    assert names(ruleset, "/x", "PATCH") == ["all"]


def test_a_get_rule_also_limits_head() -> None:
    # Frameworks answer HEAD with the GET handler: HEAD must not go round a GET limit.
    ruleset = rules([{"name": "reads", "methods": ["GET"], "rate": "5/s"}])
    assert names(ruleset, "/x", "HEAD") == ["reads"]
    assert names(ruleset, "/x", "OPTIONS") == []


# ---- keys -------------------------------------------------------------------------------


def key_of(spec: dict[str, Any], scope: Scope, **options: Any) -> str:
    ruleset = rules([{"name": "r", "rate": "5/s", **spec}], **options)
    return str(ruleset.rules[0].storage_key(scope))


def test_client_key_is_hashed_and_per_address() -> None:
    one = key_of({}, http_scope(client=("203.0.113.7", 1)))
    other = key_of({}, http_scope(client=("203.0.113.8", 1)))
    assert one.startswith("r:client:") and "203.0.113.7" not in one
    assert one != other
    assert one == key_of({}, http_scope(client=("203.0.113.7", 2)))  # port ignored


def test_ipv6_clients_share_a_bucket_per_prefix() -> None:
    a = key_of({}, http_scope(client=("2001:db8:1:2:aaaa::1", 1)))
    b = key_of({}, http_scope(client=("2001:db8:1:2:ffff:1:2:3", 1)))
    c = key_of({}, http_scope(client=("2001:db8:1:3::1", 1)))
    assert a == b != c
    narrow = {"ipv6_prefix": 128}
    assert key_of({}, http_scope(client=("2001:db8:1:2::1", 1)), **narrow) != key_of(
        {}, http_scope(client=("2001:db8:1:2::2", 1)), **narrow
    )


def test_ipv4_mapped_ipv6_is_the_ipv4_address() -> None:
    mapped = key_of({}, http_scope(client=("::ffff:192.0.2.1", 1)))
    assert mapped == key_of({}, http_scope(client=("192.0.2.1", 1)))


def test_unparseable_ipv6_ish_host_is_hashed_as_given() -> None:
    assert client_digest("not:an:address", 64) != client_digest("not:an:addresz", 64)


def test_no_client_gets_the_rules_anonymous_bucket() -> None:
    anonymous = key_of({}, http_scope(client=None))
    assert anonymous == f"r:client:{ANONYMOUS}"
    assert anonymous != key_of({}, http_scope(client=("127.0.0.1", 1)))


def test_header_key_is_hashed_and_missing_header_is_anonymous() -> None:
    spec = {"key": "header:X-API-Key"}
    secret = "sk_live_0123456789"
    key = key_of(spec, http_scope(headers={"x-api-key": secret}))
    assert key.startswith("r:header:") and secret not in key
    assert key != key_of(spec, http_scope(headers={"x-api-key": secret + "x"}))
    assert key_of(spec, http_scope()) == f"r:header:{ANONYMOUS}"
    assert key_of(spec, http_scope(headers={"x-api-key": ""})) == f"r:header:{ANONYMOUS}"


def test_route_key_is_the_template_never_the_path() -> None:
    spec = {"route": "/users/{id}", "key": "route"}
    one = key_of(spec, http_scope(path="/users/1"))
    assert one == key_of(spec, http_scope(path="/users/2", client=("10.0.0.9", 1)))
    assert "/users" not in one and one.startswith("r:route:")
    assert key_of({"key": "route"}, http_scope()) != key_of(
        {"key": "route", "path": "/api"}, http_scope()
    )


def test_import_string_key() -> None:
    spec = {"key": f"{__name__}:tenant"}
    acme = key_of(spec, http_scope(headers={"x-tenant": "acme"}))
    assert acme.startswith("r:func:") and "acme" not in acme
    assert acme != key_of(spec, http_scope(headers={"x-tenant": "initech"}))
    assert key_of(spec, http_scope()) == f"r:func:{ANONYMOUS}"


def test_rule_key_overrides_the_default_key() -> None:
    scope = http_scope(headers={"x-api-key": "k"})
    assert key_of({"key": "header:x-api-key"}, scope, key="client").startswith("r:header:")
    assert key_of({}, scope, key="header:x-api-key").startswith("r:header:")


# ---- options ----------------------------------------------------------------------------


def test_global_rate_is_one_default_rule() -> None:
    ruleset = rules([], rate="10/minute", burst=3)
    (rule,) = ruleset.rules
    assert rule.name == "default"
    assert rule.quota == Quota(limit=10, period=60.0, burst=3)
    assert rule.policy == b'"default";q=10;w=60'
    assert names(ruleset, "/any", "DELETE") == ["default"]


def test_single_rule_is_named_default_and_burst_defaults_to_limit() -> None:
    (rule,) = rules([{"rate": "5/10s"}]).rules
    assert rule.name == "default"
    assert rule.quota == Quota(limit=5, period=10.0, burst=5)
    assert rule.policy == b'"default";q=5;w=10'


def test_window_is_whole_seconds_rounded_up() -> None:
    (rule,) = rules([{"rate": "5/0.5s"}]).rules
    assert rule.policy == b'"default";q=5;w=1'


@pytest.mark.parametrize(
    ("specs", "options", "error", "starts"),
    [
        ([], {}, ValueError, "rules: give at least one rule"),
        ([{"rate": "1/s"}], {"rate": "1/s"}, ValueError, "rate: give either"),
        ([{"rate": "1/s"}], {"burst": 3}, ValueError, "burst: only with 'rate'"),
        ("abc", {}, TypeError, "rules: expected a list"),
        ([{"name": "a", "rate": "1/s"}, "x"], {}, TypeError, "rules[1]: expected a mapping"),
        ([{"rate": "1/s", "pth": "/"}], {}, ValueError, "rules[0]: unknown field 'pth'"),
        ([{"rate": "1/s"}, {"rate": "2/s"}], {}, ValueError, "rules[0].name: required"),
        ([{"name": "a b", "rate": "1/s"}], {}, ValueError, "rules[0].name: expected"),
        ([{"name": 3, "rate": "1/s"}], {}, ValueError, "rules[0].name: expected"),
        (
            [{"name": "a", "rate": "1/s"}, {"name": "a", "rate": "1/s"}],
            {},
            ValueError,
            "rules[1].name: 'a' is used",
        ),
        ([{}], {}, ValueError, "rules[0].rate: expected '<count>/<period>'"),
        ([{"rate": "lots"}], {}, ValueError, "rules[0].rate: expected"),
        ([{"rate": "0/s"}], {}, ValueError, "rules[0].rate: the count"),
        ([{"rate": "1/s", "burst": 0}], {}, ValueError, "rules[0].burst: expected"),
        ([{"rate": "1/s", "burst": True}], {}, TypeError, "rules[0].burst: expected"),
        ([{"rate": "1/s", "path": "api"}], {}, ValueError, "rules[0].path: expected"),
        ([{"rate": "1/s", "route": 5}], {}, ValueError, "rules[0].route: expected"),
        ([{"rate": "1/s", "route": "u/{id}"}], {}, ValueError, "rules[0].route: expected"),
        ([{"rate": "1/s", "route": "/u/{id:hex}"}], {}, ValueError, "rules[0].route: unknown"),
        ([{"rate": "1/s", "route": "/u/{id"}], {}, ValueError, "rules[0].route: malformed"),
        (
            [{"rate": "1/s", "route": "/u/{id}", "path": "/u"}],
            {},
            ValueError,
            "rules[0]: give 'path'",
        ),
        ([{"rate": "1/s", "methods": "GET"}], {}, TypeError, "rules[0].methods: expected"),
        ([{"rate": "1/s", "methods": ["G T"]}], {}, ValueError, "rules[0].methods: 'G T'"),
        ([{"rate": "1/s", "methods": []}], {}, ValueError, "rules[0].methods: an empty"),
        ([{"rate": "1/s", "key": 5}], {}, TypeError, "rules[0].key: expected a str"),
        ([{"rate": "1/s", "key": "ip"}], {}, ValueError, "rules[0].key: expected 'client'"),
        ([{"rate": "1/s", "key": "header:"}], {}, ValueError, "rules[0].key: 'header:"),
        ([{"rate": "1/s", "key": "nope.nada:f"}], {}, ValueError, "rules[0].key: cannot"),
        ([{"rate": "1/s", "key": f"{__name__}:nada"}], {}, ValueError, "rules[0].key: cannot"),
        (
            [{"rate": "1/s", "key": f"{__name__}:NOT_CALLABLE"}],
            {},
            TypeError,
            "rules[0].key: ",
        ),
        ([{"rate": "1/s"}], {"key": "bad"}, ValueError, "key: expected"),
        ([{"rate": "1/s"}], {"ipv6_prefix": 0}, ValueError, "ipv6_prefix: expected 1 to 128"),
        ([{"rate": "1/s"}], {"ipv6_prefix": "64"}, TypeError, "ipv6_prefix: expected"),
    ],
)
def test_bad_options_name_the_option(
    specs: Any, options: dict[str, Any], error: type[Exception], starts: str
) -> None:
    with pytest.raises(error) as raised:
        rules(specs, **options)
    assert str(raised.value).startswith(starts), str(raised.value)


# ---- header values ----------------------------------------------------------------------


def test_reset_seconds_when_denied_is_the_retry_after_rounded_up() -> None:
    quota = Quota(limit=10, period=60.0, burst=10)
    assert reset_seconds(quota, Decision(False, 0, 59.0, 5.2)) == 6
    assert reset_seconds(quota, Decision(False, 0, 59.0, 0.0001)) == 1


@given(
    limit=st.integers(1, 50),
    period=st.sampled_from([1.0, 10.0, 60.0, 3600.0]),
    extra_burst=st.integers(0, 20),
    used=st.integers(1, 80),
)
def test_reset_seconds_when_allowed_is_when_remaining_next_grows(
    limit: int, period: float, extra_burst: int, used: int
) -> None:
    # Drive the real memory store at a frozen clock, then step the clock to t: at t the
    # store must allow remaining + 1 requests at once (and not already just before).
    quota = Quota(limit=limit, period=period, burst=limit + extra_burst)
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    decision = None

    async def take() -> Decision:
        (result,) = await store.acquire([("k", quota)])
        return result

    for _ in range(used):
        result = anyio.run(take)
        if not result.allowed:
            break
        decision = result
    assert decision is not None
    seconds = reset_seconds(quota, decision)
    assert 0 <= seconds <= math.ceil(decision.reset)
    now[0] += seconds
    allowed = 0
    while anyio.run(take).allowed:
        allowed += 1
    assert allowed >= decision.remaining + 1


def test_rate_limit_value_lists_one_member_per_rule() -> None:
    ruleset = rules([{"name": "burst", "rate": "10/s"}, {"name": "daily", "rate": "1000/day"}])
    decisions = [Decision(True, 9, 0.1, 0.0), Decision(False, 0, 86400.0, 86.4)]
    assert rate_limit_value(ruleset.rules, decisions) == (b'"burst";r=9;t=1, "daily";r=0;t=87')
