"""DevInspectorMiddleware's memory: the ring of recent requests and the spans of their traces.

Both are bounded whatever happens: the ring keeps the last ``capacity`` records; the span
store keeps the spans of the traces those records refer to (pinned), plus the spans of a
bounded number of other recent traces (loose: traces whose request is still running, or
that no request refers to), each trace at most ``max_spans`` spans. Every operation takes
one ``threading.Lock``: spans end in whatever thread ran them (a sync endpoint's worker
thread too), and nothing here awaits.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from contextvars import ContextVar
from itertools import islice
from typing import Generic, TypeVar

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

__all__ = ["REQUEST_SPAN", "InspectorSpanProcessor", "RingBuffer", "SpanStore"]

REQUEST_SPAN: ContextVar[list[int] | None] = ContextVar("asgikit_inspector_span", default=None)
"""Set by the middleware while a request runs: ``[trace_id, span_id]`` of the first span
started in it (0 until then), to find the spans of a request that failed before its
response started, when no span was current to read."""

T = TypeVar("T")


class RingBuffer(Generic[T]):
    """The last ``capacity`` items, each under a sequence number (1, 2, 3, ...).

    ``append`` and ``get`` are O(1); ``since`` is O(items returned).

    Args:
        capacity: How many items are kept; the oldest is dropped to make room.
    """

    __slots__ = ("_by_id", "_capacity", "_items", "_last", "_lock")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._capacity = capacity
        self._items: deque[tuple[int, T]] = deque()
        self._by_id: dict[int, T] = {}
        self._last = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def capacity(self) -> int:
        """How many items are kept."""
        return self._capacity

    @property
    def last_id(self) -> int:
        """The sequence number of the newest item ever appended (0: none yet)."""
        return self._last

    def append(self, item: T) -> tuple[int, T | None]:
        """Keep *item*; return its sequence number and the item dropped for it, if any."""
        with self._lock:
            self._last += 1
            number = self._last
            dropped = None
            if len(self._items) >= self._capacity:
                old, dropped = self._items.popleft()
                del self._by_id[old]
            self._items.append((number, item))
            self._by_id[number] = item
            return number, dropped

    def get(self, number: int) -> T | None:
        """The item with sequence number *number*, if it is still kept."""
        return self._by_id.get(number)

    def since(self, number: int) -> list[tuple[int, T]]:
        """The kept items newer than sequence number *number*, oldest first."""
        with self._lock:
            if not self._items or number >= self._last:
                return []
            first = self._items[0][0]
            return list(islice(self._items, max(number + 1 - first, 0), None))

    def clear(self) -> list[T]:
        """Drop every kept item (sequence numbers go on from the last); return them."""
        with self._lock:
            dropped = [item for _, item in self._items]
            self._items.clear()
            self._by_id.clear()
            return dropped

    def newest_first(self) -> list[tuple[int, T]]:
        """Every kept item, newest first."""
        with self._lock:
            return list(reversed(self._items))


class SpanStore:
    """Finished spans grouped by trace id, bounded.

    A trace is *pinned* while a kept request refers to it (``pin``/``unpin`` count the
    references); other traces are *loose*, and only the ``max_loose`` newest are kept.

    Args:
        max_loose: How many traces no kept request refers to are kept.
        max_spans: How many spans one trace keeps; later ones are counted, not kept.
    """

    __slots__ = ("_lock", "_loose", "_max_loose", "_max_spans", "_pinned", "dropped")

    def __init__(self, *, max_loose: int, max_spans: int) -> None:
        self._max_loose = max_loose
        self._max_spans = max_spans
        self._loose: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._pinned: dict[int, tuple[int, list[ReadableSpan]]] = {}
        self._lock = threading.Lock()
        self.dropped = 0
        """Spans not kept because their trace already had ``max_spans``."""

    def add(self, span: ReadableSpan) -> None:
        """Keep a finished span."""
        context = span.context
        if context is None:  # pragma: no cover - the SDK always sets one
            return
        trace_id = context.trace_id
        with self._lock:
            entry = self._pinned.get(trace_id)
            if entry is not None:
                spans = entry[1]
            else:
                found = self._loose.get(trace_id)
                if found is None:
                    found = self._loose[trace_id] = []
                    if len(self._loose) > self._max_loose:
                        self._loose.popitem(last=False)
                spans = found
            if len(spans) < self._max_spans:
                spans.append(span)
            else:
                self.dropped += 1

    def pin(self, trace_id: int) -> None:
        """A kept request refers to *trace_id*: keep its spans until ``unpin``."""
        with self._lock:
            entry = self._pinned.get(trace_id)
            if entry is None:
                self._pinned[trace_id] = (1, self._loose.pop(trace_id, []))
            else:
                self._pinned[trace_id] = (entry[0] + 1, entry[1])

    def unpin(self, trace_id: int) -> None:
        """A request referring to *trace_id* was dropped."""
        with self._lock:
            entry = self._pinned.get(trace_id)
            if entry is None:
                return
            if entry[0] <= 1:
                del self._pinned[trace_id]
            else:
                self._pinned[trace_id] = (entry[0] - 1, entry[1])

    def spans(self, trace_id: int) -> list[ReadableSpan]:
        """A copy of the kept spans of *trace_id*, in the order they ended."""
        with self._lock:
            entry = self._pinned.get(trace_id)
            if entry is not None:
                return list(entry[1])
            return list(self._loose.get(trace_id, ()))

    def trace_count(self) -> tuple[int, int]:
        """How many traces are pinned and loose (for tests and the page's footer)."""
        with self._lock:
            return len(self._pinned), len(self._loose)


class InspectorSpanProcessor(SpanProcessor):
    """An OpenTelemetry SDK span processor that hands finished spans to a ``SpanStore``."""

    def __init__(self, store: SpanStore) -> None:
        self.store = store

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Note the first span a request starts (the request's own trace)."""
        holder = REQUEST_SPAN.get()
        if holder is not None and not holder[0]:
            context = span.get_span_context()
            holder[0] = context.trace_id
            holder[1] = context.span_id

    def on_end(self, span: ReadableSpan) -> None:
        """Keep the finished span."""
        self.store.add(span)

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered."""
        return True
