"""One watchdog per asyncio event loop for every request's deadline (TimeoutMiddleware).

Why this exists
===============

A deadline must be acted on by something other than the request's own task: an app
stuck in a worker thread, or one that swallows cancellation, never gets back to its task
in time. The portable way is a task group with a watchdog task per request, which is
what TimeoutMiddleware does on trio. On asyncio that costs about four times as much as
the app's own cancel scope (a task created, scheduled and joined per request, measured
in ``benchmarks/bench_timeout.py``), and nearly every request finishes long before its
deadline, so the watchdog's task is pure overhead.

Here one ``loop.call_at`` timer serves every request on the loop. Each request is put
in a FIFO queue for its limit's length in seconds: requests with the same limit are
queued in deadline order, so only the head of each queue can be due, adding and removing
a request are O(1) (``OrderedDict``), and memory holds only requests in flight. A request
re-armed for a later limit (``first_byte`` passed while streaming, ``total`` still to
come) goes on a small heap instead, since its deadline is out of queue order. Only when a
deadline passes does a task appear: the one that sends the middleware's answer.

This module is the one place in the middleware that calls asyncio directly (DESIGN.md
rule 8 asks for anyio): it is an optimisation of the scheduling only. The app still runs
in an anyio cancel scope, cancelled through anyio, so shielded scopes inside the app
behave as anyio promises.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

if TYPE_CHECKING:
    from .timeout import _Exchange

__all__ = ["Watches"]


class _Watch:
    """The deadlines of the requests running on one event loop."""

    __slots__ = ("armed_at", "handle", "late", "loop", "order", "queues")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queues: dict[float, OrderedDict[_Exchange, float]] = {}
        self.late: list[tuple[float, int, _Exchange]] = []
        self.order = itertools.count()  # ties on the heap never compare exchanges
        self.handle: asyncio.TimerHandle | None = None
        self.armed_at = math.inf

    def add(self, ex: _Exchange, seconds: float, at: float) -> None:
        """Watch ``ex`` until ``at``, ``seconds`` after its start (its queue)."""
        queue = self.queues.get(seconds)
        if queue is None:
            queue = self.queues[seconds] = OrderedDict()
        queue[ex] = at
        ex.queue = queue
        if at < self.armed_at:
            self._arm(at)

    def add_late(self, ex: _Exchange, at: float) -> None:
        """Watch ``ex`` until ``at``, out of queue order (a limit re-armed)."""
        heapq.heappush(self.late, (at, next(self.order), ex))
        if at < self.armed_at:
            self._arm(at)

    def _arm(self, at: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.handle = self.loop.call_at(at, self._tick)
        self.armed_at = at

    def _tick(self) -> None:
        self.handle = None
        self.armed_at = math.inf
        now = self.loop.time()
        due: list[_Exchange] = []
        nearest = math.inf
        for seconds, queue in list(self.queues.items()):
            while queue:
                ex, at = next(iter(queue.items()))
                if at > now:
                    nearest = min(nearest, at)
                    break
                del queue[ex]
                ex.queue = None
                due.append(ex)
            else:
                del self.queues[seconds]  # no empty queues left behind by a burst
        late = self.late
        while late and late[0][0] <= now:
            due.append(heapq.heappop(late)[2])
        if late:
            nearest = min(nearest, late[0][0])
        if nearest < math.inf:
            self._arm(nearest)
        for ex in due:
            if ex.watching:
                ex.expired(self, now)


class Watches:
    """Each event loop's watch, for one middleware instance (usually one loop)."""

    __slots__ = ("_by_loop", "_last")

    def __init__(self) -> None:
        self._last: _Watch | None = None
        self._by_loop: WeakKeyDictionary[asyncio.AbstractEventLoop, _Watch] = WeakKeyDictionary()

    def current(self) -> _Watch | None:
        """The running asyncio loop's watch, or None when asyncio is not running (trio)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        last = self._last
        if last is not None and last.loop is loop:
            return last
        watch = self._by_loop.get(loop)
        if watch is None:
            watch = self._by_loop[loop] = _Watch(loop)
        self._last = watch
        return watch


def spawn(watch: _Watch, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run ``work`` in a task of its own on the watch's loop (a deadline's answer)."""
    return watch.loop.create_task(work)


def later(watch: _Watch, seconds: float, callback: Callable[[], None]) -> None:
    """Call ``callback`` after ``seconds`` on the watch's loop (the cancel grace)."""
    watch.loop.call_later(seconds, callback)
