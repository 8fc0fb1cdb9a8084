"""Rate-limit decisions as OpenTelemetry metrics: one counter, per rule and outcome.

``asgikit.rate_limit.decisions`` (a monotonic counter of ``{decision}``) with two
attributes, both bounded: ``asgikit.rate_limit.rule`` (a configured rule's name) and
``asgikit.rate_limit.outcome``, one of ``OUTCOMES``.

A request only adds one to a plain integer: the counter is an *observable* one, whose
callback reads the totals when a reader collects (an SDK counter's ``add`` costs
microseconds per call, on every request). One instrument per meter provider sums every
live middleware's totals, so two middleware on one provider report together instead of
the second one's callback being dropped as a duplicate instrument.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from asgikit import __version__

from .rules import Rule

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation

__all__ = ["COUNTER", "OUTCOME", "OUTCOMES", "RULE", "DecisionMetrics"]

OUTCOMES: Final = ("allowed", "limited", "would_limit", "failed_open", "failed_closed")
"""``allowed``; ``limited`` (answered 429); ``would_limit`` (report-only mode);
``failed_open`` / ``failed_closed`` (the store or a rule function failed, and the
request was let through / answered 503)."""

COUNTER: Final = "asgikit.rate_limit.decisions"
RULE: Final = "asgikit.rate_limit.rule"
OUTCOME: Final = "asgikit.rate_limit.outcome"


class DecisionMetrics:
    """Counts decisions per rule and outcome, reported through *meter_provider*."""

    __slots__ = ("__weakref__", "counts")

    def __init__(self, meter_provider: Any, rule_names: Sequence[str]) -> None:
        # Every key made now: the dict never changes size, so a reader's thread may
        # iterate it while requests count.
        self.counts = {(name, outcome): 0 for name in rule_names for outcome in OUTCOMES}
        _instrument(meter_provider).sources.add(self)

    def record(self, rules: Sequence[Rule], outcome: str) -> None:
        """One decision of *outcome* for each of *rules*."""
        counts = self.counts
        for rule in rules:
            counts[rule.name, outcome] += 1


class _Instrument:
    """The observable counter of one meter provider, over every live ``DecisionMetrics``."""

    def __init__(self, meter_provider: Any) -> None:
        # Imported here, not with the module: importing the middleware does not load
        # OpenTelemetry (tests/test_layout.py).
        from opentelemetry import metrics

        self.sources: weakref.WeakSet[DecisionMetrics] = weakref.WeakSet()
        meter = metrics.get_meter("asgikit", __version__, meter_provider)
        meter.create_observable_counter(
            COUNTER,
            callbacks=[self._observe],
            unit="{decision}",
            description="Rate-limit decisions, per rule and outcome",
        )

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        totals: dict[tuple[str, str], int] = {}
        for source in list(self.sources):
            for key, value in list(source.counts.items()):
                if value:
                    totals[key] = totals.get(key, 0) + value
        return [
            Observation(value, {RULE: rule, OUTCOME: outcome})
            for (rule, outcome), value in totals.items()
        ]


_INSTRUMENTS: weakref.WeakKeyDictionary[Any, _Instrument] = weakref.WeakKeyDictionary()
"""Per meter provider, held weakly: a provider (and its instrument) goes when its owner
drops it. The instrument holds no reference to its provider."""

_UNWEAKABLE: dict[int, tuple[Any, _Instrument]] = {}
"""Providers that take no weak reference (``__slots__`` without ``__weakref__``): held
by identity, at most ``_UNWEAKABLE_MAX`` of them (the oldest goes first)."""
_UNWEAKABLE_MAX: Final = 64

_GLOBAL: list[_Instrument] = []
"""The instrument of the global provider (``meter_provider=None``)."""


def _instrument(meter_provider: Any) -> _Instrument:
    if meter_provider is None:
        if not _GLOBAL:
            _GLOBAL.append(_Instrument(None))
        return _GLOBAL[0]
    try:
        instrument = _INSTRUMENTS.get(meter_provider)
    except TypeError:  # no weak reference to it
        return _unweakable(meter_provider)
    if instrument is None:
        instrument = _INSTRUMENTS[meter_provider] = _Instrument(meter_provider)
    return instrument


def _unweakable(meter_provider: Any) -> _Instrument:
    entry = _UNWEAKABLE.get(id(meter_provider))
    if entry is None:
        while len(_UNWEAKABLE) >= _UNWEAKABLE_MAX:
            del _UNWEAKABLE[next(iter(_UNWEAKABLE))]
        # The provider is held too, so that its id is not reused by another object.
        entry = _UNWEAKABLE[id(meter_provider)] = (meter_provider, _Instrument(meter_provider))
    return entry[1]
