"""Per-request inputs of the rules: the caller's own rate, the cost, post-response usage.

Pure logic, no I/O. ``plan`` turns the matching rules into the store's checks: a rule
whose ``rate`` is a function gets the caller's quota (remembered per key for the rule's
``cache`` seconds, in a bounded map), a rule with a ``cost`` weighs the request, and a
rule that counts only some statuses takes its cells like any other (``accounting``
gives them back when the response's status does not count). A user function that
raises, or returns something unusable, becomes a ``RuleError``: the middleware then
follows ``on_backend_error``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

from asgikit.scopes import RATE_LIMIT_USAGE_KEY
from asgikit.types import Scope

from .rules import Rule, quota_of, with_quota
from .store import Check

__all__ = ["USAGE_KEY", "QuotaCache", "RuleError", "Usage", "plan"]

USAGE_KEY: Final = RATE_LIMIT_USAGE_KEY
"""The scope key of the ``Usage`` the app charges after the response (rules with
``usage``): ``asgikit.scopes.RATE_LIMIT_USAGE_KEY``."""


class RuleError(Exception):
    """A rule's ``rate`` or ``cost`` function raised or returned something unusable."""


class Usage:
    """What the app used beyond the request's cost (LLM tokens, bytes, query cost).

    ``scope["asgikit.rate_limit.usage"].charge(n)`` adds *n* cells; the total is charged
    to every ``usage`` rule of the request once the app has returned, in one store call.
    A charge never fails the response: it can take a bucket into debt, so later
    requests wait until it is paid back.
    """

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = 0

    def charge(self, cells: int) -> None:
        """Charge *cells* more (an integer, at least 0)."""
        if isinstance(cells, bool) or not isinstance(cells, int) or cells < 0:
            raise ValueError(f"charge: expected an integer of at least 0, got {cells!r}")
        self.used += cells


class QuotaCache:
    """The caller's rule (its quota) per store key, for the rule's ``cache`` seconds.

    At most ``max_keys`` entries; the least recently added goes first.
    """

    __slots__ = ("_clock", "_entries", "_max_keys", "_variants")

    def __init__(self, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_keys = max_keys
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Rule | None]] = OrderedDict()
        self._variants: dict[tuple[str, object], Rule | None] = {}

    def rule_for(self, rule: Rule, key: str, scope: Scope) -> Rule | None:
        """*rule* with this caller's quota, or None when the caller has no limit."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        assert rule.rate_of is not None
        try:
            value = rule.rate_of(scope)
            resolved = self._variant(rule, value)
        except Exception as exc:
            raise RuleError(f"rule {rule.name!r}: rate function failed: {exc!r}") from exc
        entries = self._entries
        entries.pop(key, None)
        entries[key] = (now + rule.cache, resolved)
        while len(entries) > self._max_keys:
            entries.popitem(last=False)
        return resolved

    def _variant(self, rule: Rule, value: object) -> Rule | None:
        """The rule for a rate function's answer, built once per distinct answer."""
        cached = self._variants.get((rule.name, value))
        if cached is not None or value is None:
            return cached
        if isinstance(value, tuple) and len(value) == 2:
            rate, burst = value
        else:
            rate, burst = value, rule.burst  # a plain rate: the rule's own burst, if any
        variant = with_quota(rule, quota_of(rate, burst, rule.name))
        if len(self._variants) >= 1024:  # plans are few; a flood of odd answers is not
            self._variants.clear()
        self._variants[(rule.name, value)] = variant
        return variant


def _cost(rule: Rule, scope: Scope) -> int:
    if rule.cost_of is None:
        return rule.cost
    try:
        cost = rule.cost_of(scope)
    except Exception as exc:
        raise RuleError(f"rule {rule.name!r}: cost function failed: {exc!r}") from exc
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
        raise RuleError(f"rule {rule.name!r}: cost function returned {cost!r}, not an int >= 0")
    return cost


def plan(rules: Sequence[Rule], scope: Scope, quotas: QuotaCache) -> tuple[list[Rule], list[Check]]:
    """The rules that apply to this caller and their store checks.

    Raises:
        RuleError: a rate or cost function failed.
    """
    applied: list[Rule] = []
    checks: list[Check] = []
    for rule in rules:
        key = rule.storage_key(scope)
        if rule.rate_of is not None:
            caller_rule = quotas.rule_for(rule, key, scope)
            if caller_rule is None:
                continue  # no limit for this caller
            rule = caller_rule
        cost = _cost(rule, scope)
        applied.append(rule)
        # Counting only some statuses too: taken now, so that attempts running at the same
        # time are bounded; given back after if the status does not count.
        checks.append((key, rule.quota, cost, cost))
    return applied, checks
