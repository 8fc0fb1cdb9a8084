"""The inspector's memory: the ring buffer and the span store, bounded and thread-safe."""

from __future__ import annotations

import threading
import tracemalloc

import pytest
from opentelemetry.sdk.trace import TracerProvider

from asgikit.middleware.inspector.store import (
    REQUEST_SPAN,
    InspectorSpanProcessor,
    RingBuffer,
    SpanStore,
)


def test_ring_keeps_the_last_items_under_increasing_numbers() -> None:
    ring: RingBuffer[str] = RingBuffer(3)
    assert ring.last_id == 0 and len(ring) == 0 and ring.since(0) == []
    results = [ring.append(item) for item in "abcde"]
    assert results == [(1, None), (2, None), (3, None), (4, "a"), (5, "b")]
    assert len(ring) == 3 and ring.last_id == 5
    assert ring.newest_first() == [(5, "e"), (4, "d"), (3, "c")]
    assert [ring.get(n) for n in range(7)] == [None, None, None, "c", "d", "e", None]


@pytest.mark.parametrize(
    ("after", "expected"), [(0, [3, 4, 5]), (2, [3, 4, 5]), (3, [4, 5]), (4, [5]), (5, []), (9, [])]
)
def test_ring_since_returns_only_newer_kept_items(after: int, expected: list[int]) -> None:
    ring: RingBuffer[int] = RingBuffer(3)
    for item in range(1, 6):
        ring.append(item)
    assert [number for number, _ in ring.since(after)] == expected
    assert [item for _, item in ring.since(after)] == expected


def test_ring_rejects_a_capacity_below_one() -> None:
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(0)


def test_ring_memory_stays_bounded() -> None:
    ring: RingBuffer[bytes] = RingBuffer(50)
    for _ in range(200):  # warm up: the ring is full
        ring.append(bytes(1000))
    tracemalloc.start()
    try:
        for _ in range(1000):
            ring.append(bytes(1000))
        settled = tracemalloc.get_traced_memory()[0]
        for _ in range(4000):
            ring.append(bytes(1000))
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert settled < 100_000  # 50 items of 1 kB (and change), though 1 MB went through
    assert after - settled < 5_000  # 4 MB more went through: nothing more stayed
    assert len(ring) == 50


def test_ring_is_consistent_under_threads() -> None:
    ring: RingBuffer[tuple[int, int]] = RingBuffer(64)
    dropped: list[tuple[int, int]] = []
    start = threading.Barrier(8)

    def writer(worker: int) -> None:
        start.wait()
        for i in range(2000):
            _, old = ring.append((worker, i))
            if old is not None:
                dropped.append(old)
            ring.since(ring.last_id - 10)
            ring.newest_first()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = ring.newest_first()
    assert ring.last_id == 16_000
    assert [number for number, _ in kept] == list(range(16_000, 16_000 - 64, -1))
    # Every item is either kept or was dropped exactly once: none lost, none duplicated.
    everything = sorted(dropped + [item for _, item in kept])
    assert everything == sorted((w, i) for w in range(8) for i in range(2000))
    assert all(ring.get(number) == item for number, item in kept)


def spans_of(provider: TracerProvider, names: list[str]) -> int:
    """Finish one trace with spans named *names* (the first is the root); its trace id."""
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(names[0]) as root:
        for name in names[1:]:
            with tracer.start_as_current_span(name):
                pass
    trace_id: int = root.get_span_context().trace_id
    return trace_id


@pytest.fixture
def store_and_provider() -> tuple[SpanStore, TracerProvider]:
    store = SpanStore(max_loose=2, max_spans=3)
    provider = TracerProvider()
    provider.add_span_processor(InspectorSpanProcessor(store))
    return store, provider


def test_loose_traces_are_bounded_oldest_first(
    store_and_provider: tuple[SpanStore, TracerProvider],
) -> None:
    store, provider = store_and_provider
    first, second, third = (spans_of(provider, [f"t{i}"]) for i in range(3))
    assert store.spans(first) == []  # dropped: only two loose traces are kept
    assert [s.name for s in store.spans(second)] == ["t1"]
    assert [s.name for s in store.spans(third)] == ["t2"]
    assert store.trace_count() == (0, 2)


def test_spans_per_trace_are_bounded_and_counted(
    store_and_provider: tuple[SpanStore, TracerProvider],
) -> None:
    store, provider = store_and_provider
    trace_id = spans_of(provider, ["root", "a", "b", "c", "d"])
    assert [s.name for s in store.spans(trace_id)] == ["a", "b", "c"]  # in the order they ended
    assert store.dropped == 2


def test_pinned_traces_survive_loose_traffic_until_unpinned(
    store_and_provider: tuple[SpanStore, TracerProvider],
) -> None:
    store, provider = store_and_provider
    kept = spans_of(provider, ["request"])
    store.pin(kept)
    store.pin(kept)  # two requests of one (propagated) trace
    for i in range(5):
        spans_of(provider, [f"noise{i}"])
    assert [s.name for s in store.spans(kept)] == ["request"]
    assert store.trace_count() == (1, 2)
    store.unpin(kept)
    assert [s.name for s in store.spans(kept)] == ["request"]  # one reference left
    store.unpin(kept)
    assert store.spans(kept) == [] and store.trace_count() == (0, 2)
    store.unpin(kept)  # unknown: nothing happens
    assert store.trace_count() == (0, 2)


def test_spans_ending_after_the_pin_join_the_pinned_trace(
    store_and_provider: tuple[SpanStore, TracerProvider],
) -> None:
    store, provider = store_and_provider
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("outer") as outer:
        trace_id = outer.get_span_context().trace_id
        with tracer.start_as_current_span("inner"):
            pass
        store.pin(trace_id)  # the request is recorded before the outer span ends
    assert [s.name for s in store.spans(trace_id)] == ["inner", "outer"]


def test_the_processor_notes_the_first_span_of_a_request() -> None:
    store = SpanStore(max_loose=4, max_spans=10)
    processor = InspectorSpanProcessor(store)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    holder = [0, 0]
    token = REQUEST_SPAN.set(holder)
    try:
        with tracer.start_as_current_span("first") as first, tracer.start_as_current_span("second"):
            pass
    finally:
        REQUEST_SPAN.reset(token)
    context = first.get_span_context()
    assert holder == [context.trace_id, context.span_id]
    with tracer.start_as_current_span("outside"):  # no request running: nothing noted
        pass
    assert holder == [context.trace_id, context.span_id]
    assert processor.force_flush() is True
    processor.shutdown()


def test_store_is_consistent_under_threads() -> None:
    store = SpanStore(max_loose=8, max_spans=50)
    provider = TracerProvider()
    provider.add_span_processor(InspectorSpanProcessor(store))
    pinned = spans_of(provider, ["pinned"])
    store.pin(pinned)

    def work() -> None:
        tracer = provider.get_tracer("t")
        for i in range(300):
            with tracer.start_as_current_span(f"s{i}"):
                pass
            store.spans(pinned)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.trace_count() == (1, 8)
    assert [s.name for s in store.spans(pinned)] == ["pinned"]
