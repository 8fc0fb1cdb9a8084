"""ConcurrencyLimitMiddleware's OpenTelemetry metrics and log lines.

The gauges are observed: the meter reads each group's counters when it collects, so a
request that is admitted and completes costs no metric call at all. Only a shed request
adds to a counter. Every instrument carries one bounded attribute,
``asgikit.concurrency.group``: a rule's name, or ``default``.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import structlog
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from asgikit import __version__

from .groups import Group

__all__ = ["Instruments"]

IN_FLIGHT: Final = "asgikit.concurrency.in_flight"
LIMIT: Final = "asgikit.concurrency.limit"
QUEUED: Final = "asgikit.concurrency.queued"
SHED: Final = "asgikit.concurrency.shed"


def _observer(
    groups: weakref.WeakSet[Group], read: Callable[[Group], int]
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        # A weak set: a meter provider outlives the middleware built for one test or
        # one app, and must not keep it alive. Groups of the same name in two
        # middlewares (two apps in one process) add up: one point per name.
        totals: dict[str, tuple[int, Mapping[str, str]]] = {}
        for group in list(groups):
            total = totals.get(group.name, (0, group.attributes))[0]
            totals[group.name] = (total + read(group), group.attributes)
        return [Observation(value, attributes) for value, attributes in totals.values()]

    return observe


# The observed groups by meter provider. An SDK meter registers an instrument's name
# once, and gives a second middleware on the same provider the first one's instrument,
# without its callback: so the gauges are registered once per provider, and observe
# every middleware's groups. Weak keys: a provider dropped is not kept alive here.
_observed: weakref.WeakKeyDictionary[Any, weakref.WeakSet[Group]] = weakref.WeakKeyDictionary()


def _groups_of(meter: Any, provider: Any) -> weakref.WeakSet[Group]:
    """The groups the gauges of *provider* observe, registering them the first time."""
    groups = _observed.get(provider)
    if groups is not None:
        return groups
    groups = _observed[provider] = weakref.WeakSet()
    meter.create_observable_up_down_counter(
        IN_FLIGHT,
        [_observer(groups, lambda g: g.in_flight)],
        unit="{request}",
        description="Requests holding a slot.",
    )
    meter.create_observable_up_down_counter(
        QUEUED,
        [_observer(groups, lambda g: len(g.waiters))],
        unit="{request}",
        description="Requests waiting for a slot.",
    )
    meter.create_observable_gauge(
        LIMIT,
        [_observer(groups, lambda g: g.limit)],
        unit="{request}",
        description="Requests allowed in flight at once (adaptive or fixed).",
    )
    return groups


class Instruments:
    """The metrics of a set of groups, and the rate-limited shedding warning.

    Args:
        groups: The groups observed.
        meter_provider: A ``MeterProvider``; None for the global one.
        log_interval: The shedding warning is logged at most once per this many seconds.
    """

    __slots__ = ("_last_warning", "_log_interval", "_logger", "_shed", "_suppressed")

    def __init__(self, groups: Sequence[Group], meter_provider: Any, log_interval: float) -> None:
        provider = metrics.get_meter_provider() if meter_provider is None else meter_provider
        meter = metrics.get_meter("asgikit", __version__, provider)
        _groups_of(meter, provider).update(groups)
        self._shed = meter.create_counter(
            SHED, unit="{request}", description="Requests answered 503 for want of a slot."
        )
        self._logger = structlog.get_logger("asgikit.concurrency_limit")
        self._log_interval = log_interval
        self._last_warning = -float("inf")
        self._suppressed = 0
        for group in groups:
            if group.controller is not None:
                group.on_change = self.limit_changed

    def shed(self, group: Group, reason: str) -> None:
        """Count a shed request; warn when shedding starts (at most once per interval)."""
        self._shed.add(1, group.attributes)
        now = time.monotonic()
        if now - self._last_warning < self._log_interval:
            self._suppressed += 1
            return
        self._last_warning = now
        self._logger.warning(
            "concurrency_limit.shedding",
            group=group.name,
            reason=reason,
            limit=group.limit,
            in_flight=group.in_flight,
            queued=len(group.waiters),
            suppressed=self._suppressed,
        )
        self._suppressed = 0

    def limit_changed(self, group: Group, previous: int) -> None:
        """Log an adaptive group's new limit (debug)."""
        controller = group.controller
        assert controller is not None
        self._logger.debug(
            "concurrency_limit.limit_changed",
            group=group.name,
            limit=group.limit,
            previous=previous,
            measuring=controller.measuring,
            min_rtt=controller.min_rtt,
            sample_rtt=controller.sample_rtt,
        )
