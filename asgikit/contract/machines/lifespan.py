"""The lifespan machine: one, driven by the server's events and the app's answers."""

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


class LifespanState(State):
    """A lifespan scope, from the server's first event to the app's last answer."""

    IDLE = "waiting for lifespan.startup"
    STARTING = "starting up"
    STARTED = "started"
    STOPPING = "shutting down"
    DONE = "finished"


L = LifespanState

# The answers a middleware must not make out of an exception, or turn into one (L1).
LIFESPAN_FAILED = frozenset({"lifespan.startup.failed", "lifespan.shutdown.failed"})

# The server's events (receive()).
LIFESPAN_RECEIVE: Transitions[LifespanState] = {
    L.IDLE: {"lifespan.startup": (L.STARTING, None)},
    L.STARTING: {},
    L.STARTED: {"lifespan.shutdown": (L.STOPPING, None)},
    L.STOPPING: {},
    L.DONE: {},
}

_NOT_LIFESPAN = Misstep("L1", "receive() returned {kind!r} in lifespan")
_STARTUP_TWICE = Misstep("L1", "lifespan.startup received twice")
_SHUTDOWN_TWICE = Misstep("L1", "lifespan.shutdown received twice")

LIFESPAN_RECEIVE_OUT_OF_ORDER: Mapping[LifespanState, Mapping[str, Misstep]] = {
    L.IDLE: {
        "lifespan.shutdown": Misstep(
            "L1", "lifespan.shutdown arrived before startup", show_message=False
        ),
        ANY: _NOT_LIFESPAN,
    },
    L.STARTING: {
        "lifespan.startup": _STARTUP_TWICE,
        "lifespan.shutdown": Misstep(
            "L1", "lifespan.shutdown arrived before start-up was answered", show_message=False
        ),
        ANY: _NOT_LIFESPAN,
    },
    L.STARTED: {"lifespan.startup": _STARTUP_TWICE, ANY: _NOT_LIFESPAN},
    L.STOPPING: {
        "lifespan.startup": _STARTUP_TWICE,
        "lifespan.shutdown": _SHUTDOWN_TWICE,
        ANY: _NOT_LIFESPAN,
    },
    L.DONE: {
        "lifespan.startup": _STARTUP_TWICE,
        "lifespan.shutdown": _SHUTDOWN_TWICE,
        ANY: _NOT_LIFESPAN,
    },
}

LIFESPAN_RECEIVE_MACHINE = Machine(LIFESPAN_RECEIVE, LIFESPAN_RECEIVE_OUT_OF_ORDER, event)

# The app's answers (send()).
LIFESPAN_SEND: Transitions[LifespanState] = {
    L.IDLE: {OTHER: (L.IDLE, None)},
    L.STARTING: {
        "lifespan.startup.complete": (L.STARTED, None),
        "lifespan.startup.failed": (L.DONE, checks.failed),
        OTHER: (L.STARTING, None),
    },
    L.STARTED: {OTHER: (L.STARTED, None)},
    L.STOPPING: {
        "lifespan.shutdown.complete": (L.DONE, None),
        "lifespan.shutdown.failed": (L.DONE, checks.failed),
        OTHER: (L.STOPPING, None),
    },
    L.DONE: {OTHER: (L.DONE, None)},
}

LIFESPAN_SEND_OUT_OF_ORDER: Mapping[LifespanState, Mapping[str, Misstep]] = {
    state: {ANY: Misstep("L1", "{kind!r} sent while {state}")} for state in L
}

LIFESPAN_SEND_MACHINE = Machine(
    LIFESPAN_SEND, LIFESPAN_SEND_OUT_OF_ORDER, event_with_prefix("lifespan.")
)
