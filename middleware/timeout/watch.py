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
import contextvars
import heapq
import itertools
import math
import weakref
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, Protocol
from weakref import WeakKeyDictionary

__all__ = ["LoopWatch", "Watched", "Watches", "later", "spawn"]


class Watched(Protocol):
    """What the watch needs of a request (``clock.RequestClock``): where it is queued,
    whether it is still watched, and what to do when its deadline passes."""

    queue: OrderedDict[Watched, float] | None
    watching: bool

    def expired(self, watch: LoopWatch, now: float) -> None: ...


class LoopWatch:
    """The deadlines of the requests running on one event loop.

    It holds its loop weakly (``Watches`` keys watches by loop in a weak dictionary), and
    its timer runs in an empty context: it serves every request, so it must not carry
    the context of whichever request happened to arm it.
    """

    __slots__ = ("_loop", "armed_at", "handle", "late", "order", "queues")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)
        self.queues: dict[float, OrderedDict[Watched, float]] = {}
        # Out-of-order entries: (deadline, tie-break, [request]); the one-item list is
        # emptied when the request is done, so a stale entry holds nothing until popped.
        self.late: list[tuple[float, int, list[Watched | None]]] = []
        self.order = itertools.count()  # ties on the heap never compare requests
        # Weakly too: a timer handle refers to its loop, and the loop's own heap keeps
        # the handle alive for as long as it is armed.
        self.handle: weakref.ref[asyncio.TimerHandle] | None = None
        self.armed_at = math.inf

    def add(self, request: Watched, seconds: float, at: float) -> None:
        """Watch ``request`` until ``at``, ``seconds`` after its start (its queue)."""
        queue = self.queues.get(seconds)
        if queue is None:
            queue = self.queues[seconds] = OrderedDict()
        queue[request] = at
        request.queue = queue
        if at < self.armed_at:
            self._arm(at)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop()
        assert loop is not None  # a watch is used only while its loop runs
        return loop

    def add_late(self, request: Watched, at: float) -> list[Watched | None]:
        """Watch ``request`` until ``at``, out of queue order (a limit re-armed); returns the
        entry's cell, to empty when ``request`` is done."""
        cell: list[Watched | None] = [request]
        heapq.heappush(self.late, (at, next(self.order), cell))
        if at < self.armed_at:
            self._arm(at)
        return cell

    def _arm(self, at: float) -> None:
        armed = None if self.handle is None else self.handle()
        if armed is not None:
            armed.cancel()
        handle = self.loop.call_at(at, self._tick, context=contextvars.Context())
        self.handle = weakref.ref(handle)
        self.armed_at = at

    def _tick(self) -> None:
        self.handle = None
        self.armed_at = math.inf
        now = self.loop.time()
        due: list[Watched] = []
        nearest = math.inf
        for seconds, queue in list(self.queues.items()):
            while queue:
                request, at = next(iter(queue.items()))
                if at > now:
                    nearest = min(nearest, at)
                    break
                del queue[request]
                request.queue = None
                due.append(request)
            else:
                del self.queues[seconds]  # no empty queues left behind by a burst
        late = self.late
        while late and late[0][0] <= now:
            rearmed = heapq.heappop(late)[2][0]
            if rearmed is not None:
                due.append(rearmed)
        if late:
            nearest = min(nearest, late[0][0])
        if nearest < math.inf:
            self._arm(nearest)
        for request in due:
            if request.watching:
                request.expired(self, now)


class Watches:
    """Each event loop's watch, for one middleware instance (usually one loop)."""

    __slots__ = ("_by_loop",)

    def __init__(self) -> None:
        self._by_loop: WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWatch] = WeakKeyDictionary()

    def current(self) -> LoopWatch | None:
        """The running asyncio loop's watch, or None when asyncio is not running (trio)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        watch = self._by_loop.get(loop)
        if watch is None:
            watch = self._by_loop[loop] = LoopWatch(loop)
        return watch


def spawn(
    watch: LoopWatch, work: Coroutine[Any, Any, None], context: contextvars.Context
) -> asyncio.Task[None]:
    """Run ``work`` in a task of its own, in the request's *context* (a deadline's answer:
    the access log and the span around the middleware see their own request)."""
    return watch.loop.create_task(work, context=context)


def later(
    watch: LoopWatch, seconds: float, callback: Callable[[], None], context: contextvars.Context
) -> None:
    """Call ``callback`` after ``seconds``, in the request's *context* (the cancel grace)."""
    watch.loop.call_later(seconds, callback, context=context)
