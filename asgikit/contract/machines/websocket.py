"""The websocket machines: the app's side of the connection, and the server's."""

from __future__ import annotations

from collections.abc import Mapping

from asgikit.contract import checks
from asgikit.contract.machines import (
    ANY,
    OTHER,
    Machine,
    Misstep,
    State,
    Transitions,
    event,
    event_with_prefix,
)


class WSState(State):
    """The app side of a websocket scope."""

    HANDSHAKE = "handshake"
    OPEN = "accepted"
    DENIAL = "sending a denial response"
    CLOSED = "closed"


W = WSState

WS_SEND: Transitions[WSState] = {
    W.HANDSHAKE: {
        "websocket.accept": (W.OPEN, checks.accept),
        "websocket.close": (W.CLOSED, checks.close),
        "websocket.http.response.start": (W.DENIAL, checks.denial_start),
        OTHER: (W.HANDSHAKE, None),
    },
    W.OPEN: {
        "websocket.send": (W.OPEN, checks.bytes_or_text),
        "websocket.close": (W.CLOSED, checks.close),
        OTHER: (W.OPEN, None),
    },
    W.DENIAL: {
        "websocket.http.response.body": (W.DENIAL, checks.denial_body),
        "websocket.http.response.body(final)": (W.CLOSED, checks.denial_body),
        OTHER: (W.DENIAL, None),
    },
    W.CLOSED: {},
}

WS_SEND_OUT_OF_ORDER: Mapping[WSState, Mapping[str, Misstep]] = {
    W.HANDSHAKE: {
        ANY: Misstep(
            "W1",
            "{kind!r} sent while {state}: answer the handshake (accept, close or denial) first",
        ),
    },
    W.OPEN: {
        "websocket.accept": Misstep("W2", "{kind!r} sent while {state}: accepted twice"),
        ANY: Misstep(
            "W1", "{kind!r} sent while {state}: a denial response is only possible before accept"
        ),
    },
    W.DENIAL: {
        ANY: Misstep(
            "W1",
            "{kind!r} sent while {state}: "
            "only websocket.http.response.body may follow a denial start",
        ),
    },
    W.CLOSED: {
        OTHER: Misstep("W4", "{kind!r} sent after websocket.close"),
        ANY: Misstep(
            "W4", "{kind!r} sent while {state}: nothing may be sent after websocket.close"
        ),
    },
}

WS_SEND_MACHINE = Machine(WS_SEND, WS_SEND_OUT_OF_ORDER, event_with_prefix("websocket."))


class PeerState(State):
    """The server side of a websocket scope: what receive() has returned so far."""

    CONNECTING = "waiting for websocket.connect"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


P = PeerState

_AFTER_CONNECT = Misstep("W1", "receive() returned {kind!r} after connect")

WS_RECEIVE: Transitions[PeerState] = {
    P.CONNECTING: {"websocket.connect": (P.CONNECTED, None)},
    P.CONNECTED: {
        "websocket.receive": (P.CONNECTED, checks.bytes_or_text),
        "websocket.disconnect": (P.DISCONNECTED, checks.disconnect),
    },
    # The checker refuses receive() after a disconnect (W4): only receive() calls made
    # before the disconnect was returned get here.
    P.DISCONNECTED: {
        "websocket.receive": (P.DISCONNECTED, checks.bytes_or_text),
        "websocket.disconnect": (P.DISCONNECTED, checks.disconnect),
    },
}

WS_RECEIVE_OUT_OF_ORDER: Mapping[PeerState, Mapping[str, Misstep]] = {
    P.CONNECTING: {ANY: Misstep("W1", "the first receive() returned {kind!r}, not connect")},
    P.CONNECTED: {ANY: _AFTER_CONNECT},
    P.DISCONNECTED: {ANY: _AFTER_CONNECT},
}

WS_RECEIVE_MACHINE = Machine(WS_RECEIVE, WS_RECEIVE_OUT_OF_ORDER, event)
