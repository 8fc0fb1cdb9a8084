"""``tracestate`` keys of the current W3C grammar, which the OpenTelemetry SDK refuses.

The trace-context specification's key grammar was widened (an ``@`` may appear anywhere
after the first character, within 256 characters in all; the W3C test harness checks it
since mid-2026). The SDK's parser still applies the older, narrower one and discards the
whole ``tracestate`` of a request whose keys it does not know, so a vendor's state would
not reach the next service. When the SDK found no state although the request carried
one (it also discards a state with a key given twice, which the harness now expects to
be kept), ``repaired`` parses it again with the current grammar: still all or nothing (a
malformed member, or more than 32, discard it all), in the order received.
"""

from __future__ import annotations

import re
from collections.abc import ItemsView, Iterator, KeysView, Sequence, ValuesView
from typing import Final

from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, get_current_span
from opentelemetry.trace import set_span_in_context as _in_context
from opentelemetry.trace.span import TraceState

__all__ = ["W3CTraceState", "parse", "repaired"]

_KEY: Final = r"[0-9a-z][_0-9a-z\-*/@]{0,255}"
_VALUE: Final = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER: Final = re.compile(f"({_KEY})=({_VALUE})")
_MAX_MEMBERS: Final = 32
_NAME: Final = b"tracestate"


class W3CTraceState(TraceState):
    """A ``TraceState`` whose keys follow the current grammar (read-only use: the SDK and
    the propagators read and write it through the mapping methods and ``to_header``)."""

    def __init__(self, pairs: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__()
        self._pairs = dict(pairs)

    def __getitem__(self, key: str) -> str:
        return self._pairs[key]

    def __contains__(self, key: object) -> bool:
        return key in self._pairs

    def __iter__(self) -> Iterator[str]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def keys(self) -> KeysView[str]:
        return self._pairs.keys()

    def items(self) -> ItemsView[str, str]:  # what the OTLP exporters encode
        return self._pairs.items()

    def values(self) -> ValuesView[str]:
        return self._pairs.values()

    def __repr__(self) -> str:
        pairs = ", ".join(f"{key!r}: {value!r}" for key, value in self._pairs.items())
        return f"{type(self).__name__}({{{pairs}}})"

    def add(self, key: str, value: str) -> TraceState:
        if key in self._pairs or not _valid(key, value) or len(self) >= _MAX_MEMBERS:
            return self
        return W3CTraceState([(key, value), *self._pairs.items()])

    def update(self, key: str, value: str) -> TraceState:
        if key not in self._pairs or not _valid(key, value):
            return self
        rest = [(k, v) for k, v in self._pairs.items() if k != key]
        return W3CTraceState([(key, value), *rest])

    def delete(self, key: str) -> TraceState:
        if key not in self._pairs:
            return self
        return W3CTraceState([(k, v) for k, v in self._pairs.items() if k != key])

    def to_header(self) -> str:
        return ",".join(f"{key}={value}" for key, value in self._pairs.items())


def _valid(key: str, value: str) -> bool:
    return _MEMBER.fullmatch(f"{key}={value}") is not None


def parse(values: Sequence[str]) -> W3CTraceState | None:
    """The members of the ``tracestate`` fields *values* (of a key given twice, the first),
    or None when any is malformed or there are more than 32 (the whole state is
    discarded then)."""
    pairs: dict[str, str] = {}
    for value in values:
        for member in value.split(","):
            member = member.strip(" \t")
            if not member:
                continue
            match = _MEMBER.fullmatch(member)
            if match is None:
                return None
            pairs.setdefault(match.group(1), match.group(2))  # a key twice: the first
    if not pairs or len(pairs) > _MAX_MEMBERS:
        return None
    return W3CTraceState(list(pairs.items()))


def repaired(parent: Context, headers: Sequence[tuple[bytes, bytes]]) -> Context:
    """*parent* (extracted from *headers*), with the request's ``tracestate`` the SDK
    discarded, when it follows the current grammar."""
    span_context = get_current_span(parent).get_span_context()
    if not span_context.is_valid or len(span_context.trace_state):
        return parent
    values = [value.decode("latin-1") for name, value in headers if name == _NAME]
    if not values:
        return parent
    state = parse(values)
    if state is None:
        return parent
    context = SpanContext(
        span_context.trace_id,
        span_context.span_id,
        is_remote=span_context.is_remote,
        trace_flags=span_context.trace_flags,
        trace_state=state,
    )
    return _in_context(NonRecordingSpan(context), parent)
