"""Charges after the decision: statuses known only from the response, usage the app reports.

A rule with ``count_status`` checked before the app that one more request would fit,
taking nothing; ``status_debit`` takes its cells when the response starts with a
status it counts (before the start goes on, so that the client cannot send its next
attempt before this one counted). A rule with ``usage`` gets ``Usage.used`` once the
app returns. Both are charges (``need = CHARGE``): they never fail the response and may
take a bucket into debt.
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

_WEBSOCKET_STATUS: Final = {"websocket.accept": 101, "websocket.close": 403}
"""The status a websocket handshake ends with: accepted, or closed before that."""


def _status(message: Message) -> int:
    """The status a response start says, 0 for any other message."""
    kind = message["type"]
    if kind == "http.response.start" or kind == "websocket.http.response.start":
        status: int = message["status"]
        return status
    return _WEBSOCKET_STATUS.get(kind, 0)


def status_debit(send: Send, counted: Sequence[tuple[Rule, Check]], charge: Charge) -> Send:
    """*send*, charging each rule of *counted* whose statuses include the response's."""
    started = False

    async def debiting_send(message: Message) -> None:
        nonlocal started
        if not started:  # the first message an app sends starts its response
            started = True
            status = _status(message)
            due: list[Check] = []
            for rule, check in counted:
                assert rule.count_status is not None
                if status in rule.count_status:
                    key, quota, need, _ = weigh(check)
                    due.append((key, quota, CHARGE, need))
            if due:
                await charge(due)
        await send(message)

    return debiting_send


async def run_counted(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    applied: Sequence[Rule],
    checks: Sequence[Check],
    charge: Charge,
) -> None:
    """Call *app*, then charge what the response's status and the app's usage say."""
    counted = [(r, c) for r, c in zip(applied, checks, strict=True) if r.count_status is not None]
    if counted:
        send = status_debit(send, counted, charge)
    metered = [(r, c) for r, c in zip(applied, checks, strict=True) if r.usage]
    if not metered:
        return await app(scope, receive, send)
    usage = Usage()
    try:
        await app(derive_scope(scope, {USAGE_KEY: usage}), receive, send)
    finally:
        # Also when the app raised: what it used is used. (Cancelled, the charge is
        # cancelled with it.)
        if usage.used:
            await _charge_usage(metered, usage.used, charge)


async def _charge_usage(metered: Sequence[tuple[Rule, Check]], used: int, charge: Charge) -> None:
    due: list[Check] = []
    for _, check in metered:
        key, quota, _, _ = weigh(check)
        due.append((key, quota, CHARGE, used))
    await charge(due)
