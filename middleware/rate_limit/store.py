"""Rate-limit storage: GCRA decisions kept in process memory or in Redis.

Pure logic, no ASGI. The middleware builds and hashes the keys, picks a ``Quota`` per
rule and asks a ``Store`` for one ``Decision`` per ``(key, quota)``. A store answers
all-or-nothing: the keys are consumed only when every check allows.

GCRA (the generic cell rate algorithm) keeps one value per key, the theoretical arrival
time (TAT). With emission interval ``T = period / limit`` and tolerance
``tau = T * burst``::

    tat = max(stored_tat or now, now); new_tat = tat + T
    allowed iff new_tat - now <= tau   (then store new_tat until it is in the past)

A check may weigh more than one request (GCRA with *n* cells): ``need`` cells must fit
(``tat + need * T - now <= tau``) and ``take`` cells are consumed when every check of the
call allows (``new_tat = tat + take * T``). A plain ``(key, quota)`` check is
``need = take = 1``; a charge after the response is ``need = -1`` (never refused: the bucket
may go into debt, and later requests wait until it is paid). A negative ``take`` gives
cells back (a refund); a TAT that falls to now or earlier is dropped.

Times are whole microseconds: ``T`` is rounded to the microsecond once per quota and
``tau`` is an exact multiple of it, so a fresh key allows exactly ``burst`` requests at
once, with no floating-point drift at the edge. ``MemoryStore`` is the in-process store;
``RedisStore`` (``redis_store``, the ``redis`` extra) shares limits across
processes and hosts.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple, Protocol

from asgikit.options import bounded_int, number

__all__ = [
    "Check",
    "Decision",
    "MemoryStore",
    "Quota",
    "Store",
    "StoreError",
    "parse_rate",
]

MICROSECONDS: Final = 1_000_000

_UNITS: Final = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*", re.IGNORECASE).fullmatch


class StoreError(Exception):
    """The backend failed or exceeded its time budget (Redis down, timeout, NOSCRIPT loop...)."""


def parse_rate(text: str) -> tuple[int, float]:
    """Parse a rate such as ``"100/minute"`` into ``(count, period_seconds)``.

    Accepts ``<count>/<unit>`` and ``<count>/<n><unit>`` (``"5/10s"``, ``"1000/2h"``);
    units are s, sec, second, m, min, minute, h, hour, d, day, each also plural.

    Raises:
        ValueError: the text is not a rate, the count is below 1 or the period is 0.
    """
    match = _RATE(text) if isinstance(text, str) else None
    if match is None or match[3].lower() not in _UNITS:
        raise ValueError(
            f"expected '<count>/<period>' such as '100/minute' or '5/10s', got {text!r}"
        )
    count = int(match[1])
    period = float(match[2] or 1) * _UNITS[match[3].lower()]
    if count < 1:
        raise ValueError(f"the count must be at least 1, got {text!r}")
    if period <= 0:
        raise ValueError(f"the period must be more than 0, got {text!r}")
    return count, period


@dataclass(frozen=True, slots=True)
class Quota:
    """What one rule allows: ``limit`` requests per ``period`` seconds, ``burst`` at once.

    ``limit`` and ``period`` are ``q`` and ``w`` in ``RateLimit-Policy``; ``burst`` is the
    bucket capacity (a rule's default is ``limit``). ``interval_us`` (GCRA's ``T``, at
    least 1) and ``tolerance_us`` (``tau = T * burst``) are derived, in microseconds.
    """

    limit: int
    period: float
    burst: int
    interval_us: int = field(init=False, repr=False, compare=False)
    tolerance_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bounded_int(self.limit, "limit", 1)
        number(self.period, "period", above=0)
        bounded_int(self.burst, "burst", 1)
        interval = max(1, round(self.period * MICROSECONDS / self.limit))
        object.__setattr__(self, "interval_us", interval)
        object.__setattr__(self, "tolerance_us", interval * self.burst)


class Decision(NamedTuple):
    """The answer for one ``(key, quota)`` check.

    ``remaining``: requests still allowed immediately after this one (0 when denied);
    ``reset``: seconds until the bucket is full again; ``retry_after``: seconds until one
    more request would be allowed (0.0 when allowed). A named tuple: one is made per
    rule per request, and that is twice as fast as a frozen dataclass.
    """

    allowed: bool
    remaining: int
    reset: float
    retry_after: float


Check = tuple[str, Quota] | tuple[str, Quota, int, int]
"""``(key, quota)`` (one request) or ``(key, quota, need, take)`` in cells (see above)."""

CHARGE: Final = -1
"""The ``need`` of a charge: the check always allows, whatever the bucket holds."""


def weigh(check: Check) -> tuple[str, Quota, int, int]:
    """``(key, quota, need, take)`` of a check."""
    if len(check) == 2:
        return check[0], check[1], 1, 1
    return check


class Store(Protocol):
    """Where GCRA state lives. ``round_trips`` counts backend calls."""

    round_trips: int

    async def open(self) -> None:
        """Prepare the backend (idempotent; lifespan startup may call it)."""

    async def close(self) -> None:
        """Release the backend (idempotent; lifespan shutdown calls it)."""

    async def acquire(self, checks: Sequence[Check]) -> list[Decision]:
        """One decision per check, in order, all-or-nothing.

        The keys are consumed only when every check allows; otherwise nothing is
        consumed, the denied checks say when to retry, and the allowed ones report what
        they would have given. Raises ``StoreError`` on backend failure or when the time
        budget is exceeded. An empty sequence returns ``[]``.
        """
        ...


def _decide(
    checks: Sequence[Check], now: int, stored: Callable[[str], int | None]
) -> tuple[list[Decision], dict[str, int] | None]:
    """GCRA for *checks* at *now* (microseconds), reading TATs through *stored*.

    Returns the decisions and, when every check allows, the new TAT per key to store
    (``None`` when any check denies; a TAT at or before *now* means: drop the key). A key
    checked twice sees its first check's TAT.
    """
    decisions: list[Decision] = []
    pending: dict[str, int] = {}
    allowed_all = True
    for check in checks:
        if len(check) == 2:  # inline weigh(): this loop runs per rule per request
            key, quota = check
            need = take = 1
        else:
            key, quota, need, take = check
        tat = pending.get(key)
        if tat is None:
            tat = stored(key)
        if tat is None or tat < now:
            tat = now
        interval = quota.interval_us
        tolerance = quota.tolerance_us
        wait = tat + need * interval - now
        if need < 0 or wait <= tolerance:
            new_tat = tat + take * interval
            if take:
                pending[key] = new_tat
            held = max(0, new_tat - now)
            remaining = max(0, (tolerance - held) // interval)
            decisions.append(Decision(True, remaining, held / MICROSECONDS, 0.0))
        else:
            allowed_all = False
            decisions.append(
                Decision(False, 0, (tat - now) / MICROSECONDS, (wait - tolerance) / MICROSECONDS)
            )
    return decisions, pending if allowed_all else None


class MemoryStore:
    """GCRA state in this process: a bounded LRU map from key to TAT.

    At most ``max_keys`` keys are kept; adding one more evicts the least recently
    consumed key (counted in ``evictions``), so any number of distinct keys cannot grow
    memory past the bound. An evicted or expired key starts fresh. Each ``acquire`` is
    O(number of checks) and never awaits between reading and writing, so it is atomic
    within one event loop, on asyncio and trio alike. Limits are per process.

    Args:
        max_keys: how many keys to keep (at least 1).
        clock: seconds from a monotonic clock; injectable for tests.
    """

    __slots__ = ("_clock", "_max_keys", "_tats", "evictions", "round_trips")

    def __init__(self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic):
        bounded_int(max_keys, "max_keys", 1)
        self._max_keys = max_keys
        self._clock = clock
        self._tats: OrderedDict[str, int] = OrderedDict()
        self.evictions = 0
        self.round_trips = 0

    def __len__(self) -> int:
        return len(self._tats)

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close; the state stays (a later request may still use it)."""

    async def acquire(self, checks: Sequence[Check]) -> list[Decision]:
        """One decision per check, all-or-nothing (see ``Store.acquire``)."""
        if not checks:
            return []
        self.round_trips += 1
        tats = self._tats
        now = round(self._clock() * MICROSECONDS)
        decisions, consumed = _decide(checks, now, tats.get)
        if consumed:
            for key, tat in consumed.items():
                if key in tats:
                    tats.move_to_end(key)
                if tat > now:
                    tats[key] = tat
                else:  # refunded down to nothing: a full bucket, like a missing key
                    tats.pop(key, None)
            while len(tats) > self._max_keys:
                tats.popitem(last=False)
                self.evictions += 1
        return decisions
