"""Two checkers around one middleware, and the blame for what only the pair can see.

``enforce(mw(enforce(app)))`` runs two checkers in one call. The inner one finds the
outer one through ``CURRENT``, a context variable the outer checker sets while the
middleware runs (the middleware calls the app in the same task, or in a task that copied
the context). The inner checker becomes a *child* of the outer one (its ``Link``), and
from then on:

* what the child's caller did (the scope, receive()) was done by the middleware, and what
  the parent's app sent was sent by the middleware (``blame``);
* the parent compares what reaches the server with what the app sent through the child:
  messages dropped, changed or reordered (M3, M4, X2, X3), a response the app cut short
  that the middleware completed (H4), a second start (H6), an exception turned into a
  ``*.failed`` answer or the reverse (L1);
* when the call ends, the parent looks at how the child ended: an exception or a
  cancellation swallowed (E1, E2), a message still held back (M4, X2, X3), a ``lifespan``
  scope that never reached the app (S1);
* the child compares the parent's scope with the snapshot taken when the parent was
  entered (S7), and the ``state`` it got with the parent's (S6).
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import anyio

from asgikit.contract.checks import MISSING, freeze, freeze_scope
from asgikit.contract.machines import CORE_SEND_TYPES, EXTENSION_OF
from asgikit.contract.rules import ContractViolation, Side
from asgikit.types import Message


@dataclass(frozen=True, slots=True)
class Options:
    """How ``enforce`` was called (see its docstring)."""

    strict: bool
    answers_errors: bool
    runs_app_in_task: bool
    wraps_checker: bool  # the wrapped app keeps a checked app in its ``.app`` chain


class Nested(Protocol):
    """What the nesting checks use of a checker (``base.Checker`` is the one)."""

    options: Options
    scope: Any
    type: str
    running: bool
    link: Link
    raised: BaseException | None
    violation: ContractViolation | None
    cancel_seen: bool
    send_failed: bool

    def cut_short(self) -> bool: ...

    def sent_failed_answer(self) -> bool: ...

    def fail(
        self,
        rule: str,
        side: Side,
        detail: str,
        message: Mapping[str, Any] | None = None,
        *,
        warning: bool = False,
    ) -> None: ...

    def fail_now(
        self,
        rule: str,
        side: Side,
        detail: str,
        message: Mapping[str, Any] | None = None,
    ) -> NoReturn: ...


CURRENT: ContextVar[Nested | None] = ContextVar("asgikit_contract_exchange", default=None)

# The keys the spec defines for the messages a middleware commonly rewrites (M3).
STANDARD_KEYS: dict[str, frozenset[str]] = {
    "http.response.start": frozenset({"type", "status", "headers", "trailers"}),
    "websocket.accept": frozenset({"type", "subprotocol", "headers"}),
    "websocket.http.response.start": frozenset({"type", "status", "headers"}),
}


class Link:
    """A checker's place among nested checkers, and what it keeps for them."""

    __slots__ = (
        "cancelling_at_entry",
        "children",
        "parent",
        "passthrough",
        "rewritable",
        "scope_before",
        "task",
    )

    def __init__(self, checker: Nested, parent: Nested | None) -> None:
        if parent is not None and not (parent.running and parent.type == checker.type):
            parent = None
        self.parent = parent
        self.children: list[Nested] = []
        if parent is not None:
            parent.link.children.append(checker)
        scope = checker.scope
        # for a child's S7 check
        self.scope_before = freeze_scope(scope) if isinstance(scope, Mapping) else {}
        self.task = _current_task()  # for a child's E3 check
        self.cancelling_at_entry = _cancelling()  # for E2
        # for the parent: messages to be forwarded, and the messages a middleware rewrites
        self.passthrough: deque[tuple[str, Any]] = deque()
        self.rewritable: dict[str, Message] = {}


def blame(checker: Nested, side: Side) -> Side:
    """Who broke a rule, seen from *checker*: the middleware, if it sits on that side."""
    if side == "server" and checker.link.parent is not None:
        return "middleware"
    if side == "app" and checker.link.children:
        return "middleware"
    return side


# --------------------------------------------------------------------------------------
# The scope the middleware handed on (checked by the child)


def check_state_kept(checker: Nested, view: Mapping[str, Any]) -> None:
    parent = checker.link.parent
    if parent is None or "state" not in parent.scope:
        return
    if "state" not in checker.scope:
        checker.fail("S6", "server", "scope['state'] was dropped", view)
    elif checker.scope["state"] is not parent.scope["state"]:
        checker.fail(
            "S6",
            "server",
            "scope['state'] was replaced: writes at lifespan start-up are lost",
            view,
        )


def check_scope_handed_on(checker: Nested) -> None:
    """S7: the parent's scope is as it was; E3: the app runs in the parent's task."""
    parent = checker.link.parent
    if parent is None:
        return
    now = freeze_scope(parent.scope)
    before = parent.link.scope_before
    if now != before:
        changed = sorted(
            key
            for key in set(now) | set(before)
            if now.get(key, MISSING) != before.get(key, MISSING)
        )
        checker.fail(
            "S7",
            "server",
            f"the server's scope was changed in place (keys {', '.join(changed)}); "
            "pass a copy ({**scope, ...}) instead",
        )
    if (
        checker.link.task is not parent.link.task
        and not parent.options.runs_app_in_task
        and checker.type != "lifespan"
    ):
        checker.fail(
            "E3", "server", "the app was called in another task: contextvars it sets are lost"
        )


# --------------------------------------------------------------------------------------
# Messages on their way through (checked by the parent when the middleware sends)


def passthrough_rule(kind: str) -> str:
    if kind == "http.response.pathsend":
        return "X2"
    if kind in EXTENSION_OF:
        return "X3"
    return "M4"


def track_forwarding(checker: Nested, message: Message) -> None:
    """Keep what a parent needs to see forwarded; compare with what a child kept."""
    kind: str = message["type"]
    link = checker.link
    if kind not in CORE_SEND_TYPES:
        if link.parent is not None:
            link.passthrough.append((kind, freeze(message)))
        if link.children:
            _match_passthrough(checker, message, kind)
    if kind in STANDARD_KEYS:
        if link.parent is not None:
            link.rewritable[kind] = message
        if link.children:
            _check_unknown_keys_kept(checker, message, kind)


def _match_passthrough(checker: Nested, message: Message, kind: str) -> None:
    pending = checker.link.children[-1].link.passthrough
    if not pending:
        return  # the middleware sent it on its own
    head_kind, head = pending[0]
    rule = passthrough_rule(kind)
    if head_kind == kind:
        pending.popleft()
        if head != freeze(message):
            checker.fail_now(rule, "app", f"{kind!r} was changed on its way through", message)
        return
    if any(k == kind for k, _ in pending):
        checker.fail_now(
            rule,
            "app",
            f"{kind!r} arrived while the app's earlier {head_kind!r} was dropped or held "
            "back: messages must be forwarded in order",
            message,
        )


def _check_unknown_keys_kept(checker: Nested, message: Message, kind: str) -> None:
    original = checker.link.children[-1].link.rewritable.get(kind)
    if original is None:
        return  # the middleware sent it on its own
    lost = sorted(set(original) - STANDARD_KEYS[kind] - set(message))
    if lost:
        checker.fail_now(
            "M3",
            "app",
            f"the app's {kind!r} carried {', '.join(map(repr, lost))}, lost when the "
            "middleware rewrote it; copy the message ({**message, ...})",
            message,
        )


# --------------------------------------------------------------------------------------
# Answers of the middleware's own (checked by the parent)


def check_second_start(checker: Nested, message: Message) -> None:
    """H6: a start after the app's had reached the server came from the middleware."""
    if checker.link.children:
        checker.fail_now(
            "H6",
            "app",
            "a second http.response.start: the middleware answered on its own after "
            "the app's response had reached the server",
            message,
        )


def check_cut_short_not_completed(checker: Nested, message: Message) -> None:
    """H4: a message ending the response, while the app's own response was cut short."""
    if any(child.cut_short() for child in checker.link.children):
        checker.fail_now(
            "H4",
            "app",
            "the app's response was cut short (it failed after starting), but the "
            "middleware completed it, so a truncated body looks whole",
            message,
        )


def check_failed_not_translated(checker: Nested, kind: str, message: Message) -> None:
    """L1: a ``*.failed`` answer is the app's own, not its exception translated."""
    if any(child.raised is not None for child in checker.link.children):
        checker.fail_now(
            "L1", "app", "the middleware turned the app's exception into " + kind, message
        )


# --------------------------------------------------------------------------------------
# How the call ended


async def check_after_return(checker: Nested) -> None:
    """E2, then what the children left behind, when the app returned normally."""
    cancelled = anyio.get_cancelled_exc_class()
    children = checker.link.children
    seen = checker.cancel_seen or any(isinstance(c.raised, cancelled) for c in children)
    if seen and await _still_cancelled(checker.link.cancelling_at_entry):
        checker.fail_now("E2", "app", "a cancellation was swallowed: the app returned normally")
    if checker.options.wraps_checker and not children and checker.type not in ("http", "websocket"):
        checker.fail_now(
            "S1",
            "middleware",
            f"the {checker.type!r} scope never reached the wrapped app: pass it through",
        )
    for child in children:
        _check_child_after_return(checker, child)


def _check_child_after_return(checker: Nested, child: Nested) -> None:
    for kind, _ in child.link.passthrough:
        checker.fail_now(
            passthrough_rule(kind), "app", f"the app sent {kind!r} but it never reached the server"
        )
    raised = child.raised
    if raised is None:
        return
    if isinstance(raised, ContractViolation):
        raise raised  # the middleware swallowed it; it still counts
    if child.send_failed and isinstance(raised, OSError):
        return  # ending quietly after the client went away is allowed (H7)
    if isinstance(raised, anyio.get_cancelled_exc_class()):
        return  # E2 is judged by whether this task is still being cancelled
    if not checker.options.answers_errors:
        checker.fail_now(
            "E1",
            "app",
            f"the app raised {type(raised).__name__}: {raised} — but it was swallowed",
        )


async def check_after_raise(checker: Nested, exc: BaseException) -> None:
    """Violations surfacing, then E1, E2 and L1 against what the children raised."""
    checker.raised = exc
    if isinstance(exc, ContractViolation):
        return
    found = _find_violation(exc)
    if found is not None:
        raise found from exc  # surfaced from the task group that wrapped it
    if checker.violation is not None:
        raise checker.violation from exc
    children = checker.link.children
    if checker.type == "lifespan" and any(c.sent_failed_answer() for c in children):
        checker.fail_now(
            "L1", "app", "the middleware turned the app's failed message into an error"
        )
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        checker.cancel_seen = True
    for child in children:
        await _check_child_raised(checker, child, exc)


async def _check_child_raised(checker: Nested, child: Nested, exc: BaseException) -> None:
    raised = child.raised
    if raised is None or raised is exc or isinstance(raised, ContractViolation):
        return
    cancelled = anyio.get_cancelled_exc_class()
    if isinstance(raised, cancelled):
        if not isinstance(exc, cancelled) and await _still_cancelled(
            checker.link.cancelling_at_entry
        ):
            checker.fail_now(
                "E2",
                "app",
                f"the app was cancelled, but {type(exc).__name__} came out instead",
            )
        return
    if child.send_failed and isinstance(raised, OSError):
        return
    if not checker.options.answers_errors:
        checker.fail_now(
            "E1",
            "app",
            f"the app raised {type(raised).__name__}, but {type(exc).__name__} "
            "came out: exceptions must propagate unchanged",
        )


def _find_violation(exc: BaseException) -> ContractViolation | None:
    if isinstance(exc, ContractViolation):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_violation(inner)
            if found is not None:
                return found
    return None


# --------------------------------------------------------------------------------------
# Tasks and cancellation, on asyncio and trio


def _current_task() -> object:
    try:
        return asyncio.current_task()
    except RuntimeError:  # not asyncio: anyio's other backend is trio
        return sys.modules["trio"].lowlevel.current_task()


def _cancelling() -> int:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return 0
    return task.cancelling() if task is not None else 0


async def _still_cancelled(cancelling_at_entry: int) -> bool:
    """Is the task that called the app still being cancelled from outside?"""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        trio = sys.modules["trio"]
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
        except trio.Cancelled:
            return True
        return False
    return task is not None and task.cancelling() > cancelling_at_entry
