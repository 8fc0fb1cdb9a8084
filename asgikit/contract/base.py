"""What every checker does: the receive/send plumbing, stepping a machine, reporting.

A checker lives for one call of a checked app. ``Checker`` itself checks a scope type
that has no machine; ``checkers`` holds one subclass per protocol, which steps its
machines from the hooks ``on_receive`` and ``on_send``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal, NoReturn

import anyio

from asgikit.contract import checks, nesting
from asgikit.contract.checks import Problem
from asgikit.contract.machines import ANY, EXTENSION_OF, OTHER, Machine, S
from asgikit.contract.nesting import Nested, Options
from asgikit.contract.rules import RULES, ContractViolation, ContractWarning, Side
from asgikit.types import Message, Receive, Scope, Send

Direction = Literal["app", "server"]  # who sent the message: the app, or the server


class Checker:
    """One call of a checked app: its scope, what crossed it, how it ended."""

    def __init__(
        self,
        options: Options,
        scope: Scope,
        scope_type: str,
        receive: Receive,
        send: Send,
        parent: Nested | None,
    ) -> None:
        self.options = options
        self.scope = scope
        self.type = scope_type
        self._receive_from_caller = receive
        self._send_to_caller = send
        self.running = True
        self.link = nesting.Link(self, parent)
        self.extensions: Mapping[str, Any] = {}
        self.raised: BaseException | None = None
        self.violation: ContractViolation | None = None
        self.cancel_seen = False
        self.send_failed = False
        self.sent_messages: list[tuple[Message, Any]] = []  # with headers, for M5

    # ---- protocol hooks --------------------------------------------------------------

    def before_receive(self) -> None:
        """May the app call receive() now?"""

    def on_receive(self, message: Message) -> None:
        """Step the machines with a message receive() returned (its shape is checked)."""

    def on_send(self, message: Message) -> None:
        """Step the machines with a message the app sends (its shape is checked)."""

    def check_end(self) -> None:
        """The app returned normally: is its side of the protocol finished?"""

    def cut_short(self) -> bool:
        """Did the app stop in the middle of its response (for a parent's H4)?"""
        return False  # pragma: no cover - a parent links only a child of its own type

    def sent_failed_answer(self) -> bool:
        """Did the app answer ``lifespan.*.failed`` (for a parent's L1)?"""
        return False  # pragma: no cover - a parent links only a child of its own type

    def rule_for(self, rule: str) -> str:
        """The rule id to report for *rule* (a protocol may report a nested variant)."""
        return rule

    # ---- reporting -------------------------------------------------------------------

    def fail(
        self,
        rule: str,
        side: Side,
        detail: str,
        message: Mapping[str, Any] | None = None,
        *,
        warning: bool = False,
    ) -> None:
        """Report a broken rule: raise for E rules (and W when strict), else warn.

        ``warning`` marks the W part of an E rule (docs/contract.md's "W:" clauses).
        """
        rule = self.rule_for(rule)
        violation = ContractViolation(rule, nesting.blame(self, side), detail, message)
        parent = self.link.parent
        strict = self.options.strict or (parent is not None and parent.options.strict)
        if (warning or RULES[rule].severity == "W") and not strict:
            warnings.warn(ContractWarning(violation), stacklevel=4)
            return
        if self.violation is None:
            self.violation = violation
        raise violation

    def fail_now(
        self,
        rule: str,
        side: Side,
        detail: str,
        message: Mapping[str, Any] | None = None,
    ) -> NoReturn:
        self.fail(rule, side, detail, message)
        raise AssertionError("unreachable: E rules always raise")  # pragma: no cover

    def report(self, problem: Problem, side: Side, message: Mapping[str, Any] | None) -> None:
        self.fail(problem.rule, side, problem.detail, message, warning=problem.warning)

    # ---- the scope (server side) -----------------------------------------------------

    def check_scope(self) -> None:
        scope = self.scope
        if not checks.has_str_type(scope):
            self.fail_now("S1", "server", "scope is not a dict with a str 'type'", None)
        view = checks.scope_view(scope)
        problem = checks.asgi_version_problem(scope)
        if problem is not None:
            self.report(problem, "server", view)
        if self.type in ("http", "websocket"):
            for problem in checks.connection_scope_problems(scope, self.type):
                self.report(problem, "server", view)
        nesting.check_state_kept(self, view)
        extensions = scope.get("extensions")
        if extensions is not None:
            problem = checks.extensions_problem(extensions)
            if problem is not None:
                self.report(problem, "server", view)
            self.extensions = extensions
        nesting.check_scope_handed_on(self)

    # ---- receive and send ------------------------------------------------------------

    async def receive(self) -> Message:
        self.before_receive()
        try:
            message = await self._receive_from_caller()
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                self.cancel_seen = True
            raise
        self._check_shape(message, "server")
        self.on_receive(message)
        return message

    async def send(self, message: Message) -> None:
        self._check_shape(message, "app")
        self._check_extension(message)
        nesting.track_forwarding(self, message)
        self.on_send(message)
        frozen = checks.freeze(message)
        try:
            await self._send_to_caller(message)
        except OSError:
            self.send_failed = True
            raise
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                self.cancel_seen = True
            raise
        if checks.freeze(message) != frozen:
            self.fail(
                "M5",
                "server",
                f"the {message.get('type')!r} message the app sent was changed in place "
                "after it was sent; build a new dict and header list instead",
                message,
            )
        if "headers" in message:
            self.sent_messages.append((message, frozen))
        self._check_kept_messages()

    def _check_kept_messages(self) -> None:
        for kept, frozen in self.sent_messages:
            if checks.freeze(kept) != frozen:
                self.fail(
                    "M5",
                    "server",
                    f"the {kept.get('type')!r} message the app sent earlier was changed in "
                    "place; build a new dict and header list instead",
                    kept,
                )

    def _check_shape(self, message: Any, side: Direction) -> None:
        if not checks.has_str_type(message):
            self.fail_now("M1", side, "message is not a dict with a str 'type'", None)
        problem = checks.value_problem(message)
        if problem:
            self.fail_now("M1", side, problem, message)

    def _check_extension(self, message: Message) -> None:
        kind = message["type"]
        extension = EXTENSION_OF.get(kind)
        if extension is not None and extension not in self.extensions:
            self.fail_now(
                "X1",
                "app",
                f"{kind!r} sent but the scope does not advertise the {extension!r} extension",
                message,
            )

    # ---- the machines ----------------------------------------------------------------

    def advance(self, machine: Machine[S], state: S, message: Message, side: Direction) -> S:
        """The state after *message*, read from the machine's table; checks its values."""
        key = machine.classify(message)
        step = machine.transitions[state].get(key)
        if step is None:
            self.out_of_order(machine, state, key, message, side)
        after, check = step
        if check is not None:
            problem = check(message)
            if problem is not None:
                self.fail_now(problem.rule, side, problem.detail, message)
        return after

    def out_of_order(
        self, machine: Machine[S], state: S, key: str, message: Message, side: Direction
    ) -> NoReturn:
        """Report an event the table does not list for *state*, as its out-of-order table says."""
        kind = message["type"]
        row = machine.out_of_order[state]
        misstep = row.get(OTHER if key == OTHER else kind) or row[ANY]
        detail = misstep.detail.format(kind=kind, state=state.label)
        self.fail_now(misstep.rule, side, detail, message if misstep.show_message else None)

    # ---- how the app ends ------------------------------------------------------------

    async def on_return(self) -> None:
        if self.violation is not None:
            raise self.violation  # the app swallowed a violation raised inside it
        self._check_kept_messages()
        await nesting.check_after_return(self)
        self.check_end()

    async def on_raise(self, exc: BaseException) -> None:
        await nesting.check_after_raise(self, exc)
