"""Charges after the decision: statuses known only from the response, usage the app reports.

A rule with ``count_status`` takes its cells before the app, like any rule, so that
attempts running at the same time are bounded together; ``_Refunds`` gives them back
once the response starts with a status the rule does not count (before the start goes
on, so that the client's next attempt sees the cells back). Only a start decides: an
early hint (103) does not. An app that ends without starting a response (it raised, or
returned) is counted as the 500 the server then answers; a request cancelled before its
response started keeps its cells (its outcome is unknown). A rule with ``usage`` gets
``Usage.used`` once the app returns. Both are charges (``need = CHARGE``): they never
fail the response and may take a bucket into debt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from asgikit.scopes import derive_scope
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

from .dynamic import USAGE_KEY, Usage
from .rules import Rule
from .store import CHARGE, Check, weigh

__all__ = ["run_counted"]

Charge = Callable[[list[Check]], Awaitable[None]]

_STARTS: Final = frozenset({"http.response.start", "websocket.http.response.start"})
_WEBSOCKET_STATUS: Final = {"websocket.accept": 101, "websocket.close": 403}
"""The status a websocket handshake ends with: accepted, or closed before that."""
_UNANSWERED: Final = 500
"""What the server answers when the app ends without starting a response."""


def _status(message: Message) -> int:
    """The status a response start says, 0 for any other message (an early hint)."""
    kind = message["type"]
    if kind in _STARTS:
        status: int = message["status"]
        return status
    return _WEBSOCKET_STATUS.get(kind, 0)


class _Refunds:
    """Gives back the cells of the counted rules whose statuses exclude the response's."""

    __slots__ = ("_charge", "_counted", "_send", "decided")

    def __init__(self, send: Send, counted: Sequence[tuple[Rule, Check]], charge: Charge) -> None:
        self._send = send
        self._counted = counted
        self._charge = charge
        self.decided = False

    async def send(self, message: Message) -> None:
        if not self.decided:
            status = _status(message)
            if status:  # only a response start decides
                await self.decide(status)
        await self._send(message)

    async def settle(self) -> None:
        """The app ended: without a response start, the server answers 500."""
        if not self.decided:
            await self.decide(_UNANSWERED)

    async def decide(self, status: int) -> None:
        """The response's status is *status*: refund the rules that do not count it."""
        self.decided = True
        due: list[Check] = []
        for rule, check in self._counted:
            assert rule.count_status is not None
            key, quota, need, _ = weigh(check)
            if need and status not in rule.count_status:
                due.append((key, quota, CHARGE, -need))
        if due:
            await self._charge(due)


async def run_counted(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    applied: Sequence[Rule],
    checks: Sequence[Check],
    charge: Charge,
) -> None:
    """Call *app*; refund what the response's status does not count, charge its usage."""
    counted = [(r, c) for r, c in zip(applied, checks, strict=True) if r.count_status is not None]
    refunds = _Refunds(send, counted, charge) if counted else None
    if refunds is not None:
        send = refunds.send
    metered = [(r, c) for r, c in zip(applied, checks, strict=True) if r.usage]
    usage = Usage() if metered else None
    inner = derive_scope(scope, {USAGE_KEY: usage}) if metered else scope
    try:
        await app(inner, receive, send)
    except Exception:
        if refunds is not None:
            await refunds.settle()
        raise
    else:
        if refunds is not None:
            await refunds.settle()
    finally:
        # Also when the app raised: what it used is used. The middleware's charge is
        # shielded from a cancellation, within the store's budget.
        if usage is not None and usage.used:
            await _charge_usage(metered, usage.used, charge)


async def _charge_usage(metered: Sequence[tuple[Rule, Check]], used: int, charge: Charge) -> None:
    due: list[Check] = []
    for _, check in metered:
        key, quota, _, _ = weigh(check)
        due.append((key, quota, CHARGE, used))
    await charge(due)
