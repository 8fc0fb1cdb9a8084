"""RateLimitMiddleware's pure logic: rule parsing and matching, header values.

Nothing here does I/O. ``build_rules`` validates the options once, in ``__init__``;
per request, ``RuleSet.match`` picks the rules for a path and method, and each rule's
``storage_key`` (``keys``) gives its store key. A rule may take its rate from a function
of the request (``dynamic``), weigh requests by a cost, take charges after the response
(``usage``) or count only responses of some statuses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final, TypedDict

from asgikit.options import bounded_int, number
from asgikit.paths import selector
from asgikit.types import Scope

from .keys import (
    ANONYMOUS,
    IMPORT,
    client_digest,
    import_callable,
    storage_key,
)
from .store import Decision, Quota, parse_rate

__all__ = [
    "ANONYMOUS",
    "Rule",
    "RuleSet",
    "RuleSpec",
    "build_rules",
    "client_digest",
    "rate_limit_value",
    "reset_seconds",
    "retry_seconds",
    "with_quota",
]

_RULE_FIELDS: Final = frozenset(
    {"name", "path", "route", "methods", "rate", "burst", "key", "cost", "usage"}
    | {"count_status", "cache"}
)
_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_STATUS_CLASS: Final = re.compile(r"[1-5]xx")


class RuleSpec(TypedDict, total=False):
    """One rate-limit rule, as written in code or a config file.

    ``path`` (a prefix, on whole segments) or ``route`` (a template such as
    ``/users/{id}``) selects the requests; neither means every path. ``methods``
    narrows it (websocket connects count as ``GET``). ``rate`` is ``"<count>/<period>"``,
    or ``module:function`` (a callable in code): ``function(scope)`` returns the rate of
    this request's caller, ``(rate, burst)``, or None for no limit, remembered per key
    for ``cache`` seconds. ``burst`` is the cells allowed at once (default: the count; with a
    rate function, the burst of a plain rate it returns).
    ``key`` overrides the middleware's ``key`` option for this rule. ``cost``: the cells a
    request takes, an integer or ``module:function`` returning one. ``usage``: the app
    may charge more after the response (``scope["asgikit.rate_limit.usage"]``).
    ``count_status``: count only responses with these statuses (``401``, ``"5xx"``).
    """

    name: str
    path: str
    route: str
    methods: Sequence[str]
    rate: str
    burst: int
    key: str
    cost: int | str
    usage: bool
    count_status: Sequence[int | str]
    cache: float


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated rule: what it matches, its quota, its key and its policy item."""

    name: str
    matches_path: Callable[[str], object] | None  # truthy when the path matches
    methods: frozenset[str] | None
    quota: Quota
    storage_key: Callable[[Scope], str]  # the store key of a request: no raw values
    policy: bytes  # this rule's RateLimit-Policy member
    policy_field: tuple[bytes, bytes]  # the whole field, when this rule applies alone
    member: bytes  # its RateLimit member, to fill with remaining and t
    interval: float  # GCRA's T and tau, in seconds
    tolerance: float
    rate_of: Callable[[Scope], object] | None = None  # the caller's rate (dynamic)
    burst: int | None = None  # the configured burst: a rate function's plain rate gets it
    cache: float = 60.0  # seconds a caller's rate is remembered
    cost: int = 1  # cells per request, unless cost_of says
    cost_of: Callable[[Scope], object] | None = None
    usage: bool = False  # takes charges after the response
    count_status: frozenset[int] | None = None  # None: every request counts

    @property
    def simple(self) -> bool:
        """One cell per request, a fixed rate, counted before the app: the fast path."""
        return (
            self.rate_of is None
            and self.cost_of is None
            and self.cost == 1
            and not self.usage
            and self.count_status is None
        )


def with_quota(rule: Rule, quota: Quota) -> Rule:
    """*rule* with another quota (a caller's own rate), its header items to match."""
    policy = _policy(rule.name, quota)
    return replace(
        rule,
        quota=quota,
        policy=policy,
        policy_field=(b"ratelimit-policy", policy),
        interval=quota.interval_us / 1e6,
        tolerance=quota.tolerance_us / 1e6,
    )


def _policy(name: str, quota: Quota) -> bytes:
    window = max(1, math.ceil(quota.period))
    return f'"{name}";q={quota.limit};w={window}'.encode("ascii")


class RuleSet:
    """The rules in order; ``match`` returns those applying to a request."""

    __slots__ = ("_by_method", "_everywhere", "rules", "simple")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.simple = all(rule.simple for rule in self.rules)  # the fast path will do
        # Rules without path or method: every request gets them all, nothing to test.
        unconditional = all(r.matches_path is None and r.methods is None for r in self.rules)
        self._everywhere = self.rules if unconditional else None
        # Rules narrowed to the method, computed once per method seen in the config.
        methods = {m for rule in self.rules for m in (rule.methods or ())}
        self._by_method: dict[str, tuple[Rule, ...]] = {
            method: tuple(r for r in self.rules if r.methods is None or method in r.methods)
            for method in (*methods, "")
        }

    def match(self, path: str, method: str) -> Sequence[Rule]:
        if self._everywhere is not None:
            return self._everywhere
        candidates = self._by_method.get(method)
        if candidates is None:
            candidates = self._by_method[""]
        return [r for r in candidates if r.matches_path is None or r.matches_path(path)]


def _check_fields(spec: Mapping[str, object], where: str) -> None:
    unknown = sorted(set(spec) - _RULE_FIELDS)
    if unknown:
        known = ", ".join(sorted(_RULE_FIELDS))
        raise ValueError(f"{where}: unknown field {unknown[0]!r}; known: {known}")


def quota_of(rate: object, burst: object, where: str) -> Quota:
    """The quota of a rate text and a burst (None: the count)."""
    if not isinstance(rate, str):
        raise ValueError(f"{where}.rate: expected '<count>/<period>' such as '100/minute'")
    try:
        limit, period = parse_rate(rate)
    except ValueError as exc:
        raise ValueError(f"{where}.rate: {exc}") from exc
    return Quota(
        limit=limit,
        period=period,
        burst=bounded_int(limit if burst is None else burst, f"{where}.burst", 1),
    )


def _status_set(value: object, where: str) -> frozenset[int] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise TypeError(f"{where}: expected a list of statuses such as [401, 403] or ['5xx']")
    statuses: set[int] = set()
    for item in value:
        if isinstance(item, str) and _STATUS_CLASS.fullmatch(item):
            first = int(item[0]) * 100
            statuses.update(range(first, first + 100))
        elif isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            statuses.add(item)
        else:
            raise ValueError(f"{where}: {item!r} is not a status (100-599) nor a class ('4xx')")
    return frozenset(statuses)


def _cost(
    value: object, where: str, burst: int | None
) -> tuple[int, Callable[[Scope], object] | None]:
    if isinstance(value, int) and not isinstance(value, bool):
        cost = bounded_int(value, where, 0)
        if burst is not None and cost > burst:  # a fixed rate: known to never fit
            raise ValueError(f"{where}: {cost} is more than the burst ({burst}): never allowed")
        return cost, None
    return 1, import_callable(value, where)


def _rule(
    spec: Mapping[str, object], where: str, name: str, default_key: str, ipv6_prefix: int
) -> Rule:
    path, route = spec.get("path"), spec.get("route")
    # GET brings HEAD: frameworks answer HEAD with the GET handler, at the same cost.
    covers = selector(spec, where)
    rate = spec.get("rate")
    rate_of = None
    if callable(rate) or (isinstance(rate, str) and IMPORT.fullmatch(rate)):
        rate_of = import_callable(rate, f"{where}.rate")
        rate = "1/second"  # a placeholder: each caller's own quota replaces it
    quota = quota_of(rate, spec.get("burst"), where)
    # A rate function's plain rate gets the rule's burst (its quota is a placeholder).
    burst = quota.burst if rate_of is not None and spec.get("burst") is not None else None
    label = str(route if route is not None else path or "*")
    fixed_burst = quota.burst if rate_of is None else None
    cost, cost_of = _cost(spec.get("cost", 1), f"{where}.cost", fixed_burst)
    usage = spec.get("usage", False)
    if not isinstance(usage, bool):
        raise TypeError(f"{where}.usage: expected true or false, got {usage!r}")
    policy = _policy(name, quota)
    return Rule(
        name=name,
        matches_path=covers.matches,
        methods=covers.methods,
        quota=quota,
        storage_key=storage_key(
            spec.get("key", default_key), f"{where}.key", ipv6_prefix, name, label
        ),
        policy=policy,
        policy_field=(b"ratelimit-policy", policy),
        member=f'"{name}";r=%d;t=%d'.encode("ascii"),
        interval=quota.interval_us / 1e6,
        tolerance=quota.tolerance_us / 1e6,
        rate_of=rate_of,
        burst=burst,
        cache=number(spec.get("cache", 60.0), f"{where}.cache", minimum=0),
        cost=cost,
        cost_of=cost_of,
        usage=usage,
        count_status=_status_set(spec.get("count_status"), f"{where}.count_status"),
    )


def build_rules(
    rules: Sequence[Mapping[str, object]],
    *,
    rate: str | None,
    burst: int | None,
    key: str,
    ipv6_prefix: int,
) -> RuleSet:
    """Validate the ``rules`` option (or the single global ``rate``) into a ``RuleSet``.

    Raises:
        ValueError: a bad value; the message starts with the option (``rules[1].rate``).
        TypeError: a value of the wrong type.
    """
    if isinstance(ipv6_prefix, bool) or not isinstance(ipv6_prefix, int):
        raise TypeError(f"ipv6_prefix: expected an integer, got {ipv6_prefix!r}")
    if not 1 <= ipv6_prefix <= 128:
        raise ValueError(f"ipv6_prefix: expected 1 to 128, got {ipv6_prefix}")
    storage_key(key, "key", ipv6_prefix, "default", "*")  # checked even if unused
    if isinstance(rules, str | bytes | Mapping) or not isinstance(rules, Sequence):
        raise TypeError(f"rules: expected a list of rules, got {rules!r}")
    if rate is not None:
        if rules:
            raise ValueError("rate: give either 'rate' (one global rule) or 'rules', not both")
        spec: dict[str, object] = {"rate": rate}
        if burst is not None:
            spec["burst"] = burst
        return RuleSet([_rule(spec, "rate", "default", key, ipv6_prefix)])
    if burst is not None:
        raise ValueError("burst: only with 'rate'; in 'rules', give each rule its own burst")
    if not rules:
        raise ValueError("rules: give at least one rule, or rate='100/minute' for one global limit")
    built: list[Rule] = []
    for index, entry in enumerate(rules):
        where = f"rules[{index}]"
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where}: expected a mapping (a RuleSpec), got {entry!r}")
        _check_fields(entry, where)
        name = entry.get("name", "default" if len(rules) == 1 else None)
        if name is None:
            raise ValueError(f"{where}.name: required when there are several rules")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"{where}.name: expected 1-64 of A-Z a-z 0-9 _ . -, got {name!r}")
        if any(rule.name == name for rule in built):
            raise ValueError(f"{where}.name: {name!r} is used by another rule")
        built.append(_rule(entry, where, name, key, ipv6_prefix))
    return RuleSet(built)


def retry_seconds(retry_after: float) -> int:
    """Whole seconds to wait, never fewer than *retry_after* and at least 1."""
    return 1 if retry_after <= 1.0 else math.ceil(retry_after)


def _until_more(interval: float, tolerance: float, decision: Decision) -> int:
    if not decision.allowed:
        return retry_seconds(decision.retry_after)
    # remaining + 1 <= burst, so this is at most reset (give or take float noise, which
    # the 1e-9 absorbs): never later than the bucket is full again.
    more = (decision.remaining + 1) * interval - tolerance + decision.reset
    return 0 if more <= 0.0 else math.ceil(more - 1e-9)


def reset_seconds(quota: Quota, decision: Decision) -> int:
    """The ``t`` of a ``RateLimit`` member: whole seconds until more quota is available.

    Denied: when the next request would be allowed (``Retry-After`` is never earlier).
    Allowed: when ``remaining`` next grows by one (GCRA refills one request every
    ``period / limit`` seconds), never later than the bucket is full again.
    """
    return _until_more(quota.interval_us / 1e6, quota.tolerance_us / 1e6, decision)


def _member(rule: Rule, decision: Decision) -> bytes:
    if not decision.allowed:
        return rule.member % (0, retry_seconds(decision.retry_after))
    return rule.member % (decision.remaining, _until_more(rule.interval, rule.tolerance, decision))


def rate_limit_value(rules: Sequence[Rule], decisions: Sequence[Decision]) -> bytes:
    """The ``RateLimit`` field: one member per rule, ``"<name>";r=<remaining>;t=<secs>``."""
    if len(rules) == 1:
        return _member(rules[0], decisions[0])
    return b", ".join(map(_member, rules, decisions))
