"""The rules of the ASGI contract, and the exception and warning that name them.

``RULES`` mirrors the rule table of docs/contract.md: one row per rule id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["RULES", "ContractViolation", "ContractWarning", "Rule", "Side"]

Side = Literal["app", "server", "middleware"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One numbered rule of the contract."""

    id: str
    severity: Literal["E", "W"]
    summary: str


def _rules(*rows: tuple[str, Literal["E", "W"], str]) -> dict[str, Rule]:
    return {rid: Rule(rid, sev, text) for rid, sev, text in rows}


RULES: Mapping[str, Rule] = _rules(
    ("S1", "E", "scope is a dict with a str 'type'; every scope type reaches the inner app"),
    ("S2", "W", "asgi.version is '2.0' or '3.0'"),
    ("S3", "E", "http/websocket scope fields have their ASGI types"),
    ("S4", "E", "scope headers are (bytes, bytes) pairs without pseudo-headers"),
    ("S5", "E", "client is None or (str, int); server is None or (str, int | None)"),
    ("S6", "E", "scope['state'] is the server's own object; extensions is dict[str, dict]"),
    ("S7", "W", "a middleware that changes the scope copies it instead of mutating it"),
    ("M1", "E", "a message is a dict with a str 'type' and ASGI-typed values"),
    ("M2", "E", "optional message keys are optional and of their ASGI types"),
    ("M3", "E", "keys a middleware does not know are kept when it rewrites a message"),
    ("M4", "E", "message types a middleware does not handle are forwarded unchanged, in order"),
    ("M5", "E", "nobody mutates the app's message dict or header list in place"),
    ("H1", "E", "http.request carries bytes; after the last chunk only http.disconnect"),
    ("H2", "E", "exactly one http.response.start (status 100-599), before any body"),
    ("H3", "E", "the response ends once, completely; nothing is sent after the end"),
    ("H4", "E", "a response the app cut short is never completed by a middleware"),
    ("H5", "W", "content-length equals the body bytes sent"),
    ("H6", "E", "a middleware answers on its own only before any start reached the server"),
    ("H7", "E", "a failed send after disconnect never becomes a second response"),
    ("H8", "E", "a middleware that reads the body replays it, then forwards http.disconnect"),
    ("X1", "E", "an extension message is sent only if the scope advertises the extension"),
    ("X2", "E", "http.response.pathsend completes the response, is not mixed with body"),
    ("X3", "E", "extension messages are forwarded untouched and in order"),
    ("W1", "E", "websocket: connect first; accept, close or denial before any data"),
    ("W2", "E", "websocket.accept once, with a valid subprotocol and headers"),
    ("W3", "E", "websocket.send/receive carry exactly one of bytes and text"),
    ("W4", "E", "nothing sent after websocket.close; no receive() after a disconnect"),
    ("L1", "E", "lifespan: one answer per event, in order, never translated"),
    ("E1", "E", "exceptions from the app propagate unchanged"),
    ("E2", "E", "cancellation is never swallowed"),
    ("E3", "E", "the app runs in the caller's task"),
)


class ContractViolation(AssertionError):
    """An ASGI contract rule was broken.

    Attributes:
        rule: The rule id (``"H2"``), a key of ``RULES``.
        side: Who broke it: ``"app"`` (what the wrapped app sent or did), ``"server"``
            (what the caller handed the app) or ``"middleware"`` (the layer between two
            nested checkers).
        detail: What happened, in words.
        message: The offending ASGI message or scope, when there is one.
    """

    def __init__(
        self, rule: str, side: Side, detail: str, message: Mapping[str, Any] | None = None
    ) -> None:
        self.rule = rule
        self.side = side
        self.detail = detail
        self.message = message
        text = f"[{rule}] {side} side: {detail} (rule: {RULES[rule].summary})"
        if message is not None:
            text += f"\n    offending: {_abbreviate(message)}"
        super().__init__(text)


class ContractWarning(UserWarning):
    """A W rule was broken (``enforce(app, strict=True)`` raises instead)."""

    def __init__(self, violation: ContractViolation) -> None:
        self.violation = violation
        super().__init__(str(violation))


def _abbreviate(message: Mapping[str, Any], limit: int = 300) -> str:
    text = repr(dict(message))
    return text if len(text) <= limit else text[: limit - 3] + "..."
