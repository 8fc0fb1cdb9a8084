"""Streams measured as streams: time to first byte and stream duration, apart.

A server-sent event stream, an NDJSON feed or a websocket can stay open for an hour; one
such response in ``http.server.request.duration`` drags every percentile of the
histogram the latency alerts read. A streaming response is told from its start's
``content-type`` (:data:`STREAM_TYPES`) and recorded in two histograms of its own:
``asgikit.stream.time_to_first_byte`` (the wait before the response started) and
``asgikit.stream.duration`` (the whole stream), with ``asgikit.stream.type``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from opentelemetry.metrics import Meter

from .attributes import DURATION_BUCKETS

__all__ = [
    "STREAM_DURATION",
    "STREAM_TIME_TO_FIRST_BYTE",
    "STREAM_TYPE",
    "STREAM_TYPES",
    "StreamRecorder",
    "stream_type",
]

STREAM_TIME_TO_FIRST_BYTE: Final = "asgikit.stream.time_to_first_byte"
STREAM_DURATION: Final = "asgikit.stream.duration"
STREAM_TYPE: Final = "asgikit.stream.type"
"""The attribute naming the kind of stream: ``sse``, ``ndjson`` or ``websocket``."""

STREAM_TYPES: Final[Mapping[bytes, str]] = {
    b"text/event-stream": "sse",
    b"application/x-ndjson": "ndjson",
    b"application/jsonl": "ndjson",
    b"application/jsonlines": "ndjson",
    b"application/json-seq": "ndjson",
}
"""Response media types that stream, and the ``asgikit.stream.type`` each one records."""

# Hours-long streams: the request buckets (up to 10 s) would put them all in +Inf.
STREAM_BUCKETS: Final = (*DURATION_BUCKETS, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


def stream_type(headers: Iterable[tuple[bytes, bytes]] | None) -> str | None:
    """The stream type of a response with these headers, or None when it is no stream."""
    if headers is None:
        return None
    for name, value in headers:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return STREAM_TYPES.get(media)
    return None


class StreamRecorder:
    """The two stream histograms.

    Args:
        meter: The meter that creates them.
    """

    __slots__ = ("_duration", "_first_byte")

    def __init__(self, meter: Meter) -> None:
        self._first_byte = meter.create_histogram(
            STREAM_TIME_TO_FIRST_BYTE,
            unit="s",
            description="Time before a streaming response (or websocket accept) started.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._duration = meter.create_histogram(
            STREAM_DURATION,
            unit="s",
            description="Duration of streaming responses and websocket connections.",
            explicit_bucket_boundaries_advisory=STREAM_BUCKETS,
        )

    def record(
        self, kind: str, start: int, first_byte: int, end: int, attributes: dict[str, Any]
    ) -> None:
        """Record one stream (it started: a stream is told by its start); times in
        ``time.time_ns()`` nanoseconds."""
        attributes = {**attributes, STREAM_TYPE: kind}
        self._first_byte.record((first_byte - start) / 1e9, attributes)
        self._duration.record((end - start) / 1e9, attributes)
