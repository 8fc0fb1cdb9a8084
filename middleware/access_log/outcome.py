"""The access log's helpers: the decisions dict handed down, a response's outcome, the
``extra_fields`` hook's checks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import Any

from asgikit.observe import Exchange
from asgikit.scopes import DECISION_KEY, TIMEOUT_KEY, derive_scope, start_chain
from asgikit.types import Scope

__all__ = ["fields_from", "handed_down", "http_outcome", "reset_tokens"]

_WARNING, _ERROR = 30, 40


def http_outcome(
    ex: Exchange, error: BaseException | None
) -> tuple[int | None, str | None, int | None]:
    """The status the client got, the error type, and the least level the outcome calls
    for whatever the status (None: the status decides)."""
    status = ex.client_status()
    if error is not None:
        if not isinstance(error, Exception):  # cancelled: shutdown, or an outer deadline
            return status, type(error).__qualname__, _WARNING
        return status, type(error).__qualname__, _ERROR
    if not ex.complete and not ex.disconnected:
        return (500 if status is None else status), "incomplete_response", _ERROR
    return status, None, None


def fields_from(function: Callable[[Scope, Any], Any]) -> Callable[[Scope, Any], dict[str, Any]]:
    """*function*, its result checked inside the hook: str keys in a mapping."""

    def fields(scope: Scope, exchange: Any) -> dict[str, Any]:
        result = function(scope, exchange)
        if not isinstance(result, Mapping):
            raise TypeError(f"extra_fields returned {type(result).__name__}, not a mapping")
        extra = dict(result)
        for key in extra:
            if not isinstance(key, str) or key == "event":
                raise TypeError(f"extra_fields returned the field name {key!r}")
        return extra

    return fields


def reset_tokens(tokens: list[tuple[ContextVar[Any], Token[Any]]] | None) -> None:
    if tokens is not None:
        for var, token in reversed(tokens):
            var.reset(token)


def handed_down(scope: Scope, started: bool) -> tuple[Scope, dict[str, Any]]:
    """A copy of *scope* holding the decisions dict, and the dict.

    The middleware inside fill it in when they answer themselves (a deadline, a 429, a
    shed request: ``asgikit.answers.decide``); they cannot reach a scope outside their
    own copy, so the dict is handed down, under both keys. The chain (started here
    unless *started* is False) records the copies made inside, so that the route the
    framework writes into its own scope can be read after the app returns.
    """
    holder = scope.get(DECISION_KEY)
    if not isinstance(holder, dict):
        holder = scope.get(TIMEOUT_KEY)
    timeout: dict[str, Any] = holder if isinstance(holder, dict) else {}
    if started:
        scope = start_chain(scope)  # a copy of our own: one store is enough
        scope[TIMEOUT_KEY] = scope[DECISION_KEY] = timeout
    elif scope.get(DECISION_KEY) is not timeout or scope.get(TIMEOUT_KEY) is not timeout:
        scope = derive_scope(scope, {TIMEOUT_KEY: timeout, DECISION_KEY: timeout})
    return scope, timeout
