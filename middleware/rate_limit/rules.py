"""RateLimitMiddleware's pure logic: rule parsing and matching, keys, header values.

Nothing here does I/O. ``build_rules`` validates the options once, in ``__init__``;
per request, ``RuleSet.match`` picks the rules for a path and method and each rule's
``storage_key`` turns the scope into a store key ``"<rule>:<kind>:<digest>"`` whose digest
never contains the raw client value (addresses, API keys and callable results are hashed).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypedDict

from asgikit.headers import get_header
from asgikit.options import bounded_int
from asgikit.paths import PathMatcher, path_pattern
from asgikit.types import Scope

from .store import Decision, Quota, parse_rate

__all__ = [
    "ANONYMOUS",
    "Rule",
    "RuleSet",
    "RuleSpec",
    "build_rules",
    "client_digest",
    "compile_route",
    "rate_limit_value",
    "reset_seconds",
    "retry_seconds",
]

ANONYMOUS: Final = "anonymous"
"""The digest of a request without a usable key: one bucket per rule, shared by such
requests only (a hex digest can never equal it)."""

_RULE_FIELDS: Final = frozenset({"name", "path", "route", "methods", "rate", "burst", "key"})
_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_PARAM: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_IMPORT: Final = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
# Starlette's convertors: what each placeholder matches within a path.
_CONVERTORS: Final = {
    "str": "[^/]+",
    "int": "[0-9]+",
    "float": r"[0-9]+(?:\.[0-9]+)?",
    "uuid": "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "path": ".*",
}
_PERSON: Final = b"asgikit-rl"


class RuleSpec(TypedDict, total=False):
    """One rate-limit rule, as written in code or a config file.

    ``path`` (a prefix, on whole segments) or ``route`` (a template such as
    ``/users/{id}``) selects the requests; neither means every path. ``methods``
    narrows it (websocket connects count as ``GET``). ``rate`` is ``"<count>/<period>"``;
    ``burst`` the requests allowed at once (default: the count). ``key`` overrides the
    middleware's ``key`` option for this rule.
    """

    name: str
    path: str
    route: str
    methods: Sequence[str]
    rate: str
    burst: int
    key: str


def _digest(value: str) -> str:
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@functools.lru_cache(maxsize=8192)
def client_digest(host: str, ipv6_prefix: int) -> str:
    """The hashed bucket of a client address: IPv6 grouped by ``/ipv6_prefix``,
    IPv4-mapped IPv6 as the IPv4 address, anything else (a hostname) as given."""
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            return _digest(host)
        mapped = address.ipv4_mapped
        if mapped is not None:
            return _digest(str(mapped))
        network = int(address) >> (128 - ipv6_prefix)
        return _digest(f"{network:x}/{ipv6_prefix}")
    return _digest(host)


def compile_route(template: str, where: str = "route") -> re.Pattern[str]:
    """A pattern matching the paths of a route template (Starlette's placeholder syntax:
    ``{name}``, ``{name:int}``, ``{name:path}``...), compiled once."""
    if not template.startswith("/"):
        raise ValueError(f"{where}: expected a template starting with '/', got {template!r}")
    parts: list[str] = []
    position = 0
    for placeholder in _PARAM.finditer(template):
        parts.append(re.escape(template[position : placeholder.start()]))
        convertor = placeholder.group(2) or "str"
        if convertor not in _CONVERTORS:
            known = ", ".join(_CONVERTORS)
            raise ValueError(f"{where}: unknown convertor {convertor!r} (known: {known})")
        parts.append(_CONVERTORS[convertor])
        position = placeholder.end()
    rest = template[position:]
    if "{" in rest or "}" in rest:
        raise ValueError(f"{where}: malformed placeholder in {template!r}")
    parts.append(re.escape(rest))
    return re.compile("".join(parts))


def _storage_key(
    key: object, where: str, ipv6_prefix: int, name: str, route: str
) -> Callable[[Scope], str]:
    """``scope -> "<name>:<kind>:<digest>"`` for a ``key`` option (``route`` names the
    rule's template or prefix, for the ``route`` kind)."""
    if not isinstance(key, str):
        raise TypeError(f"{where}: expected a str, got {key!r}")
    if key == "client":
        prefix = f"{name}:client:"
        anonymous = prefix + ANONYMOUS

        def client_key(scope: Scope) -> str:
            peer = scope.get("client")
            return prefix + client_digest(peer[0], ipv6_prefix) if peer else anonymous

        return client_key
    if key == "route":  # the template (or prefix), never the raw path
        route_key = f"{name}:route:{_digest(route)}"
        return lambda scope: route_key
    if key.startswith("header:"):
        header_name = key[7:].strip().lower()
        if not _TOKEN.fullmatch(header_name):
            raise ValueError(f"{where}: 'header:<name>' needs a header name, got {key!r}")
        raw_name = header_name.encode("ascii")
        prefix = f"{name}:header:"
        anonymous = prefix + ANONYMOUS

        def header_key(scope: Scope) -> str:
            value = get_header(scope["headers"], raw_name)
            if not value:
                return anonymous
            return prefix + hashlib.blake2b(value, digest_size=16, person=_PERSON).hexdigest()

        return header_key
    if _IMPORT.fullmatch(key):
        module_name, _, attribute = key.partition(":")
        try:
            target: object = importlib.import_module(module_name)
            for part in attribute.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"{where}: cannot import {key!r}: {exc}") from exc
        if not callable(target):
            raise TypeError(f"{where}: {key!r} is not callable")
        func: Callable[[Scope], object] = target
        prefix = f"{name}:func:"
        anonymous = prefix + ANONYMOUS

        def custom_key(scope: Scope) -> str:
            value = func(scope)
            return prefix + _digest(value) if isinstance(value, str) and value else anonymous

        return custom_key
    raise ValueError(
        f"{where}: expected 'client', 'route', 'header:<name>' or 'module:function', got {key!r}"
    )


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


class RuleSet:
    """The rules in order; ``match`` returns those applying to a request."""

    __slots__ = ("_by_method", "_everywhere", "rules")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
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


def _methods(value: object, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f"{where}: expected a list of methods, got {value!r}")
    methods = set()
    for method in value:
        if not isinstance(method, str) or not _TOKEN.fullmatch(method):
            raise ValueError(f"{where}: {method!r} is not an HTTP method")
        methods.add(method.upper())
    if not methods:
        raise ValueError(f"{where}: an empty list would match nothing; leave it out instead")
    if "GET" in methods:
        # Frameworks answer HEAD with the GET handler: it costs the same work, so it
        # counts against the same rule instead of going round it.
        methods.add("HEAD")
    return frozenset(methods)


def _quota(spec: Mapping[str, object], where: str) -> Quota:
    rate = spec.get("rate")
    if not isinstance(rate, str):
        raise ValueError(f"{where}.rate: expected '<count>/<period>' such as '100/minute'")
    try:
        limit, period = parse_rate(rate)
    except ValueError as exc:
        raise ValueError(f"{where}.rate: {exc}") from exc
    burst = bounded_int(spec.get("burst", limit), f"{where}.burst", 1)
    return Quota(limit=limit, period=period, burst=burst)


def _rule(
    spec: Mapping[str, object], where: str, name: str, default_key: str, ipv6_prefix: int
) -> Rule:
    path, route = spec.get("path"), spec.get("route")
    if path is not None and route is not None:
        raise ValueError(f"{where}: give 'path' (a prefix) or 'route' (a template), not both")
    matches_path: Callable[[str], object] | None = None
    if route is not None:
        if not isinstance(route, str):
            raise ValueError(f"{where}.route: expected a template such as '/users/{{id}}'")
        matches_path = compile_route(route, f"{where}.route").fullmatch
    elif path is not None:
        pattern = path_pattern(path, f"{where}.path")
        matches_path = None if pattern == "/" else PathMatcher([pattern], f"{where}.path")
    quota = _quota(spec, where)
    label = str(route if route is not None else path or "*")
    storage_key = _storage_key(
        spec.get("key", default_key), f"{where}.key", ipv6_prefix, name, label
    )
    window = max(1, math.ceil(quota.period))
    policy = f'"{name}";q={quota.limit};w={window}'.encode("ascii")
    return Rule(
        name=name,
        matches_path=matches_path,
        methods=_methods(spec.get("methods"), f"{where}.methods"),
        quota=quota,
        storage_key=storage_key,
        policy=policy,
        policy_field=(b"ratelimit-policy", policy),
        member=f'"{name}";r=%d;t=%d'.encode("ascii"),
        interval=quota.interval_us / 1e6,
        tolerance=quota.tolerance_us / 1e6,
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
    _storage_key(key, "key", ipv6_prefix, "default", "*")  # checked even if unused
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
