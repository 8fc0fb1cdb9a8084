"""ConcurrencyLimitMiddleware's groups: their slots and wait queue, and the rules that
say which group a request belongs to.

Nothing here answers a request. A :class:`Group` counts the requests in flight against
its limit (fixed, or its :class:`~.adaptive.GradientController`'s), queues the ones over
it in FIFO order, and hands a freed slot straight to the first waiter, so a request
arriving later never takes it first. ``build_groups`` validates the options once; the
rules select requests with the kit's rule vocabulary (``asgikit.paths.selector``).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict

import anyio

from asgikit.answers import DECISION_FIELD
from asgikit.options import bounded_int, positive_seconds
from asgikit.paths import SELECTOR_FIELDS, RuleTable, Selector, selector
from asgikit.scopes import DECISION_KEY
from asgikit.types import Scope

from .adaptive import GradientController, GradientParams

__all__ = ["AUTO", "ConcurrencyRuleSpec", "Group", "Groups", "build_groups", "limit_option"]

AUTO: Final = "auto"
GROUP_ATTRIBUTE: Final = "asgikit.concurrency.group"
_TIMED_OUT: Final = "timed_out"  # TimeoutMiddleware's decision: the app's own slowness
FIXED_WAIT: Final = 1.0  # seconds a request may queue for a fixed limit, by default
RETRY_CAP: Final = 60  # the most Retry-After a group's latency makes (long requests)
_log = logging.getLogger("asgikit.concurrency_limit")
_RULE_FIELDS: Final = SELECTOR_FIELDS | {"name", "max_concurrency", "queue_size", "max_wait"}
_NAME: Final = re.compile(r"[A-Za-z0-9_.\-/{}:*]{1,64}")


class ConcurrencyRuleSpec(TypedDict, total=False):
    """One group of requests with its own limit, as written in code or a config file.

    ``path`` (a path pattern: a prefix on whole segments, or ``/x*``) or ``route`` (a
    template such as ``/reports/{id}``) selects the requests; ``methods`` narrows it.
    ``max_concurrency`` is a number or ``"auto"``; ``queue_size`` and ``max_wait``
    override the middleware's for this group. ``name`` (default: the path or route)
    names the group in metrics and logs.
    """

    name: str
    path: str
    route: str
    methods: Sequence[str]
    max_concurrency: int | Literal["auto"]
    queue_size: int
    max_wait: float


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False


def _unobserved(group: Group, previous: int) -> None:
    """What a group does when its limit changes and nobody listens: nothing."""


class Group:
    """The slots and the wait queue of one group.

    Attributes:
        name: The group's name (``default`` for the process-wide limit).
        limit: How many requests may be in flight now.
        in_flight: Requests holding a slot.
        before_window: Of those, the ones admitted before the open min RTT window of an
            adaptive limit: they hold their slots, but ``limit`` counts them on top of
            the controller's, so that only the requests admitted since the window
            opened count against ``min_limit``.
        waiters: Requests queued for a slot, first come first.
        controller: The adaptive limit's controller, or None for a fixed limit.
        attributes: The metric attributes of the group.
        on_change: Called with the group and its previous limit when an adaptive limit
            changed.
    """

    __slots__ = (
        "__weakref__",
        "attributes",
        "before_window",
        "buffer",
        "controller",
        "fixed_retry",
        "hook_failed",
        "in_flight",
        "limit",
        "max_wait",
        "name",
        "on_change",
        "queue_size",
        "waiters",
    )

    def __init__(
        self,
        name: str,
        limit: int | GradientController,
        queue_size: int,
        max_wait: float | None,
    ) -> None:
        self.name = name
        self.controller = limit if isinstance(limit, GradientController) else None
        self.limit = limit.limit if isinstance(limit, GradientController) else limit
        self.buffer = limit.params.buffer if isinstance(limit, GradientController) else 0.0
        self.in_flight = 0
        self.before_window = 0
        self.hook_failed = False
        self.waiters: deque[_Waiter] = deque()
        self.queue_size = queue_size
        self.max_wait = max_wait
        self.attributes: Mapping[str, str] = {GROUP_ATTRIBUTE: name}
        self.on_change: Callable[[Group, int], None] = _unobserved
        self.fixed_retry: int | None = None

    def grant(self) -> None:
        """Hand free slots to the first waiters (the slot moves: it is never free).

        Called whenever a slot frees or the limit grows, so that nobody waits while a
        slot is free: the middleware's fast path relies on it."""
        waiters = self.waiters
        while waiters and self.in_flight < self.limit:
            waiter = waiters.popleft()
            self.in_flight += 1
            waiter.granted = True
            waiter.event.set()

    def release(self, started: float | None = None) -> None:
        """Give a slot back (*started*: when an adaptive group's request started)."""
        self.in_flight -= 1
        controller = self.controller
        if (
            started is not None
            and self.before_window
            and controller is not None
            and started < controller.window_start  # admitted before the window opened
        ):
            self.before_window -= 1
            self.limit -= 1  # it freed no slot for the window's requests
        if self.waiters:
            self.grant()

    def finished(self, started: float, scope: Scope) -> None:
        """Give back the slot of an http request the app answered, and feed its latency
        to the controller (adaptive groups only), unless an inner layer answered in the
        app's place (its decision recorded with ``decide``): a 429 or a 413 is quick,
        and not the app's latency; a timeout's 504 is, the app was that slow."""
        try:
            decisions = scope.get(DECISION_KEY)
            if not decisions or decisions.get(DECISION_FIELD, _TIMED_OUT) == _TIMED_OUT:
                controller = self.controller
                assert controller is not None
                measuring = controller.measuring
                if controller.sample(started, self.in_flight) or measuring != controller.measuring:
                    self.follow()
        finally:
            self.release(started)

    def follow(self) -> None:
        """Take the controller's limit when it changed or a window opened or closed
        (never within a window): when one opens, the requests in flight are set apart
        (see ``before_window``)."""
        controller = self.controller
        assert controller is not None
        self.before_window = self.in_flight if controller.measuring else 0
        previous, self.limit = self.limit, controller.limit + self.before_window
        if self.limit == previous:
            return
        try:
            self.on_change(self, previous)
        except Exception:  # a log line must not cost a slot, nor the request
            if not self.hook_failed:
                self.hook_failed = True
                _log.exception("concurrency_limit: the limit_changed hook failed")
        self.grant()

    def wait_budget(self) -> float:
        """How long a request may queue: ``max_wait``, or by default one second for a
        fixed limit, and the latency the controller tolerates (``buffer`` times the min
        RTT, at least a millisecond) for an adaptive one."""
        if self.max_wait is not None:
            return self.max_wait
        controller = self.controller
        if controller is None or controller.min_rtt is None:
            return FIXED_WAIT
        # At most FIXED_WAIT: a min RTT measured on long requests must not hold a
        # request in the queue for minutes.
        return min(FIXED_WAIT, max(0.001, controller.min_rtt * self.buffer))

    def retry_after(self) -> int:
        """Whole seconds after which a slot has likely freed: the latest latency the
        controller saw, rounded up (1 for a fixed limit, at least 1, at most
        ``RETRY_CAP``)."""
        if self.fixed_retry is not None:
            return self.fixed_retry
        controller = self.controller
        latency = None if controller is None else controller.sample_rtt or controller.min_rtt
        return 1 if latency is None or latency <= 1.0 else min(RETRY_CAP, math.ceil(latency))

    async def wait(self) -> str | None:
        """Queue for a slot: None once one is held, else why not (``"queue_full"`` or
        ``"max_wait"``). A cancelled waiter leaves the queue, or gives back the slot it
        was handed meanwhile."""
        controller = self.controller
        if controller is not None and controller.expire():  # a window outlived its time
            self.follow()
            if self.in_flight < self.limit and not self.waiters:
                self.in_flight += 1
                return None
        if len(self.waiters) >= self.queue_size:
            return "queue_full"
        waiter = _Waiter()
        self.waiters.append(waiter)
        try:
            with anyio.move_on_after(self.wait_budget()):
                await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release()
            else:
                self.waiters.remove(waiter)
            raise
        if not waiter.granted and controller is not None and controller.expire():
            self.follow()  # may grant this waiter its slot
        if waiter.granted:
            return None
        self.waiters.remove(waiter)
        return "max_wait"


@dataclass(frozen=True, slots=True)
class Groups:
    """The groups, and which one a request belongs to.

    Attributes:
        table: The rules' table (``match(path, method)`` gives the group, or None for
            no limit); None when there are no rules.
        default: The group of requests no rule matches (None: no limit).
        all: Every group, the default last.
    """

    table: RuleTable[Group | None] | None
    default: Group | None
    all: tuple[Group, ...]


def limit_option(value: object, where: str) -> int | Literal["auto"]:
    """A ``max_concurrency`` value: a positive int or ``"auto"``."""
    if value == AUTO:
        return AUTO
    if isinstance(value, str):
        raise ValueError(f"{where}: expected a positive integer or 'auto', got {value!r}")
    return bounded_int(value, where, 1)


def _rule(
    spec: object,
    where: str,
    names: set[str],
    defaults: tuple[int, float | None],
    make: Callable[[], GradientController],
) -> tuple[Selector, Group]:
    """One entry of ``rules`` checked into its selector and group (*names*: the group
    names taken so far, *defaults*: the middleware's ``queue_size`` and ``max_wait``)."""
    if not isinstance(spec, Mapping):
        raise TypeError(f"{where}: expected a mapping (a ConcurrencyRuleSpec), got {spec!r}")
    unknown = sorted(set(spec) - _RULE_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}; known: {sorted(_RULE_FIELDS)}")
    covers = selector(spec, where)
    name = spec.get("name", spec.get("path", spec.get("route", "*")))
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{where}.name: expected 1-64 of A-Z a-z 0-9 _ . - /, got {name!r}")
    if name in names:
        raise ValueError(f"{where}.name: {name!r} names another group")
    names.add(name)
    if "max_concurrency" not in spec:
        raise ValueError(f"{where}.max_concurrency: required (a positive integer or 'auto')")
    limit = limit_option(spec["max_concurrency"], f"{where}.max_concurrency")
    size = bounded_int(spec.get("queue_size", defaults[0]), f"{where}.queue_size", 0)
    wait = positive_seconds(spec.get("max_wait", defaults[1]), f"{where}.max_wait")
    return covers, Group(name, make() if limit == AUTO else limit, size, wait)


def build_groups(
    rules: Sequence[Mapping[str, Any]],
    default_limit: int | Literal["auto"] | None,
    queue_size: int,
    max_wait: float | None,
    params: GradientParams,
    clock: Callable[[], float] = time.monotonic,
) -> Groups:
    """The ``rules`` option checked into :class:`Groups` (the other arguments are the
    middleware's own, already checked). A request belongs to the most specific rule
    that matches: the longest ``path`` or ``route``, then one naming methods, then the
    first given."""
    if isinstance(rules, str | bytes | Mapping) or not isinstance(rules, Sequence):
        raise TypeError(f"rules: expected a list of rules, got {rules!r}")

    def make() -> GradientController:
        return GradientController(params, clock)

    names = {"default"}
    built = [
        _rule(spec, f"rules[{index}]", names, (queue_size, max_wait), make)
        for index, spec in enumerate(rules)
    ]
    default = None
    if default_limit is not None:
        limit = make() if default_limit == AUTO else default_limit
        default = Group("default", limit, queue_size, max_wait)
    groups = tuple(group for _, group in built) + ((default,) if default else ())
    table: RuleTable[Group | None] | None = RuleTable(built, default) if built else None
    return Groups(table, default, groups)
