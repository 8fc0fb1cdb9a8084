"""The protocol state machines, written as data.

Theory of operation
===================

Each scope type has one or two small machines, in a module of its own (``http``,
``websocket``, ``lifespan``); this module holds what they share. A machine is three
things:

* a *state* enum (a ``State``). http has two machines: the app's response
  (``HTTPState``) and the request body the server hands over (``RequestState``).
  websocket has the app's side of the connection (``WSState``) and the server's
  (``PeerState``). lifespan has a single machine (``LifespanState``) that messages from
  both directions drive;
* a *transition table*, ``{state: {event: (next state, check)}}``. The event is the
  message type, refined by a classifier where the next state depends on a value in the
  message: ``"http.response.body"`` with ``more_body=True`` is the event
  ``"http.response.body"``, the last chunk is ``"http.response.body(final)"``; a start
  announcing trailers is ``"http.response.start(trailers)"``. A message type that is not
  the machine's own (``lifespan.*`` messages are not http's) is the event ``OTHER``,
  which a machine usually lets pass without changing state. The check, if any, is a
  function of ``checks`` that validates the message's values before the transition;
* an *out-of-order table*, ``{state: {message type: Misstep}}``: for an event the
  transition table does not list in that state, the rule it breaks and the words to say
  so. ``ANY`` is a state's default row entry; ``OTHER`` stands for message types that are
  not the machine's own.

The next state is always read from the transition table. What a table cannot hold is
kept as code in the checkers: effects that need more than the message (the scope's
extensions, the bytes counted so far, the nested checkers). Where a past event changes
what comes later, the states are refined instead of keeping a flag: a start announcing
trailers leads to ``BODY_THEN_TRAILERS`` rather than ``BODY``, and a response completed by
``http.response.pathsend`` ends in ``DONE_BY_PATHSEND``, where a further body is an X2
violation rather than H3.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from asgikit.contract.checks import Check
from asgikit.types import Message

OTHER = "(other)"  # the event for a message type that is not the machine's own
ANY = "(any)"  # the out-of-order entry for every type a state's row does not name
FINAL = "(final)"  # the suffix of the event for the last message of a series


class State(enum.Enum):
    """A state of a machine. Its value is how violation messages name it (``label``)."""

    # Members are singletons compared by identity, so hash them by identity too: the
    # tables are looked up on every message, and Enum's own __hash__ is Python code.
    __hash__ = object.__hash__

    @property
    def label(self) -> str:
        """How violation messages name the state (several states may share a label)."""
        value = self.value
        return value if isinstance(value, str) else str(value[0])


S = TypeVar("S", bound=State)

Transitions = Mapping[S, Mapping[str, tuple[S, Check | None]]]


class Misstep(NamedTuple):
    """Which rule an event missing from a transition table breaks."""

    rule: str
    detail: str  # a str.format template: {kind} is the message type, {state} the state
    show_message: bool = True  # attach the offending message to the violation


@dataclass(frozen=True, slots=True)
class Machine(Generic[S]):
    """A transition table, its out-of-order table and the classifier of its events."""

    transitions: Transitions[S]
    out_of_order: Mapping[S, Mapping[str, Misstep]]
    classify: Callable[[Message], str]


# --------------------------------------------------------------------------------------
# Events

# Message type -> the key that, when false or absent, makes the message the last one.
_FINAL_UNLESS = {
    "http.request": "more_body",
    "http.response.body": "more_body",
    "http.response.zerocopysend": "more_body",
    "http.response.trailers": "more_trailers",
    "websocket.http.response.body": "more_body",
}


def event(message: Message) -> str:
    """The event a message is: its type, refined by the value that picks the next state."""
    kind: str = message["type"]
    flag = _FINAL_UNLESS.get(kind)
    if flag is not None and not message.get(flag, False):
        return kind + FINAL
    if kind == "http.response.start" and message.get("trailers", False):
        return kind + "(trailers)"
    return kind


def event_among(types: frozenset[str]) -> Callable[[Message], str]:
    """A classifier: the event of a message whose type is in *types*, else ``OTHER``."""

    def classify(message: Message) -> str:
        return event(message) if message["type"] in types else OTHER

    return classify


def event_with_prefix(prefix: str) -> Callable[[Message], str]:
    """A classifier: the event of a message whose type starts with *prefix*, else ``OTHER``."""

    def classify(message: Message) -> str:
        return event(message) if message["type"].startswith(prefix) else OTHER

    return classify


# --------------------------------------------------------------------------------------
# Message types

# Message types the machines understand; any other type a middleware must forward
# unchanged and in order (M4, and X3 for the extensions among them).
CORE_SEND_TYPES = frozenset(
    {
        "http.response.start",
        "http.response.body",
        "websocket.accept",
        "websocket.send",
        "websocket.close",
        "websocket.http.response.start",
        "websocket.http.response.body",
        "lifespan.startup.complete",
        "lifespan.startup.failed",
        "lifespan.shutdown.complete",
        "lifespan.shutdown.failed",
    }
)

# Message type -> the scope["extensions"] key that must be present to send it (X1).
EXTENSION_OF = {
    "http.response.pathsend": "http.response.pathsend",
    "http.response.zerocopysend": "http.response.zerocopysend",
    "http.response.push": "http.response.push",
    "http.response.trailers": "http.response.trailers",
    "http.response.early_hint": "http.response.early_hint",
    "http.response.debug": "http.response.debug",
    "websocket.http.response.start": "websocket.http.response",
    "websocket.http.response.body": "websocket.http.response",
}
