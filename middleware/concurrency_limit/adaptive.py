"""The adaptive limit: a gradient controller in the manner of Envoy's adaptive concurrency
filter, as pure logic (no I/O, no event loop; the clock and the randomness are given).

Theory of operation
===================

The controller keeps one number, ``limit``: how many requests may be in flight. It learns
it from the latency of completed requests, fed to :meth:`GradientController.sample`.

1. **min RTT.** First, and then every ``min_rtt_interval`` seconds (delayed by up to
   ``jitter`` of it, at random, so that workers started together do not measure
   together), the limit is pinned to ``min_limit`` until ``min_rtt_requests`` requests
   admitted in that window completed. The ``percentile`` of their latencies is the min
   RTT: what a request costs when the app is not loaded. The limit in force before is
   then restored. Only requests admitted since the window opened count against
   ``min_limit`` (the group keeps apart the ones already in flight: a stream or a long
   poll admitted before must not starve the window). A window lasts at most
   ``WINDOW_SECONDS`` (or 20 min RTTs, if longer): then it closes with the samples it
   has, or, with none, restores the limit in force before (``initial_limit`` the
   first time) and keeps the last min RTT. A window also starts when the limit sat at
   ``min_limit`` for five updates in a row (the app may have become slower for good,
   and the old min RTT would keep the limit down).
2. **Updates.** Between windows, every ``sample_interval`` seconds (and at least three
   min RTTs, so that most latencies of an interval come from requests admitted under
   the limit it judges: feedback that lags the limit makes it swing), the
   ``percentile`` of the latencies completed in the interval is the sample RTT, and::

       gradient = clamp(min_rtt * (1 + buffer) / sample_rtt, 0.5, 2.0)
       limit = clamp(int(limit * gradient + sqrt(limit * gradient)), min_limit, max_limit)

   Latency within ``buffer`` of the min RTT lets the limit grow; more makes it shrink,
   by half at most per update. The square root is headroom for bursts.
3. **No growth without demand** (not in Envoy; Netflix's concurrency-limits does
   something alike): the limit never grows past twice the most requests seen in
   flight during the interval. A quiet server therefore keeps a limit near what it
   serves, instead of drifting to ``max_limit`` and letting a sudden burst in whole.

Updates happen when a sample arrives; a server without requests changes nothing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Final, TypedDict

from asgikit.options import bounded_int, number

__all__ = ["GradientController", "GradientParams", "GradientSpec", "build_params", "percentile"]

WINDOW_SECONDS: Final = 1.0  # the longest min RTT window, unless 20 min RTTs are longer
_WINDOW_RTTS: Final = 20.0
_AT_MIN_UPDATES: Final = 5  # updates at min_limit that start a new min RTT window
_MAX_SAMPLES: Final = 10_000  # per interval; past it, a uniform reservoir
_RTTS_PER_INTERVAL: Final = 3.0  # the least update interval, in min RTTs
_SHORTEST: Final = 1e-6  # a latency below a microsecond is a clock artefact


class GradientSpec(TypedDict, total=False):
    """The adaptive limit's parameters, as written in code or a config file (all
    optional; see :class:`GradientParams` for their meaning and defaults)."""

    initial_limit: int
    min_limit: int
    max_limit: int
    sample_interval: float
    percentile: float
    min_rtt_interval: float
    min_rtt_requests: int
    jitter: float
    buffer: float


@dataclass(frozen=True, slots=True)
class GradientParams:
    """The adaptive limit's parameters.

    Attributes:
        initial_limit: The limit after the first min RTT window.
        min_limit: The least limit, and the limit during a min RTT window.
        max_limit: The greatest limit.
        sample_interval: Seconds between limit updates (and at least three min RTTs).
        percentile: Which percentile of the latencies (0-100] is the sample RTT and the
            min RTT (50: the median).
        min_rtt_interval: Seconds between min RTT windows.
        min_rtt_requests: Completed requests a min RTT window measures.
        jitter: The fraction of ``min_rtt_interval`` by which a window is delayed, at
            random (0 to 1).
        buffer: The latency above the min RTT, as a fraction of it, that still lets
            the limit grow.
    """

    initial_limit: int = 20
    min_limit: int = 3
    max_limit: int = 1000
    sample_interval: float = 0.1
    percentile: float = 50.0
    min_rtt_interval: float = 60.0
    min_rtt_requests: int = 50
    jitter: float = 0.1
    buffer: float = 0.25


_FIELDS: Final = frozenset(f.name for f in fields(GradientParams))


def build_params(spec: Mapping[str, object] | None, option: str = "gradient") -> GradientParams:
    """*spec* checked into :class:`GradientParams` (None: the defaults).

    Raises:
        TypeError: *spec* is not a mapping, or a value has the wrong type.
        ValueError: An unknown key, or a value out of range; the message starts with
            ``option.key``.
    """
    if spec is None:
        return GradientParams()
    if not isinstance(spec, Mapping):
        raise TypeError(f"{option}: expected a table of parameters, got {spec!r}")
    unknown = sorted(set(spec) - _FIELDS)
    if unknown:
        raise ValueError(f"{option}: unknown parameter {unknown[0]!r}; known: {sorted(_FIELDS)}")
    d = GradientParams()
    min_limit = bounded_int(spec.get("min_limit", d.min_limit), f"{option}.min_limit", 1)
    max_limit = bounded_int(spec.get("max_limit", d.max_limit), f"{option}.max_limit", min_limit)
    initial = spec.get("initial_limit", max(min_limit, min(d.initial_limit, max_limit)))
    return GradientParams(
        initial_limit=bounded_int(initial, f"{option}.initial_limit", min_limit, max_limit),
        min_limit=min_limit,
        max_limit=max_limit,
        sample_interval=number(
            spec.get("sample_interval", d.sample_interval), f"{option}.sample_interval", above=0
        ),
        percentile=number(
            spec.get("percentile", d.percentile), f"{option}.percentile", above=0, maximum=100
        ),
        min_rtt_interval=number(
            spec.get("min_rtt_interval", d.min_rtt_interval), f"{option}.min_rtt_interval", above=0
        ),
        min_rtt_requests=bounded_int(
            spec.get("min_rtt_requests", d.min_rtt_requests), f"{option}.min_rtt_requests", 1
        ),
        jitter=number(spec.get("jitter", d.jitter), f"{option}.jitter", minimum=0, maximum=1),
        buffer=number(spec.get("buffer", d.buffer), f"{option}.buffer", minimum=0),
    )


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank *pct* percentile of *values* (not empty); sorts *values*."""
    values.sort()
    rank = math.ceil(pct / 100.0 * len(values))
    return values[min(len(values), max(1, rank)) - 1]


class GradientController:
    """The limit of one group of requests, learnt from their latencies.

    Args:
        params: The parameters.
        clock: Seconds on a monotonic clock; the same clock as the ``started`` times
            given to :meth:`sample`.
        rand: Uniform numbers in [0, 1), for the jitter and the sample reservoir.

    Attributes:
        limit: How many requests may be in flight now.
        min_rtt: The latest min RTT, in seconds (None until the first window ends).
        sample_rtt: The latest sample RTT, in seconds (None until the first update).
        measuring: Whether a min RTT window is open (the limit is pinned).
        window_start: When the open (or last) min RTT window opened, on the clock;
            requests started before it do not count against the pinned limit.
    """

    __slots__ = (
        "_at_min",
        "_clock",
        "_deadline",
        "_next_event",
        "_next_update",
        "_next_window",
        "_overflow",
        "_peak",
        "_rand",
        "_restore",
        "_samples",
        "limit",
        "measuring",
        "min_rtt",
        "params",
        "sample_rtt",
        "window_start",
    )

    def __init__(
        self,
        params: GradientParams,
        clock: Callable[[], float],
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.params = params
        self._clock = clock
        self._rand = rand
        self.limit = params.min_limit
        self.min_rtt: float | None = None
        self.sample_rtt: float | None = None
        self.measuring = True  # the first window starts at once: no min RTT yet
        self.window_start = -math.inf  # every request counts for the first window
        self._deadline = math.inf  # the first window's time runs from its first event
        self._restore = params.initial_limit
        self._samples: list[float] = []
        self._overflow = 0
        self._peak = 0
        self._at_min = 0
        self._next_update = math.inf
        self._next_window = math.inf
        self._next_event = -math.inf  # the next sample that has something to decide

    def sample(self, started: float, in_flight: int) -> bool:
        """Record one request that completed now, started at *started* (the clock's
        time) with *in_flight* requests in flight, itself included.

        Returns:
            Whether ``limit`` changed.
        """
        now = self._clock()
        samples = self._samples
        if now < self._next_event and len(samples) < _MAX_SAMPLES:
            # Every request's path, kept short: nothing to decide until the interval ends.
            samples.append(now - started)
            if in_flight > self._peak:
                self._peak = in_flight
            return False
        return self._decide(started, now, in_flight)

    def _decide(self, started: float, now: float, in_flight: int) -> bool:
        latency = now - started
        if self.measuring:
            if self._deadline == math.inf:
                self._deadline = now + WINDOW_SECONDS
            if started >= self.window_start:  # not admitted before the limit was pinned
                self._keep(latency)
            if len(self._samples) < self.params.min_rtt_requests and now < self._deadline:
                return False
            return self._end_window(now)
        if now >= self._next_window:
            return self._start_window(now, self.limit)
        self._keep(latency)
        if in_flight > self._peak:
            self._peak = in_flight
        if now < self._next_update:
            return False
        return self._update(now)

    def expire(self) -> bool:
        """Close a min RTT window that outlived its time (the middleware calls it when
        a request would wait: requests that never complete feed no sample).

        Returns:
            Whether the window closed.
        """
        if not self.measuring:
            return False
        now = self._clock()
        if self._deadline == math.inf:
            self._deadline = now + WINDOW_SECONDS
        # A millisecond early counts: a waiter's timer may fire a hair before the
        # deadline it was set for.
        if now < self._deadline - 0.001:
            return False
        self._end_window(now)
        return True

    def _keep(self, latency: float) -> None:
        if len(self._samples) < _MAX_SAMPLES:
            self._samples.append(latency)
            return
        self._overflow += 1
        # A reservoir: the n-th sample replaces a random one with probability k/n.
        slot = int(self._rand() * (_MAX_SAMPLES + self._overflow))
        if slot < _MAX_SAMPLES:
            self._samples[slot] = latency

    def _interval(self) -> float:
        """Seconds until the next update: ``sample_interval``, and at least three min
        RTTs, so that most latencies of an interval come from requests admitted under
        the limit it ends (a limit judged by older ones overshoots, and swings)."""
        assert self.min_rtt is not None
        return max(self.params.sample_interval, _RTTS_PER_INTERVAL * self.min_rtt)

    def _reset_samples(self) -> None:
        self._samples = []
        self._overflow = 0
        self._peak = 0

    def _start_window(self, now: float, restore: int) -> bool:
        previous = self.limit
        self.measuring = True
        self._next_event = -math.inf  # every sample counts towards the window
        self.window_start = now
        self._deadline = now + max(WINDOW_SECONDS, _WINDOW_RTTS * (self.min_rtt or 0.0))
        self._restore = restore
        self.limit = self.params.min_limit
        self._at_min = 0
        self._reset_samples()
        return self.limit != previous

    def _end_window(self, now: float) -> bool:
        p = self.params
        if self._samples:  # else (a window that measured nothing) the last min RTT stays
            self.min_rtt = max(_SHORTEST, percentile(self._samples, p.percentile))
        self.measuring = False
        self._reset_samples()
        # No update without a min RTT to judge by: the limit stays until a window measures.
        self._next_update = math.inf if self.min_rtt is None else now + self._interval()
        self._next_window = now + p.min_rtt_interval * (1.0 + p.jitter * self._rand())
        self._next_event = min(self._next_update, self._next_window)
        previous = self.limit
        self.limit = self._restore
        return self.limit != previous

    def _update(self, now: float) -> bool:
        p = self.params
        assert self.min_rtt is not None  # set when the first window ended
        self.sample_rtt = max(_SHORTEST, percentile(self._samples, p.percentile))
        gradient = self.min_rtt * (1.0 + p.buffer) / self.sample_rtt
        gradient = min(2.0, max(0.5, gradient))
        scaled = self.limit * gradient
        limit = int(scaled + math.sqrt(scaled))
        if limit > self.limit:  # growth only as far as demand reached
            limit = max(self.limit, min(limit, 2 * self._peak))
        limit = min(p.max_limit, max(p.min_limit, limit))
        self._reset_samples()
        self._next_update = now + self._interval()
        self._next_event = min(self._next_update, self._next_window)
        self._at_min = self._at_min + 1 if limit == p.min_limit else 0
        if self._at_min >= _AT_MIN_UPDATES:
            return self._start_window(now, limit)
        previous = self.limit
        self.limit = limit
        return limit != previous
