"""The ASGI contract checker: ``enforce(app)`` and ``ContractViolation``.

Theory of operation
===================

``enforce(app)`` wraps an ASGI callable and watches both sides of the boundary:

* the *server side*: the ``scope`` and the messages ``receive()`` returns (what a server,
  or the middleware outside, hands the app);
* the *app side*: the messages the app passes to ``send()``, and how it ends (returns,
  raises, swallows cancellation).

Each call gets a checker (``checkers``): ``HTTPChecker``, ``WebSocketChecker`` or
``LifespanChecker`` by scope type, on a common ``base.Checker`` that does the plumbing
(wrapping ``receive`` and ``send``, message shapes, mutation snapshots) and the reporting.

Each protocol is a small state machine written as data (``machines``): a state enum, a
transition table ``{state: {event: (next state, value check)}}`` and an out-of-order
table saying which rule an event missing from the transition table breaks. The event is
the message type, refined where a value in the message picks the next state
(``"http.response.body(final)"`` for the last chunk). The checker reads the next state
from the table; the value checks are plain functions (``checks``).

Nesting links the checkers (``nesting``). ``enforce(mw(enforce(app)))`` gives two
checkers, and the inner one finds the outer one through a context variable (the
middleware calls the app in the same task, or in a task that copied the context). With
the link, the pair can blame the layer between them, the middleware, for what neither
boundary shows alone: a ``pathsend`` the app sent that never reached the server, a
response the app cut short that the middleware "completed", a second response after the
app's had started, an exception or a cancellation swallowed, a ``lifespan`` scope that
never reached the app, the server's scope mutated in place. Violations found there name
the side ``middleware``.

Rule ids are those of the rule table in docs/contract.md; ``RULES`` holds their summaries.
"""

from __future__ import annotations

from asgikit.contract.checkers import new_checker
from asgikit.contract.nesting import CURRENT, Options
from asgikit.contract.rules import RULES, ContractViolation, ContractWarning, Rule, Side
from asgikit.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "RULES",
    "ContractViolation",
    "ContractWarning",
    "Rule",
    "Side",
    "enforce",
]


def enforce(
    app: ASGIApp,
    *,
    strict: bool = False,
    answers_errors: bool = False,
    runs_app_in_task: bool = False,
) -> ASGIApp:
    """Wrap *app* so every ASGI contract rule is checked at run time.

    Wrap both sides of a middleware to check it from the server's view and the app's:
    ``enforce(Middleware(enforce(app)))``.

    Args:
        app: The ASGI callable to check.
        strict: Raise ``ContractViolation`` for W rules too, instead of warning.
        answers_errors: *app* is designed to turn exceptions of the app it wraps into
            responses (an error-page middleware), so swallowing them is not reported.
        runs_app_in_task: *app* is a middleware that needs to run the app it wraps in
            another task (E3 is not reported for it).

    Returns:
        An ASGI callable that behaves like *app* and raises ``ContractViolation`` at the
        first broken rule.
    """
    return _Enforcer(app, strict, answers_errors, runs_app_in_task)


class _Enforcer:
    __slots__ = ("app", "inner", "options")

    def __init__(
        self, app: ASGIApp, strict: bool, answers_errors: bool, runs_app_in_task: bool
    ) -> None:
        self.app = app
        self.inner = _find_inner_enforcer(app)
        self.options = Options(strict, answers_errors, runs_app_in_task, self.inner is not None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        checker = new_checker(self.options, scope, receive, send)
        checker.check_scope()
        token = CURRENT.set(checker)
        try:
            await self.app(scope, checker.receive, checker.send)
        except BaseException as exc:
            await checker.on_raise(exc)
            raise
        else:
            await checker.on_return()
        finally:
            CURRENT.reset(token)
            checker.running = False


def _find_inner_enforcer(app: object) -> _Enforcer | None:
    """Follow the ``.app`` attributes middleware conventionally keep, to a nested checker."""
    for _ in range(16):
        app = getattr(app, "app", None)
        if app is None:
            return None
        if isinstance(app, _Enforcer):
            return app
    return None
