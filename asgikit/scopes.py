"""Copying a scope without losing what the framework writes into it.

Middleware copy the scope instead of changing the server's (contract rule S7), and
frameworks write routing facts into the scope object *they* receive: Starlette and
FastAPI set ``route`` (and ``endpoint``, ``path_params``), Litestar ``path_template``.
An outer middleware that wants the route (access logs, tracing) would never see it once
a copying middleware sits between it and the framework.

The fix is a chain: the outer middleware puts a list under ``scope[CHAIN_KEY]``; shallow
copies share that list, and every copy made with :func:`derive_scope` appends itself to
it. After the app returns, :func:`innermost_with` finds the scope the framework wrote
into. A copying middleware that does not use :func:`derive_scope` breaks the chain only
below itself: what is inside it goes unseen, nothing else changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from asgikit.types import Scope

__all__ = [
    "CHAIN_KEY",
    "DEADLINE_KEY",
    "DECISION_KEY",
    "PEER_KEY",
    "RATE_LIMIT_USAGE_KEY",
    "REQUEST_ID_KEY",
    "REQUEST_ID_REJECTED_KEY",
    "TIMEOUT_KEY",
    "derive_scope",
    "end_chain",
    "hand_down_decisions",
    "innermost",
    "innermost_with",
    "start_chain",
]

# Every scope key asgikit reads or writes, defined here once. Middleware compose through
# these keys, never by importing each other (docs/architecture.md lists who writes what).

CHAIN_KEY: Final = "asgikit.scope_chain"
"""The list of this request's scope copies, outermost first (see the module docstring).
Started by the outermost observing middleware (access log, tracing, inspector)."""

PEER_KEY: Final = "asgikit.peer"
"""The socket peer ``(host, port)`` before ProxyHeadersMiddleware rewrote ``client``;
present only when it did."""

REQUEST_ID_KEY: Final = "asgikit.request_id"
"""The request id (a str), set by RequestIDMiddleware."""

REQUEST_ID_REJECTED_KEY: Final = "asgikit.request_id.rejected"
"""An incoming request id that failed validation, truncated and escaped, for logging."""

DEADLINE_KEY: Final = "asgikit.deadline"
"""The absolute deadline of the response start on ``anyio.current_time()``'s clock (a
float), set by TimeoutMiddleware for the app to hand on to its own clients."""

DECISION_KEY: Final = "asgikit.decisions"
"""A dict that an answer asgikit makes itself fills in (``{"asgikit.decision": "shed",
...}``, through ``asgikit.answers.decide``); an outer middleware puts its own empty dict
there to read which layer answered and why."""

RATE_LIMIT_USAGE_KEY: Final = "asgikit.rate_limit.usage"
"""The ``Usage`` object RateLimitMiddleware hands the app on rules with ``usage``: the
app calls its ``charge(n)`` with what the request used (tokens, bytes) after the fact."""

TIMEOUT_KEY: Final = "asgikit.timeout"
"""A dict TimeoutMiddleware fills in when a limit fires (``{"error.type": "timeout",
...}``); an outer middleware puts its own empty dict there to read the outcome."""


def derive_scope(scope: Scope, changes: Mapping[str, Any]) -> Scope:
    """A copy of *scope* with *changes*, recorded in the request's scope chain if any.

    Args:
        scope: The scope this middleware received; not modified.
        changes: The keys to set in the copy.
    """
    derived = {**scope, **changes}
    chain = scope.get(CHAIN_KEY)
    if chain is not None:
        chain.append(derived)
    return derived


def start_chain(scope: Scope, changes: Mapping[str, Any] | None = None) -> Scope:
    """A copy of *scope* (with *changes*) that starts a scope chain, unless one exists."""
    if CHAIN_KEY in scope:
        return derive_scope(scope, changes) if changes else scope
    chain: list[Scope] = []
    derived = {**scope, **changes} if changes else {**scope}
    derived[CHAIN_KEY] = chain
    chain.append(derived)
    return derived


def end_chain(scope: Scope) -> None:
    """Empty the chain that *scope* (from :func:`start_chain`) holds.

    The chain and the scopes in it refer to each other: a reference cycle that only the
    garbage collector would break, once per request. The middleware that started the
    chain calls this after the app returned and it read what it needed.
    """
    chain = scope.get(CHAIN_KEY)
    if chain is not None:
        chain.clear()


def innermost_with(scope: Scope, keys: tuple[str, ...]) -> Scope:
    """The innermost scope of the chain that has one of *keys*, else *scope* itself."""
    chain: list[Scope] | None = scope.get(CHAIN_KEY)
    if chain:
        # Plain loops: this runs once per logged request.
        for candidate in reversed(chain):
            for key in keys:
                if key in candidate:
                    return candidate
    return scope


def innermost(scope: Scope) -> Scope:
    """The innermost copy of *scope* in its chain (what the layers inside set, so far),
    else *scope* itself."""
    chain: list[Scope] | None = scope.get(CHAIN_KEY)
    return chain[-1] if chain else scope


class HandedDown(NamedTuple):
    """What :func:`hand_down_decisions` returns."""

    scope: Scope
    """The scope to call the app with."""
    decisions: dict[str, Any]
    """The dict a layer inside that answers itself fills in."""
    started: bool
    """Whether the chain was started here: then the caller ends it (:func:`end_chain`)."""


def hand_down_decisions(scope: Scope) -> HandedDown:
    """A copy of *scope* in a scope chain (started here unless one exists), holding the
    dict a layer inside fills in when it answers itself (``asgikit.answers.decide``;
    TimeoutMiddleware's outcome too, under :data:`TIMEOUT_KEY`).

    Layers inside cannot reach a scope outside their own copy, so an outer observer
    hands its dict down; one already handed down by an observer outside is shared, not
    replaced. The chain records the copies made inside: the route the framework writes
    into its own scope is read from there after the app returns.
    """
    holder = scope.get(DECISION_KEY)
    if not isinstance(holder, dict):
        holder = scope.get(TIMEOUT_KEY)
    decisions: dict[str, Any] = holder if isinstance(holder, dict) else {}
    if CHAIN_KEY not in scope:
        scope = start_chain(scope)  # a copy of our own: one store is enough
        scope[TIMEOUT_KEY] = scope[DECISION_KEY] = decisions
        return HandedDown(scope, decisions, True)
    if scope.get(DECISION_KEY) is not decisions or scope.get(TIMEOUT_KEY) is not decisions:
        scope = derive_scope(scope, {TIMEOUT_KEY: decisions, DECISION_KEY: decisions})
    return HandedDown(scope, decisions, False)
