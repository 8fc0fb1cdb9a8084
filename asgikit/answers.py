"""Answers asgikit makes itself (413, 429, 503, a redirect, a refused host), and the
decision each one records.

Several middleware answer a request without the app. They answer the same way:
:func:`answer` sends an http response, or, for a websocket before it is accepted, the
denial response when the server offers the ``websocket.http.response`` extension and a
close otherwise (the server then answers 403). :func:`plain_text` builds the usual body
and headers.

Each answer is a *decision*, named by a short, bounded string (``"shed"``,
``"body_too_large"``, ``"host_refused"``...). An observing middleware outside (the
access log, tracing) puts an empty dict under ``scope[DECISION_KEY]`` and hands it down;
:func:`decide` fills it in, so the log line and the span say which layer answered and
why, under one field name (``asgikit.decision``).

Every decision is also counted, whether or not an observer is outside (trusted host and
the HTTPS redirect sit outermost): the OpenTelemetry counter ``asgikit.decisions``, with
``asgikit.decision`` and, when the decision has one, a bounded
``asgikit.decision.reason`` (the rate-limit rule, the timeout's limit, the reason a
request was shed or refused). It goes through the global ``MeterProvider`` (or the one
:func:`count_decisions_with` names); OpenTelemetry is imported on the first decision,
so a stack without tracing does not load it at start-up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, Final

from asgikit.scopes import DECISION_KEY
from asgikit.types import Receive, Scope, Send

__all__ = [
    "DECISIONS_METRIC",
    "DECISION_FIELD",
    "DETAILS",
    "REASON_FIELD",
    "REASON_FIELDS",
    "WEBSOCKET_DENIAL",
    "answer",
    "count_decisions_with",
    "decide",
    "plain_text",
]

DECISION_FIELD: Final = "asgikit.decision"
"""The log field and span attribute naming the decision behind an answer asgikit made."""

DETAILS: Final = "asgikit.decision.details"
"""Where :func:`decide` keeps a decision's fields (``{"concurrency.limit": 8}``) in the
holder; the access log adds them to its line, tracing to the span."""

DECISIONS_METRIC: Final = "asgikit.decisions"
"""The OpenTelemetry counter of decisions, by ``asgikit.decision`` and its reason."""

REASON_FIELD: Final = "asgikit.decision.reason"
"""The counter's attribute holding the decision's bounded reason, when it has one."""

REASON_FIELDS: Final = (
    "rate_limit.rule",
    "timeout.limit",
    "concurrency.reason",
    "body_limit.reason",
    "trusted_host.reason",
    "redirect.status",
)
"""The decision fields whose values are bounded (set by configuration or by the code),
first found first: the one that becomes ``asgikit.decision.reason``. Free text (the CORS
refusal names the origin) is never a metric attribute."""

MAX_REASONS: Final = 64
"""Distinct reasons counted per decision; more are counted as ``other``."""

WEBSOCKET_DENIAL: Final = "websocket.http.response"
"""The ASGI extension that lets a websocket be refused with an http response."""

_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")


def plain_text(
    status: int, body: str | None = None, headers: Iterable[tuple[bytes, bytes]] = ()
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of a plain-text answer: *body*, or the status's phrase."""
    if body is None:
        try:
            body = HTTPStatus(status).phrase
        except ValueError:
            body = str(status)
    data = body.encode("utf-8")
    fields = [_TEXT, (b"content-length", str(len(data)).encode("ascii")), *headers]
    return fields, data


def decide(scope: Scope, decision: str, **fields: Any) -> None:
    """Record *decision* (and *fields*) where an outer observer reads it, if one does,
    and count it in ``asgikit.decisions``."""
    holder = scope.get(DECISION_KEY)
    if isinstance(holder, dict):
        holder[DECISION_FIELD] = decision
        if fields:
            holder[DETAILS] = fields
    _DECISIONS.count(decision, fields)


class _Counter:
    """``asgikit.decisions``, created on the first decision (OpenTelemetry loads then)."""

    __slots__ = ("_counter", "_lock", "_provider", "_reasons")

    def __init__(self) -> None:
        self._counter: Any = None
        self._provider: Any = None  # None: the global one
        self._reasons: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def use(self, meter_provider: Any) -> None:
        with self._lock:
            self._provider = meter_provider
            self._counter = None
            self._reasons = {}

    def _create(self) -> Any:
        from opentelemetry.metrics import get_meter

        from asgikit import __version__

        with self._lock:
            if self._counter is None:  # pragma: no branch - else another thread made it
                meter = get_meter("asgikit", __version__, self._provider)
                self._counter = meter.create_counter(
                    DECISIONS_METRIC,
                    unit="{decision}",
                    description="Answers asgikit made itself, by decision and reason.",
                )
            return self._counter

    def count(self, decision: str, fields: Mapping[str, Any]) -> None:
        counter = self._counter
        if counter is None:
            counter = self._create()
        attributes = {DECISION_FIELD: decision}
        for name in REASON_FIELDS:
            if name in fields:
                attributes[REASON_FIELD] = self._bounded(decision, str(fields[name]))
                break
        counter.add(1, attributes)

    def _bounded(self, decision: str, reason: str) -> str:
        seen = self._reasons.setdefault(decision, set())
        if reason in seen:
            return reason
        with self._lock:
            if len(seen) >= MAX_REASONS:
                return "other"
            seen.add(reason)
        return reason


_DECISIONS: Final = _Counter()


def count_decisions_with(meter_provider: Any = None) -> None:
    """Count decisions through *meter_provider* from now on; None: the global one
    (resolved through OpenTelemetry's proxy, so one set later is honoured)."""
    if meter_provider is not None and not callable(getattr(meter_provider, "get_meter", 0)):
        raise TypeError(f"meter_provider: expected a MeterProvider, not {meter_provider!r}")
    _DECISIONS.use(meter_provider)


async def answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    close_code: int = 1008,
) -> None:
    """Answer without the app: an http response, or a websocket refusal before accept.

    Args:
        headers: Complete response headers (:func:`plain_text` builds the usual ones).
        close_code: The websocket close code when the server cannot send a denial
            response (1008 policy violation; 1013 try again later for load).
    """
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    message = await receive()
    if message["type"] != "websocket.connect":  # the client is already gone
        return
    if WEBSOCKET_DENIAL in (scope.get("extensions") or {}):
        start = {"type": "websocket.http.response.start", "status": status}
        await send({**start, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:  # closing before accepting: the server answers 403
        await send({"type": "websocket.close", "code": close_code})
