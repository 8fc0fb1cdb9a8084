"""The JSON renderer's pieces: a cheap UTC timestamp, and msgspec rendering."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import structlog
from structlog.typing import EventDict, WrappedLogger

from asgikit.logging.tracebacks import full_traceback, short_traceback

__all__ = ["JSONRenderer", "UTCTimeStamper"]

_time_ns = time.time_ns


class UTCTimeStamper:
    """Processor: ``timestamp`` in ISO 8601 UTC with microseconds (``...T09:30:00.123456Z``).

    What ``structlog.processors.TimeStamper(fmt="iso", utc=True)`` writes (always with
    six digits of microseconds), at less than half the cost: the part up to the
    second is formatted once per second.
    """

    __slots__ = ("_cached",)

    def __init__(self) -> None:
        self._cached = (-1, "")

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        second, nanoseconds = divmod(_time_ns(), 1_000_000_000)
        cached_second, prefix = self._cached  # one read: threads may replace it
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._cached = (second, prefix)
        event_dict["timestamp"] = f"{prefix}.{nanoseconds // 1000:06d}Z"
        return event_dict


def _json_fallback(value: Any) -> Any:
    return repr(value)


class JSONRenderer:
    """Render the event as one JSON object with msgspec: bytes, or str for ``logging``.

    An ``exc_info`` is first rendered as text under ``exception``, only for the events
    that carry one (a processor of its own in the chain would cost every event a call):
    the short traceback of ``asgikit.logging.tracebacks``, or with ``short=False`` the
    whole one, as structlog's ``format_exc_info`` writes it.
    """

    __slots__ = ("_encode", "_format_exc_info", "_text")

    def __init__(self, *, text: bool, short: bool = True) -> None:
        self._encode = msgspec.json.Encoder(enc_hook=_json_fallback).encode
        self._text = text
        self._format_exc_info = structlog.processors.ExceptionRenderer(
            short_traceback if short else full_traceback
        )

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> bytes | str:
        if "exc_info" in event_dict:
            event_dict = self._format_exc_info(logger, name, event_dict)
        line = self._encode(event_dict)
        return line.decode("utf-8") if self._text else line
