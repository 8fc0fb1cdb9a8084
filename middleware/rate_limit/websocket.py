"""A per-connection message rate for websockets: GCRA on the messages a client sends.

Kept in the connection's closure (no store: one connection lives in one process). A
message over the rate closes the connection with 1008 (policy violation) and a reason;
the app's ``receive`` then gets ``websocket.disconnect`` with that code, and whatever
it sends afterwards is dropped, since the connection is closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from asgikit.types import Message, Receive, Send

from .store import MICROSECONDS, Quota

__all__ = ["CLOSE_CODE", "REASON", "limit_messages"]

CLOSE_CODE: Final = 1008
REASON: Final = "message rate limit exceeded"
_CLOSE: Final = {"type": "websocket.close", "code": CLOSE_CODE, "reason": REASON}
_DISCONNECT: Final = {"type": "websocket.disconnect", "code": CLOSE_CODE, "reason": REASON}


def limit_messages(
    receive: Receive, send: Send, quota: Quota, clock: Callable[[], float] = time.monotonic
) -> tuple[Receive, Send]:
    """*receive* and *send* of one connection, closing it when messages come too fast."""
    interval = quota.interval_us
    tolerance = quota.tolerance_us
    tat = 0
    closed = False

    async def limited_receive() -> Message:
        nonlocal tat, closed
        if closed:
            return dict(_DISCONNECT)
        message = await receive()
        if message["type"] != "websocket.receive":
            return message
        now = round(clock() * MICROSECONDS)
        tat = max(tat, now)
        if tat + interval - now > tolerance:
            closed = True
            await send(dict(_CLOSE))
            return dict(_DISCONNECT)
        tat += interval
        return message

    async def limited_send(message: Message) -> None:
        if not closed:  # after our close the connection is gone: drop what follows
            await send(message)

    return limited_receive, limited_send
