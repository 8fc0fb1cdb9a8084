"""RateLimitMiddleware with the memory store: decisions, keys, headers, websocket, lifespan."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from typing import Any

import pytest
import structlog

from asgikit.contract import enforce
from asgikit.middleware.proxy_headers import ProxyHeadersMiddleware
from asgikit.middleware.rate_limit import RateLimitMiddleware
from asgikit.middleware.rate_limit.rules import build_rules
from asgikit.middleware.rate_limit.store import Decision, MemoryStore, Quota
from asgikit.testing import (
    LifespanFailed,
    Response,
    http_scope,
    lifespan,
    request,
    run_lifespan,
    websocket,
)
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

WS_DENIAL: dict[str, dict[str, Any]] = {"websocket.http.response": {}}


# ---- a strict Structured Fields (RFC 9651) list parser, for the headers -------------------

_KEY = r"[a-z*][a-z0-9_.*-]*"
_BARE = (
    r'(?:"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"'  # string
    r"|-?\d{1,15}(?:\.\d{1,3})?"  # integer or decimal
    r"|[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*"  # token
    r"|\?[01]|:[A-Za-z0-9+/=]*:)"  # boolean, byte sequence
)
_PARAM = rf"(?:;\s*{_KEY}(?:={_BARE})?)"
_ITEM = re.compile(rf"({_BARE})({_PARAM}*)")
_ONE_PARAM = re.compile(rf";\s*({_KEY})(?:=({_BARE}))?")


def _bare(text: str) -> Any:
    if text.startswith('"'):
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    if text.startswith("?"):
        return text == "?1"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        return float(text)
    return text


def parse_sf_list(value: str) -> list[tuple[Any, dict[str, Any]]]:
    """Members of a Structured Field List of Items; AssertionError if it is not one."""
    members: list[tuple[Any, dict[str, Any]]] = []
    position = 0
    value = value.strip(" ")
    while True:
        item = _ITEM.match(value, position)
        assert item is not None, f"not an item at {position} in {value!r}"
        params = {m[1]: _bare(m[2]) if m[2] else True for m in _ONE_PARAM.finditer(item[2])}
        members.append((_bare(item[1]), params))
        position = item.end()
        if position == len(value):
            return members
        comma = re.compile(r"[ \t]*,[ \t]*").match(value, position)
        assert comma is not None and comma.end() < len(value), f"bad list {value!r}"
        position = comma.end()


def test_sf_parser_is_strict() -> None:
    assert parse_sf_list('"a";q=1;w=60, "b";r=0') == [("a", {"q": 1, "w": 60}), ("b", {"r": 0})]
    for bad in ('"a";q=1,', '"a" "b"', "a;Q=1", '"a";q=1;;', ""):
        with pytest.raises(AssertionError):
            parse_sf_list(bad)


# ---- helpers ----------------------------------------------------------------------------


class App:
    """Answers 200 "ok"; records the scopes it saw."""

    def __init__(self) -> None:
        self.headers = [(b"content-type", b"text/plain")]
        self.calls = 0
        self.lifespan: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.calls += 1
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"ok"})


class RecordingStore:
    """The real MemoryStore, with every acquire's keys and every open and close written
    down."""

    def __init__(self, store: Any) -> None:
        self.inner = store
        self.keys: list[str] = []
        self.events: list[str] = []

    @property
    def round_trips(self) -> int:
        return int(self.inner.round_trips)

    async def open(self) -> None:
        self.events.append("open")
        await self.inner.open()

    async def close(self) -> None:
        self.events.append("close")
        await self.inner.close()

    async def acquire(self, checks: Sequence[tuple[str, Quota]]) -> list[Decision]:
        self.keys.extend(key for key, _ in checks)
        result: list[Decision] = await self.inner.acquire(checks)
        return result


def limited(app: ASGIApp | None = None, **options: Any) -> tuple[ASGIApp, RateLimitMiddleware]:
    middleware = RateLimitMiddleware(enforce(app or App()), **options)
    return enforce(middleware), middleware


def recording(middleware: RateLimitMiddleware) -> RecordingStore:
    store = RecordingStore(middleware.store)
    middleware.store = store
    return store


def policy(response: Response) -> list[tuple[Any, dict[str, Any]]]:
    value = response.header("ratelimit-policy")
    assert value is not None
    return parse_sf_list(value)


def ratelimit(response: Response) -> list[tuple[Any, dict[str, Any]]]:
    value = response.header("ratelimit")
    assert value is not None
    return parse_sf_list(value)


# ---- allowed requests -------------------------------------------------------------------


async def test_allowed_responses_carry_policy_and_remaining() -> None:
    app = App()
    asgi, _ = limited(app, rate="3/minute")
    seen = []
    for _ in range(3):
        response = await request(asgi)
        assert response.status == 200 and response.body == b"ok"
        assert policy(response) == [("default", {"q": 3, "w": 60})]
        seen.append(ratelimit(response))
        assert response.headers[0] == (b"content-type", b"text/plain")
    assert [m[0][1]["r"] for m in seen] == [2, 1, 0]
    assert all(m[0][0] == "default" and 0 < m[0][1]["t"] <= 20 for m in seen)
    assert app.headers == [(b"content-type", b"text/plain")]  # the app's list untouched
    assert app.calls == 3


async def test_headers_false_adds_nothing_to_allowed_responses() -> None:
    app = App()
    asgi, _ = limited(app, rate="3/minute", headers=False)
    response = await request(asgi)
    assert response.headers == [(b"content-type", b"text/plain")]


async def test_burst_allows_that_many_at_once() -> None:
    asgi, middleware = limited(rate="60/minute", burst=2)
    statuses = [(await request(asgi)).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert middleware.rejections == 1


# ---- rejections -------------------------------------------------------------------------


async def test_rejection_is_429_with_retry_after_not_before_t() -> None:
    app = App()
    asgi, middleware = limited(app, rate="2/minute")
    await request(asgi)
    await request(asgi)
    response = await request(asgi)
    assert response.status == 429
    assert app.calls == 2
    retry_after = response.header("retry-after")
    assert retry_after is not None and retry_after.isdigit()
    ((name, params),) = ratelimit(response)
    assert name == "default" and params["r"] == 0
    assert int(retry_after) >= params["t"] > 0
    assert 25 <= int(retry_after) <= 30  # one request comes back every 30 s
    assert policy(response) == [("default", {"q": 2, "w": 60})]
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert response.header("content-length") == str(len(response.body))
    assert f"retry in {retry_after} seconds" in response.text
    assert middleware.rejections == 1


@pytest.mark.parametrize(
    ("accept", "json"),
    [
        ("application/json", True),
        ("Application/JSON", True),  # media types compare without case
        ("application/json;q=0.9, text/plain;q=0.5", True),
        ("text/html, application/*", True),
        ("*/*", False),
        ("text/plain, application/json", False),
        ("text/plain;q=0.1, application/json;q=0.1", False),
        ("text/html", False),
        (None, False),
    ],
)
async def test_rejection_body_is_json_when_accept_prefers_it(
    accept: str | None, json: bool
) -> None:
    asgi, _ = limited(rate="1/minute")
    headers = {"accept": accept} if accept else {}
    await request(asgi, headers=headers)
    response = await request(asgi, headers=headers)
    assert response.status == 429
    if json:
        assert response.header("content-type") == "application/json"
        assert response.json() == {
            "error": "rate_limited",
            "policy": "default",
            "retry_after": int(response.header("retry-after") or 0),
        }
    else:
        assert response.header("content-type") == "text/plain; charset=utf-8"
        assert response.text.startswith("Too Many Requests")


async def test_rejection_without_rate_limit_headers_keeps_retry_after() -> None:
    asgi, _ = limited(rate="1/minute", headers=False)
    await request(asgi)
    response = await request(asgi)
    assert response.status == 429
    assert response.header("retry-after") is not None
    assert response.header("ratelimit") is None and response.header("ratelimit-policy") is None


async def test_multi_rule_rejection_leaves_the_other_rule_unchanged() -> None:
    rules = [
        {"name": "global", "rate": "100/minute"},
        {"name": "login", "path": "/login", "methods": ["POST"], "rate": "2/minute"},
    ]
    asgi, middleware = limited(rules=rules)
    store = recording(middleware)
    for _ in range(2):
        assert (await request(asgi, "POST", "/login")).status == 200
    denied = await request(asgi, "POST", "/login")
    assert denied.status == 429
    assert [name for name, _ in policy(denied)] == ["global", "login"]
    members = dict(ratelimit(denied))
    assert list(members) == ["login"]  # only the rule that rejected: global counted nothing
    assert members["login"]["r"] == 0
    assert int(denied.header("retry-after") or 0) >= members["login"]["t"]
    # The denial consumed nothing: the global rule still has 98 left after this request.
    after = await request(asgi, "GET", "/")
    assert dict(ratelimit(after))["global"]["r"] == 97
    assert [name for name, _ in policy(after)] == ["global"]
    assert store.round_trips == 4  # one acquire per request, both rules at once


@pytest.mark.parametrize("order", [("fast", "slow"), ("slow", "fast")])
async def test_rejected_with_several_denials_retries_after_the_longest(
    order: tuple[str, str],
) -> None:
    rates = {"fast": "1/10s", "slow": "1/hour"}
    asgi, _ = limited(rules=[{"name": name, "rate": rates[name]} for name in order])
    await request(asgi)
    response = await request(asgi, headers={"accept": "application/json"})
    members = dict(ratelimit(response))
    retry_after = int(response.header("retry-after") or 0)
    assert retry_after == members["slow"]["t"] >= 3000
    assert members["fast"]["t"] <= 10
    assert all(retry_after >= member["t"] for member in members.values())
    assert response.json()["policy"] == "slow"


# ---- matching and exemptions ------------------------------------------------------------


async def test_excluded_paths_and_unmatched_paths_pass_untouched() -> None:
    app = App()
    rules = [{"name": "api", "path": "/api", "rate": "1/minute"}]
    asgi, middleware = limited(app, rules=rules, exclude_paths=["/api/health"])
    store = recording(middleware)
    for path in ("/api/health", "/api/health", "/other", "/other"):
        response = await request(asgi, "GET", path)
        assert response.status == 200
        assert response.header("ratelimit") is None
    assert store.keys == []
    assert (await request(asgi, "GET", "/api/x")).status == 200
    assert (await request(asgi, "GET", "/api/y")).status == 429


async def test_the_old_names_exempt_and_shadow_still_work_and_warn() -> None:
    app = App()
    with pytest.warns(DeprecationWarning, match="exempt is deprecated, use exclude_paths"):
        asgi, _ = limited(app, rate="1/minute", exempt=["/health"])
    assert [(await request(asgi, "GET", "/health/live")).status for _ in range(3)] == [200] * 3
    with pytest.warns(DeprecationWarning, match="shadow is deprecated, use report_only"):
        asgi, middleware = limited(app, rate="1/minute", shadow=True)
    assert [(await request(asgi, "GET", "/x")).status for _ in range(2)] == [200, 200]
    assert middleware.shadow_rejections == middleware.report_only_rejections == 1


def test_an_old_name_beside_its_new_one_is_refused() -> None:
    with pytest.raises(TypeError, match="shadow is the deprecated name of report_only"):
        RateLimitMiddleware(App(), rate="1/s", shadow=True, report_only=True)


async def test_route_template_rule_with_route_key_shares_one_bucket() -> None:
    rules = [{"name": "user", "route": "/users/{id}", "rate": "2/minute", "key": "route"}]
    asgi, middleware = limited(rules=rules)
    store = recording(middleware)
    assert (await request(asgi, "GET", "/users/1", client=("10.0.0.1", 1))).status == 200
    assert (await request(asgi, "GET", "/users/2", client=("10.0.0.2", 1))).status == 200
    assert (await request(asgi, "GET", "/users/3")).status == 429
    assert (await request(asgi, "GET", "/users/3/posts")).status == 200  # not the template
    assert len(set(store.keys)) == 1 and "/users" not in store.keys[0]


# ---- keys -------------------------------------------------------------------------------


async def test_rotating_ipv6_addresses_in_a_64_share_a_bucket() -> None:
    asgi, _ = limited(rate="3/minute")
    statuses = []
    for _ in range(4):
        host = f"2001:db8:aa:bb:{random.getrandbits(16):x}:{random.getrandbits(16):x}::1"
        statuses.append((await request(asgi, client=(host, 1))).status)
    assert statuses == [200, 200, 200, 429]
    other_network = await request(asgi, client=("2001:db8:aa:bc::1", 1))
    assert other_network.status == 200


async def test_request_without_client_gets_its_own_bucket_not_localhost() -> None:
    asgi, _ = limited(rate="1/minute")
    assert (await request(asgi, client=None)).status == 200
    assert (await request(asgi, client=None)).status == 429
    assert (await request(asgi, client=("127.0.0.1", 1))).status == 200


async def test_header_key_is_hashed_before_storage() -> None:
    secret = "sk_live_very_secret_api_key"
    asgi, middleware = limited(rate="1/minute", key="header:x-api-key")
    store = recording(middleware)
    assert (await request(asgi, headers={"x-api-key": secret})).status == 200
    assert (await request(asgi, headers={"x-api-key": secret})).status == 429
    assert (await request(asgi, headers={"x-api-key": secret + "2"})).status == 200
    assert (await request(asgi)).status == 200  # no key: the anonymous bucket
    assert (await request(asgi, client=("10.9.9.9", 1))).status == 429  # the same one
    # Every key the store was given (RecordingStore hands it exactly these): one per
    # request, the same for the same secret, and none holding the secret.
    first, again, other, anonymous, same_anonymous = store.keys
    assert first == again and anonymous == same_anonymous
    assert len({first, other, anonymous}) == 3
    assert all(secret not in key for key in store.keys)


async def test_spoofed_forwarded_for_from_untrusted_peer_never_changes_the_key() -> None:
    limiter = RateLimitMiddleware(enforce(App()), rate="2/minute")
    asgi = enforce(ProxyHeadersMiddleware(enforce(limiter), trusted_proxies=["10.0.0.1"]))
    statuses = []
    for index in range(3):
        spoofed = {"x-forwarded-for": f"198.51.100.{index}"}
        response = await request(asgi, headers=spoofed, client=("203.0.113.50", 4000 + index))
        statuses.append(response.status)
    assert statuses == [200, 200, 429]
    # A trusted proxy's forwarded address is the client, one bucket per real client.
    via_proxy = {"x-forwarded-for": "198.51.100.77"}
    assert (await request(asgi, headers=via_proxy, client=("10.0.0.1", 1))).status == 200


async def test_memory_stays_bounded_with_many_random_keys() -> None:
    asgi, middleware = limited(rate="5/minute", max_keys=50)
    store = middleware.store
    assert isinstance(store, MemoryStore)
    for _ in range(500):
        host = ".".join(str(random.randrange(256)) for _ in range(4))
        assert (await request(asgi, client=(host, 1))).status == 200
    assert len(store) <= 50
    assert store.evictions >= 450


# ---- report-only mode -------------------------------------------------------------------


async def test_report_only_mode_counts_and_logs_but_never_rejects() -> None:
    app = App()
    asgi, middleware = limited(app, rate="1/minute", report_only=True)
    with structlog.testing.capture_logs() as logs:
        statuses = [(await request(asgi, "GET", "/x")).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert app.calls == 3
    assert middleware.report_only_rejections == 2 and middleware.rejections == 0
    # The limits are not enforced, so they are not advertised either.
    assert (await request(asgi)).headers == [(b"content-type", b"text/plain")]
    would = [entry for entry in logs if entry["event"] == "rate_limit.would_reject"]
    assert len(would) == 2
    assert would[0]["rules"] == ["default"] and would[0]["path"] == "/x"
    assert would[0]["log_level"] == "warning"


# ---- websocket --------------------------------------------------------------------------


async def test_websocket_connects_are_limited_and_denied_with_429_response() -> None:
    app = App()
    asgi, _ = limited(app, rate="1/minute")
    first = await websocket(asgi, extensions=WS_DENIAL)
    assert first.accepted
    denied = await websocket(asgi, extensions=WS_DENIAL)
    assert not denied.accepted and app.calls == 1
    assert denied.denial is not None and denied.denial.status == 429
    assert denied.denial.header("retry-after") is not None
    assert dict(ratelimit(denied.denial))["default"]["r"] == 0


async def test_websocket_denied_by_close_before_accept_without_the_extension() -> None:
    app = App()
    asgi, _ = limited(app, rate="1/minute")
    await websocket(asgi)
    denied = await websocket(asgi)
    assert not denied.accepted and denied.denial is None
    assert denied.close_code == 1013
    assert app.calls == 1


async def test_websocket_denial_when_the_client_is_already_gone_sends_nothing() -> None:
    # Not through enforce(): a server handing out a disconnect first breaks the contract,
    # and the middleware should still do nothing rather than fail.
    asgi, middleware = limited(rate="1/minute")
    await websocket(asgi)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.disconnect", "code": 1001}

    async def send(message: Message) -> None:
        sent.append(message)

    from asgikit.testing import websocket_scope

    await middleware(websocket_scope(), receive, send)
    assert sent == []


async def test_websocket_method_rules_count_the_handshake_as_get() -> None:
    rules = [{"name": "writes", "methods": ["POST"], "rate": "1/minute"}]
    asgi, _ = limited(rules=rules)
    for _ in range(3):
        assert (await websocket(asgi)).accepted


# ---- lifespan and other scopes ----------------------------------------------------------


async def test_lifespan_passes_through_and_opens_then_closes_the_store() -> None:
    app = App()
    asgi, middleware = limited(app, rate="1/minute")
    store = recording(middleware)
    async with lifespan(asgi) as session:
        assert store.events == ["open"]
        response = await request(asgi, state=session.state)
        assert response.status == 200
    assert store.events == ["open", "close"]
    assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]
    assert [m["type"] for m in session.messages] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


async def test_lifespan_failure_passes_through_and_still_closes() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "boom"})

    asgi, middleware = limited(failing, rate="1/minute")
    store = recording(middleware)
    with pytest.raises(LifespanFailed, match="boom"):
        await run_lifespan(asgi)
    assert store.events == ["open", "close"]


async def test_failed_startup_closes_the_store_again() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    asgi, middleware = limited(failing, rate="1/minute")
    store = recording(middleware)
    with pytest.raises(LifespanFailed, match="no database"):
        await run_lifespan(asgi)
    assert store.events == ["open", "close"]


async def test_store_opens_lazily_on_the_first_request() -> None:
    asgi, middleware = limited(rate="5/minute")
    store = recording(middleware)
    await request(asgi)
    assert store.events == ["open"]
    await request(asgi)
    assert store.events == ["open"]


async def test_unknown_scope_types_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    middleware = RateLimitMiddleware(app, rate="1/minute")

    async def receive() -> Message:
        raise AssertionError("not called")

    async def send(message: Message) -> None:
        raise AssertionError("not called")

    await middleware({"type": "custom.protocol"}, receive, send)
    assert seen == ["custom.protocol"]


async def test_allowed_requests_keep_the_original_receive_and_any_extension_messages() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["body"] == b"payload"
        await send({"type": "http.response.start", "status": 204, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b""})
        await send({"type": "http.response.trailers", "headers": [(b"x-t", b"1")]})

    asgi, _ = limited(app, rate="5/minute")
    response = await request(asgi, body=b"payload", extensions={"http.response.trailers": {}})
    assert response.status == 204 and response.trailers == [(b"x-t", b"1")]
    assert response.header("ratelimit") is not None


async def test_app_exceptions_propagate() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("app failed")

    asgi, _ = limited(app, rate="5/minute")
    with pytest.raises(RuntimeError, match="app failed"):
        await request(asgi)


# ---- options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "starts"),
    [
        ({}, ValueError, "rules: give at least one rule"),
        ({"rate": "1/s", "headers": "yes"}, TypeError, "headers:"),
        ({"rate": "1/s", "report_only": 1}, TypeError, "report_only:"),
        ({"rate": "1/s", "on_backend_error": "ignore"}, ValueError, "on_backend_error:"),
        ({"rate": "1/s", "timeout": 0}, ValueError, "timeout:"),
        ({"rate": "1/s", "timeout": "1"}, TypeError, "timeout:"),
        ({"rate": "1/s", "timeout": math.inf}, ValueError, "timeout:"),
        ({"rate": "1/s", "log_interval": -1}, ValueError, "log_interval:"),
        ({"rate": "1/s", "max_keys": 0}, ValueError, "max_keys:"),
        ({"rate": "1/s", "storage": "memcached://x"}, ValueError, "storage:"),
        ({"rate": "1/s", "storage": None}, TypeError, "storage:"),
        ({"rate": "1/s", "exclude_paths": ["health"]}, ValueError, "exclude_paths:"),
        ({"rate": "1/s", "key": "ip"}, ValueError, "key:"),
        ({"rules": [{"rate": "1/x"}]}, ValueError, "rules[0].rate:"),
    ],
)
def test_bad_options_raise_naming_the_option(
    options: dict[str, Any], error: type[Exception], starts: str
) -> None:
    with pytest.raises(error) as raised:
        RateLimitMiddleware(App(), **options)
    assert str(raised.value).startswith(starts), str(raised.value)


def test_log_interval_zero_is_allowed() -> None:
    RateLimitMiddleware(App(), rate="1/s", log_interval=0)


def test_rejection_status_and_headers_come_from_one_place() -> None:
    # Retry-After is an integer >= every denied rule's t, whatever the decisions.
    from asgikit.middleware.rate_limit.responses import rejection as _rejection

    rules = build_rules(
        [{"name": "a", "rate": "1/s"}], rate=None, burst=None, key="client", ipv6_prefix=64
    ).rules
    for retry in (0.0001, 0.5, 1.0, 1.0000001, 59.99, 3600.2):
        fields, _ = _rejection(http_scope(), rules, [Decision(False, 0, retry, retry)], True)
        found = dict(fields)
        (member,) = parse_sf_list(found[b"ratelimit"].decode())
        assert int(found[b"retry-after"]) >= member[1]["t"] >= retry
