"""One checker per scope type: it steps its machines and does what tables cannot.

Each checker keeps its machines' current states and the few facts a table cannot hold:
for http, the announced content-length and the body bytes counted against it; for
lifespan, whether the app answered ``*.failed``. The transitions themselves, and the
checks of message values, are the tables of ``machines``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

from asgikit.contract import checks, nesting
from asgikit.contract.base import Checker, Direction
from asgikit.contract.machines import Machine, S
from asgikit.contract.machines.http import (
    HTTP_BODY_STATES,
    HTTP_IN_PROGRESS,
    HTTP_RECEIVE_MACHINE,
    HTTP_SEND_MACHINE,
    REQUEST_GONE,
    HTTPState,
    RequestState,
)
from asgikit.contract.machines.lifespan import (
    LIFESPAN_FAILED,
    LIFESPAN_RECEIVE_MACHINE,
    LIFESPAN_SEND_MACHINE,
    LifespanState,
)
from asgikit.contract.machines.websocket import (
    WS_RECEIVE_MACHINE,
    WS_SEND_MACHINE,
    PeerState,
    WSState,
)
from asgikit.contract.nesting import Options
from asgikit.types import Message, Receive, Scope, Send

__all__ = ["HTTPChecker", "LifespanChecker", "WebSocketChecker", "new_checker"]


class HTTPChecker(Checker):
    """An http scope: the app's response, and the request body the server hands over."""

    # The state at the start of a call (a call's own values are set on the instance).
    state = HTTPState.START
    request = RequestState.READING
    content_length: int | None = None  # None: not announced, or not to be checked
    body_bytes = 0
    body_sent = False

    def rule_for(self, rule: str) -> str:
        # Behind a middleware, a bad request body is the middleware's replay (H8).
        return "H8" if rule == "H1" and self.link.parent is not None else rule

    def on_receive(self, message: Message) -> None:
        self.request = self.advance(HTTP_RECEIVE_MACHINE, self.request, message, "server")

    def on_send(self, message: Message) -> None:
        after = self.advance(HTTP_SEND_MACHINE, self.state, message, "app")
        kind = message["type"]
        if kind == "http.response.start":
            self._started(message)
        elif kind == "http.response.pathsend" and self.body_sent:
            self.fail_now("X2", "app", "http.response.pathsend mixed with body", message)
        elif kind == "http.response.body":
            self.body_sent = True
            self.body_bytes += len(message.get("body", b""))
        elif kind == "http.response.zerocopysend":
            self.body_sent = True
        if self.state in HTTP_BODY_STATES and after not in HTTP_BODY_STATES:
            self._ended(message)
        self.state = after

    def out_of_order(
        self, machine: Machine[S], state: S, key: str, message: Message, side: Direction
    ) -> NoReturn:
        if side == "app" and message["type"] == "http.response.start":
            nesting.check_second_start(self, message)
        super().out_of_order(machine, state, key, message, side)

    def _started(self, message: Message) -> None:
        if message.get("trailers", False) and "http.response.trailers" not in self.extensions:
            self.fail_now(
                "X1",
                "app",
                "trailers=True but the scope does not advertise 'http.response.trailers'",
                message,
            )
        length, problem = checks.content_length(message.get("headers", ()))
        if problem is not None:
            self.report(problem, "app", message)
        exempt = self.scope.get("method") == "HEAD" or message["status"] in (204, 304)
        self.content_length = None if exempt else length

    def _ended(self, message: Message) -> None:
        """The body ended (a final body, zerocopysend or pathsend): H4, then H5."""
        nesting.check_cut_short_not_completed(self, message)
        if message["type"] != "http.response.body" or self.content_length is None:
            return
        if self.content_length != self.body_bytes:
            self.fail(
                "H5",
                "app",
                f"content-length is {self.content_length} but {self.body_bytes} body "
                "bytes were sent",
                message,
            )

    def cut_short(self) -> bool:
        return (
            not self.running
            and self.state in HTTP_IN_PROGRESS
            and (self.raised is not None or self.request not in REQUEST_GONE)
        )

    def check_end(self) -> None:
        if self.request in REQUEST_GONE or self.send_failed:
            return  # the client went away: stopping early is allowed
        if self.state is HTTPState.START:
            self.fail_now("H2", "app", "the app returned without starting a response")
        if self.state in HTTP_IN_PROGRESS:
            self.fail_now(
                "H3",
                "app",
                f"the app returned without completing the response ({self.state.label})",
            )


class WebSocketChecker(Checker):
    """A websocket scope: the app's side of the connection, and the server's."""

    state = WSState.HANDSHAKE
    peer = PeerState.CONNECTING

    def before_receive(self) -> None:
        if self.peer is PeerState.DISCONNECTED:
            self.fail_now("W4", "app", "receive() was called after websocket.disconnect")
        if self.peer is PeerState.CONNECTED and self.state is WSState.HANDSHAKE:
            self.fail_now(
                "W1",
                "app",
                "receive() was called before the app answered websocket.connect "
                "(accept, close or a denial response)",
            )

    def on_receive(self, message: Message) -> None:
        self.peer = self.advance(WS_RECEIVE_MACHINE, self.peer, message, "server")

    def on_send(self, message: Message) -> None:
        after = self.advance(WS_SEND_MACHINE, self.state, message, "app")
        if message["type"] == "websocket.accept":
            self._check_offered(message)
        self.state = after

    def _check_offered(self, message: Message) -> None:
        subprotocol = message.get("subprotocol")
        offered = self.scope.get("subprotocols", [])
        if subprotocol is not None and subprotocol not in offered:
            self.fail(
                "W2",
                "app",
                f"subprotocol {subprotocol!r} was not offered by the client ({offered!r})",
                message,
                warning=True,
            )


class LifespanChecker(Checker):
    """A lifespan scope: one machine, stepped by the server's events and the app's answers."""

    state = LifespanState.IDLE
    answered_failed = False

    def on_receive(self, message: Message) -> None:
        self.state = self.advance(LIFESPAN_RECEIVE_MACHINE, self.state, message, "server")

    def on_send(self, message: Message) -> None:
        after = self.advance(LIFESPAN_SEND_MACHINE, self.state, message, "app")
        kind = message["type"]
        if kind in LIFESPAN_FAILED:
            nesting.check_failed_not_translated(self, kind, message)
            self.answered_failed = True
        self.state = after

    def sent_failed_answer(self) -> bool:
        return self.answered_failed


_CHECKERS: dict[str, type[Checker]] = {
    "http": HTTPChecker,
    "websocket": WebSocketChecker,
    "lifespan": LifespanChecker,
}


def new_checker(options: Options, scope: Scope, receive: Receive, send: Send) -> Checker:
    """The checker for one call, linked to the checker the call is nested in, if any."""
    scope_type = scope.get("type") if isinstance(scope, Mapping) else None
    if not isinstance(scope_type, str):
        scope_type = ""
    checker_class = _CHECKERS.get(scope_type, Checker)
    return checker_class(options, scope, scope_type, receive, send, nesting.CURRENT.get())
