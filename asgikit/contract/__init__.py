"""The ASGI contract checker: ``enforce(app)`` and ``ContractViolation``.

Theory of operation
===================

``enforce(app)`` wraps an ASGI callable and watches both sides of the boundary:

* the *server side*: the ``scope`` and the messages ``receive()`` returns (what a server,
  or the middleware outside, hands the app);
* the *app side*: the messages the app passes to ``send()``, and how it ends (returns,
  raises, swallows cancellation).

Each protocol (http, websocket, lifespan) is a small state machine written as data: the
``_HTTP_SEND``, ``_WS_SEND`` and ``_LIFESPAN_SEND`` tables map ``(state, message type)``
to the handler that validates the message and returns the next state. A pair missing
from a table is a violation; ``_*_OUT_OF_ORDER`` says which rule it breaks.

Nesting links the checkers. ``enforce(mw(enforce(app)))`` gives two checkers, and the
inner one finds the outer one's exchange through a context variable (the middleware calls
the app in the same task, or in a task that copied the context). With the link, the pair
can blame the layer between them, the middleware, for what neither boundary shows alone:
a ``pathsend`` the app sent that never reached the server, a response the app cut short
that the middleware "completed", a second response after the app's had started, an
exception or a cancellation swallowed, a ``lifespan`` scope that never reached the app,
the server's scope mutated in place. Violations found there name the side ``middleware``.

Rule ids are those of ``shared/CONTRACT.md``; ``RULES`` holds their summaries.
"""

from __future__ import annotations

import asyncio
import enum
import math
import os
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import anyio

from asgikit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "RULES",
    "ContractViolation",
    "ContractWarning",
    "Rule",
    "Side",
    "enforce",
]

Side = Literal["app", "server", "middleware"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One numbered rule of the contract."""

    id: str
    severity: Literal["E", "W"]
    summary: str


def _rules(*rows: tuple[str, Literal["E", "W"], str]) -> dict[str, Rule]:
    return {rid: Rule(rid, sev, text) for rid, sev, text in rows}


RULES: Mapping[str, Rule] = _rules(
    ("S1", "E", "scope is a dict with a str 'type'; every scope type reaches the inner app"),
    ("S2", "W", "asgi.version is '2.0' or '3.0'"),
    ("S3", "E", "http/websocket scope fields have their ASGI types"),
    ("S4", "E", "scope headers are (bytes, bytes) pairs without pseudo-headers"),
    ("S5", "E", "client is None or (str, int); server is None or (str, int | None)"),
    ("S6", "E", "scope['state'] is the server's own object; extensions is dict[str, dict]"),
    ("S7", "W", "a middleware that changes the scope copies it instead of mutating it"),
    ("M1", "E", "a message is a dict with a str 'type' and ASGI-typed values"),
    ("M2", "E", "optional message keys are optional and of their ASGI types"),
    ("M3", "E", "keys a middleware does not know are kept when it rewrites a message"),
    ("M4", "E", "message types a middleware does not handle are forwarded unchanged, in order"),
    ("M5", "E", "nobody mutates the app's message dict or header list in place"),
    ("H1", "E", "http.request carries bytes; after the last chunk only http.disconnect"),
    ("H2", "E", "exactly one http.response.start (status 100-599), before any body"),
    ("H3", "E", "the response ends once, completely; nothing is sent after the end"),
    ("H4", "E", "a response the app cut short is never completed by a middleware"),
    ("H5", "W", "content-length equals the body bytes sent"),
    ("H6", "E", "a middleware answers on its own only before any start reached the server"),
    ("H7", "E", "a failed send after disconnect never becomes a second response"),
    ("H8", "E", "a middleware that reads the body replays it, then forwards http.disconnect"),
    ("X1", "E", "an extension message is sent only if the scope advertises the extension"),
    ("X2", "E", "http.response.pathsend completes the response, is not mixed with body"),
    ("X3", "E", "extension messages are forwarded untouched and in order"),
    ("W1", "E", "websocket: connect first; accept, close or denial before any data"),
    ("W2", "E", "websocket.accept once, with a valid subprotocol and headers"),
    ("W3", "E", "websocket.send/receive carry exactly one of bytes and text"),
    ("W4", "E", "nothing sent after websocket.close; no receive() after a disconnect"),
    ("L1", "E", "lifespan: one answer per event, in order, never translated"),
    ("E1", "E", "exceptions from the app propagate unchanged"),
    ("E2", "E", "cancellation is never swallowed"),
    ("E3", "E", "the app runs in the caller's task"),
)


class ContractViolation(AssertionError):
    """An ASGI contract rule was broken.

    Attributes:
        rule: The rule id (``"H2"``), a key of ``RULES``.
        side: Who broke it: ``"app"`` (what the wrapped app sent or did), ``"server"``
            (what the caller handed the app) or ``"middleware"`` (the layer between two
            nested checkers).
        detail: What happened, in words.
        message: The offending ASGI message or scope, when there is one.
    """

    def __init__(
        self, rule: str, side: Side, detail: str, message: Mapping[str, Any] | None = None
    ) -> None:
        self.rule = rule
        self.side = side
        self.detail = detail
        self.message = message
        text = f"[{rule}] {side} side: {detail} (rule: {RULES[rule].summary})"
        if message is not None:
            text += f"\n    offending: {_abbreviate(message)}"
        super().__init__(text)


class ContractWarning(UserWarning):
    """A W rule was broken (``enforce(app, strict=True)`` raises instead)."""

    def __init__(self, violation: ContractViolation) -> None:
        self.violation = violation
        super().__init__(str(violation))


def _abbreviate(message: Mapping[str, Any], limit: int = 300) -> str:
    text = repr(dict(message))
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


# --------------------------------------------------------------------------------------
# The checker


_CURRENT: ContextVar[_Exchange | None] = ContextVar("asgikit_contract_exchange", default=None)

_KNOWN_SCOPE_TYPES = frozenset({"http", "websocket", "lifespan"})

# Message types the protocol state machines understand; any other type a middleware must
# forward unchanged and in order (M4, and X3 for the extensions among them).
_CORE_SEND_TYPES = frozenset(
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
_EXTENSION_OF = {
    "http.response.pathsend": "http.response.pathsend",
    "http.response.zerocopysend": "http.response.zerocopysend",
    "http.response.push": "http.response.push",
    "http.response.trailers": "http.response.trailers",
    "http.response.early_hint": "http.response.early_hint",
    "http.response.debug": "http.response.debug",
    "websocket.http.response.start": "websocket.http.response",
    "websocket.http.response.body": "websocket.http.response",
}

_INT64 = (-(2**63), 2**63 - 1)


class _Enforcer:
    __slots__ = ("answers_errors", "app", "inner", "runs_app_in_task", "strict")

    def __init__(
        self, app: ASGIApp, strict: bool, answers_errors: bool, runs_app_in_task: bool
    ) -> None:
        self.app = app
        self.strict = strict
        self.answers_errors = answers_errors
        self.runs_app_in_task = runs_app_in_task
        self.inner = _find_inner_enforcer(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = _Exchange(self, scope, receive, send, _CURRENT.get())
        exchange.check_scope()
        token = _CURRENT.set(exchange)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except BaseException as exc:
            await exchange.on_raise(exc)
            raise
        else:
            await exchange.on_return()
        finally:
            _CURRENT.reset(token)
            exchange.running = False


def _find_inner_enforcer(app: object) -> _Enforcer | None:
    """Follow the ``.app`` attributes middleware conventionally keep, to a nested checker."""
    for _ in range(16):
        app = getattr(app, "app", None)
        if app is None:
            return None
        if isinstance(app, _Enforcer):
            return app
    return None


class _H(enum.Enum):
    START = "before http.response.start"
    BODY = "sending the body"
    TRAILERS = "sending trailers"
    DONE = "response complete"


class _WS(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "accepted"
    DENIAL = "sending a denial response"
    CLOSED = "closed"


class _L(enum.Enum):
    IDLE = "waiting for lifespan.startup"
    STARTING = "starting up"
    STARTED = "started"
    STOPPING = "shutting down"
    DONE = "finished"


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


class _Exchange:
    """One call of a checked app: its scope, its state machine, what crossed it."""

    running: bool

    def __init__(
        self,
        enforcer: _Enforcer,
        scope: Scope,
        receive: Receive,
        send: Send,
        parent: _Exchange | None,
    ) -> None:
        self.enforcer = enforcer
        self.scope = scope
        self._receive_from_caller = receive
        self._send_to_caller = send
        scope_type = scope.get("type") if isinstance(scope, Mapping) else None
        self.type = scope_type if isinstance(scope_type, str) else ""
        if parent is not None and not (parent.running and parent.type == self.type):
            parent = None
        self.parent = parent
        self.children: list[_Exchange] = []
        if parent is not None:
            parent.children.append(self)
        self.running = True
        self.scope_before = _freeze_scope(scope) if isinstance(scope, Mapping) else {}
        self.extensions: Mapping[str, Any] = {}
        self.task = _current_task()
        self.cancelling_at_entry = _cancelling()
        self.cancel_seen = False
        self.violation: ContractViolation | None = None
        # app side
        self.http = _H.START
        self.ws = _WS.HANDSHAKE
        self.life = _L.IDLE
        self.trailers_expected = False
        self.body_sent = False
        self.body_bytes = 0
        self.completed_by = ""
        self.content_length: int | None = None
        self.status = 0
        self.raised: BaseException | None = None
        self.sent_failed_message = False
        self.sent_messages: list[tuple[Message, Any]] = []
        self.passthrough: deque[tuple[str, Any]] = deque()
        self.rewritable: dict[str, Message] = {}
        # server side
        self.body_done = False
        self.disconnected = False
        self.send_failed = False
        self.ws_connected = False
        self.ws_disconnect_received = False
        self.startup_answered = False

    # ---- reporting -------------------------------------------------------------------

    def side_for(self, side: Side) -> Side:
        if side == "server" and self.parent is not None:
            return "middleware"
        if side == "app" and self.children:
            return "middleware"
        return side

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

        ``warning`` marks the W part of an E rule (CONTRACT.md's "W:" clauses).
        """
        violation = ContractViolation(rule, self.side_for(side), detail, message)
        strict = self.enforcer.strict or (self.parent is not None and self.parent.enforcer.strict)
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

    # ---- scope (server side) ---------------------------------------------------------

    def check_scope(self) -> None:
        scope = self.scope
        if not isinstance(scope, Mapping) or not isinstance(scope.get("type"), str):
            self.fail_now("S1", "server", "scope is not a dict with a str 'type'", None)
        asgi = scope.get("asgi")
        if asgi is not None:
            version = asgi.get("version", "2.0") if isinstance(asgi, Mapping) else None
            if version not in ("2.0", "3.0"):
                self.fail("S2", "server", f"asgi.version is {version!r}", _scope_view(scope))
        if self.type in ("http", "websocket"):
            self._check_connection_scope(scope)
        if "state" in scope and self.parent is not None and "state" in self.parent.scope:
            if scope["state"] is not self.parent.scope["state"]:
                self.fail(
                    "S6",
                    "server",
                    "scope['state'] was replaced: writes at lifespan start-up are lost",
                    _scope_view(scope),
                )
        elif self.parent is not None and "state" in self.parent.scope:
            self.fail("S6", "server", "scope['state'] was dropped", _scope_view(scope))
        extensions = scope.get("extensions")
        if extensions is not None:
            if not isinstance(extensions, Mapping) or not all(
                isinstance(k, str) and isinstance(v, Mapping) for k, v in extensions.items()
            ):
                self.fail("S6", "server", "extensions is not dict[str, dict]", _scope_view(scope))
            self.extensions = extensions
        if self.parent is not None:
            self._check_parent_scope_untouched()
            if (
                self.task is not self.parent.task
                and not self.parent.enforcer.runs_app_in_task
                and self.type != "lifespan"
            ):
                self.fail(
                    "E3",
                    "server",
                    "the app was called in another task: contextvars it sets are lost",
                )

    def _check_connection_scope(self, scope: Mapping[str, Any]) -> None:
        view = _scope_view(scope)
        if self.type == "http":
            method = scope.get("method")
            if not isinstance(method, str) or not method or method != method.upper():
                self.fail("S3", "server", f"method {method!r} is not an uppercase str", view)
        for key, kinds, optional in (
            ("path", (str,), False),
            ("query_string", (bytes,), False),
            ("raw_path", (bytes, type(None)), True),
            ("root_path", (str,), True),
            ("scheme", (str,), True),
            ("http_version", (str,), True),
        ):
            if key not in scope:
                if not optional:
                    self.fail("S3", "server", f"scope has no {key!r}", view)
                continue
            if not isinstance(scope[key], kinds):
                self.fail("S3", "server", f"scope[{key!r}] is {type(scope[key]).__name__}", view)
        if "scheme" in scope and not scope["scheme"]:
            self.fail("S3", "server", "scope['scheme'] is empty", view)
        problem = _header_list_problem(scope.get("headers", ()), lowercase=False)
        if problem:
            self.fail("S4", "server", f"scope headers: {problem}", view)
        if any(name[:1] == b":" for name, _ in scope.get("headers", ())):
            self.fail("S4", "server", "scope headers contain a pseudo-header", view)
        if any(name != name.lower() for name, _ in scope.get("headers", ())):
            self.fail("S4", "server", "scope header names are not lowercase", view, warning=True)
        client = scope.get("client")
        if client is not None and not _is_address(client, port_optional=False):
            self.fail("S5", "server", f"client {client!r} is not (str, int)", view)
        server = scope.get("server")
        if server is not None and not _is_address(server, port_optional=True):
            self.fail("S5", "server", f"server {server!r} is not (str, int | None)", view)
        if self.type == "websocket":
            subprotocols = scope.get("subprotocols", [])
            if not isinstance(subprotocols, list | tuple) or not all(
                isinstance(p, str) for p in subprotocols
            ):
                self.fail("S3", "server", "subprotocols is not a list of str", view)

    def _check_parent_scope_untouched(self) -> None:
        parent = self.parent
        assert parent is not None
        now = _freeze_scope(parent.scope)
        if now != parent.scope_before:
            changed = sorted(
                key
                for key in set(now) | set(parent.scope_before)
                if now.get(key, _MISSING) != parent.scope_before.get(key, _MISSING)
            )
            self.fail(
                "S7",
                "server",
                f"the server's scope was changed in place (keys {', '.join(changed)}); "
                "pass a copy ({**scope, ...}) instead",
            )

    # ---- receive (server side) -------------------------------------------------------

    async def receive(self) -> Message:
        self._before_receive()
        try:
            message = await self._receive_from_caller()
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                self.cancel_seen = True
            raise
        self._check_message_shape(message, "server")
        self._after_receive(message)
        return message

    async def send(self, message: Message) -> None:
        self._check_message_shape(message, "app")
        self._before_send(message)
        frozen = _freeze(message)
        try:
            await self._send_to_caller(message)
        except OSError:
            self.send_failed = True
            raise
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                self.cancel_seen = True
            raise
        if _freeze(message) != frozen:
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
            if _freeze(kept) != frozen:
                self.fail(
                    "M5",
                    "server",
                    f"the {kept.get('type')!r} message the app sent earlier was changed in "
                    "place; build a new dict and header list instead",
                    kept,
                )

    def _before_receive(self) -> None:
        if self.type == "websocket":
            if self.ws_disconnect_received:
                self.fail_now("W4", "app", "receive() was called after websocket.disconnect")
            if self.ws_connected and self.ws is _WS.HANDSHAKE:
                self.fail_now(
                    "W1",
                    "app",
                    "receive() was called before the app answered websocket.connect "
                    "(accept, close or a denial response)",
                )

    def _after_receive(self, message: Message) -> None:
        kind = message["type"]
        if self.type == "http":
            self._after_http_receive(message, kind)
        elif self.type == "websocket":
            self._after_ws_receive(message, kind)
        elif self.type == "lifespan":
            self._after_lifespan_receive(message, kind)

    def _after_http_receive(self, message: Message, kind: str) -> None:
        rule = "H8" if self.parent is not None else "H1"
        if kind == "http.disconnect":
            self.disconnected = True
            return
        if kind != "http.request":
            self.fail_now(rule, "server", f"receive() returned {kind!r} in an http scope", message)
        if self.body_done or self.disconnected:
            what = "after the last body chunk" if self.body_done else "after http.disconnect"
            self.fail_now(
                rule, "server", f"receive() returned http.request {what}; expected disconnect"
            )
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if not isinstance(body, bytes | bytearray):
            self.fail_now(rule, "server", "http.request body is not bytes", message)
        if not isinstance(more, bool):
            self.fail_now(rule, "server", "http.request more_body is not a bool", message)
        if not more:
            self.body_done = True

    def _after_ws_receive(self, message: Message, kind: str) -> None:
        if not self.ws_connected:
            if kind != "websocket.connect":
                self.fail_now(
                    "W1", "server", f"the first receive() returned {kind!r}, not connect", message
                )
            self.ws_connected = True
            return
        if kind == "websocket.receive":
            _check_one_of_bytes_text(self, message, "server")
        elif kind == "websocket.disconnect":
            self.ws_disconnect_received = True
            code = message.get("code", 1005)
            if not isinstance(code, int) or isinstance(code, bool):
                self.fail_now("M2", "server", "websocket.disconnect code is not an int", message)
        else:
            self.fail_now("W1", "server", f"receive() returned {kind!r} after connect", message)

    def _after_lifespan_receive(self, message: Message, kind: str) -> None:
        if kind == "lifespan.startup":
            if self.life is not _L.IDLE:
                self.fail_now("L1", "server", "lifespan.startup received twice", message)
            self.life = _L.STARTING
        elif kind == "lifespan.shutdown":
            if self.life is _L.STARTING:
                self.fail_now(
                    "L1", "server", "lifespan.shutdown arrived before start-up was answered"
                )
            if self.life is _L.IDLE:
                self.fail_now("L1", "server", "lifespan.shutdown arrived before startup")
            if self.life is _L.STOPPING or self.life is _L.DONE:
                self.fail_now("L1", "server", "lifespan.shutdown received twice", message)
            self.life = _L.STOPPING
        else:
            self.fail_now("L1", "server", f"receive() returned {kind!r} in lifespan", message)

    # ---- send (app side) -------------------------------------------------------------

    def _check_message_shape(self, message: Any, side: Literal["app", "server"]) -> None:
        if not isinstance(message, Mapping) or not isinstance(message.get("type"), str):
            self.fail_now("M1", side, "message is not a dict with a str 'type'", None)
        skip = "file" if message["type"] == "http.response.zerocopysend" else None
        problem = _value_problem(message, skip)
        if problem:
            self.fail_now("M1", side, problem, message)

    def _before_send(self, message: Message) -> None:
        kind: str = message["type"]
        extension = _EXTENSION_OF.get(kind)
        if extension is not None and extension not in self.extensions:
            self.fail_now(
                "X1",
                "app",
                f"{kind!r} sent but the scope does not advertise the {extension!r} extension",
                message,
            )
        if self.parent is not None and kind not in _CORE_SEND_TYPES:
            self.passthrough.append((kind, _freeze(message)))
        if self.children and kind not in _CORE_SEND_TYPES:
            self._match_passthrough(message)
        if kind in _STANDARD_KEYS:
            if self.parent is not None:
                self.rewritable[kind] = message
            if self.children:
                self._check_unknown_keys_kept(message, kind)
        if self.type == "http":
            self._send_http(message, kind)
        elif self.type == "websocket":
            self._send_ws(message, kind)
        elif self.type == "lifespan":
            self._send_lifespan(message, kind)

    def _check_unknown_keys_kept(self, message: Message, kind: str) -> None:
        original = self.children[-1].rewritable.get(kind)
        if original is None:
            return  # the middleware sent it on its own
        lost = sorted(set(original) - _STANDARD_KEYS[kind] - set(message))
        if lost:
            self.fail_now(
                "M3",
                "app",
                f"the app's {kind!r} carried {', '.join(map(repr, lost))}, lost when the "
                "middleware rewrote it; copy the message ({**message, ...})",
                message,
            )

    def _match_passthrough(self, message: Message) -> None:
        kind = message["type"]
        pending = self.children[-1].passthrough
        if not pending:
            return  # the middleware sent it on its own
        head_kind, head = pending[0]
        rule = _passthrough_rule(kind)
        if head_kind == kind:
            pending.popleft()
            if head != _freeze(message):
                self.fail_now(rule, "app", f"{kind!r} was changed on its way through", message)
            return
        if any(k == kind for k, _ in pending):
            self.fail_now(
                rule,
                "app",
                f"{kind!r} arrived while the app's earlier {head_kind!r} was dropped or held "
                "back: messages must be forwarded in order",
                message,
            )

    def _send_http(self, message: Message, kind: str) -> None:
        handler = _HTTP_SEND.get((self.http, kind))
        if handler is not None:
            self.http = handler(self, message)
            return
        if kind not in _HTTP_TYPES:
            if self.http is _H.DONE:
                self.fail_now("H3", "app", f"{kind!r} sent after the response ended", message)
            return  # unknown types pass through
        if kind == "http.response.start" and self.http is not _H.START:
            if self.children:
                self.fail_now(
                    "H6",
                    "app",
                    "a second http.response.start: the middleware answered on its own after "
                    "the app's response had reached the server",
                    message,
                )
            self.fail_now("H2", "app", "a second http.response.start", message)
        if self.http is _H.START:
            self.fail_now("H2", "app", f"{kind!r} sent before http.response.start", message)
        if self.http is _H.DONE and self.completed_by == "http.response.pathsend":
            self.fail_now("X2", "app", f"{kind!r} sent after http.response.pathsend", message)
        if self.http is _H.DONE:
            self.fail_now("H3", "app", f"{kind!r} sent after the response ended", message)
        if self.http is _H.TRAILERS:
            self.fail_now("H3", "app", f"{kind!r} sent while trailers were expected", message)
        # BODY state, a known type with no entry: trailers or early hints out of place
        if kind == "http.response.trailers":
            self.fail_now(
                "H3",
                "app",
                "http.response.trailers sent before the body ended"
                if self.trailers_expected
                else "http.response.trailers sent but the start did not announce trailers",
                message,
            )
        self.fail_now("H2", "app", f"{kind!r} sent after http.response.start", message)

    def _on_start(self, message: Message) -> _H:
        status = message.get("status")
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            self.fail_now("H2", "app", f"status {status!r} is not an int in 100-599", message)
        problem = _header_list_problem(message.get("headers", ()), lowercase=True)
        if problem:
            self.fail_now("H2", "app", f"response headers: {problem}", message)
        trailers = message.get("trailers", False)
        if not isinstance(trailers, bool):
            self.fail_now("M2", "app", "http.response.start trailers is not a bool", message)
        if trailers and "http.response.trailers" not in self.extensions:
            self.fail_now(
                "X1",
                "app",
                "trailers=True but the scope does not advertise 'http.response.trailers'",
                message,
            )
        self.status = status
        self.trailers_expected = trailers
        self.content_length = _content_length(message.get("headers", ()), self, message)
        return _H.BODY

    def _on_body(self, message: Message) -> _H:
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if not isinstance(body, bytes | bytearray | memoryview):
            self.fail_now("M2", "app", "http.response.body body is not bytes", message)
        if not isinstance(more, bool):
            self.fail_now("M2", "app", "http.response.body more_body is not a bool", message)
        if not more:
            self._check_final_allowed(message)
        self.body_sent = True
        self.body_bytes += len(body)
        return _H.BODY if more else self._complete(message)

    def _on_pathsend(self, message: Message) -> _H:
        path = message.get("path")
        if not isinstance(path, str) or not os.path.isabs(path):
            self.fail_now("X2", "app", f"pathsend path {path!r} is not an absolute str", message)
        if self.body_sent:
            self.fail_now("X2", "app", "http.response.pathsend mixed with body", message)
        self._check_final_allowed(message)
        return self._complete(message)

    def _on_zerocopysend(self, message: Message) -> _H:
        if not hasattr(message.get("file"), "fileno"):
            self.fail_now("M2", "app", "zerocopysend 'file' is not a file object", message)
        for key in ("offset", "count"):
            value = message.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                self.fail_now("M2", "app", f"zerocopysend {key!r} is not an int", message)
        more = message.get("more_body", False)
        if not isinstance(more, bool):
            self.fail_now("M2", "app", "zerocopysend more_body is not a bool", message)
        self.body_sent = True
        if more:
            return _H.BODY
        self._check_final_allowed(message)
        return self._complete(message)

    def _on_push(self, message: Message) -> _H:
        if not isinstance(message.get("path"), str):
            self.fail_now("M2", "app", "http.response.push path is not a str", message)
        problem = _header_list_problem(message.get("headers", ()), lowercase=True)
        if problem:
            self.fail_now("M2", "app", f"push headers: {problem}", message)
        return self.http

    def _on_early_hint(self, message: Message) -> _H:
        links = message.get("links")
        if not isinstance(links, list | tuple) or not all(isinstance(x, bytes) for x in links):
            self.fail_now("M2", "app", "early_hint links is not a list of bytes", message)
        return self.http

    def _on_debug(self, message: Message) -> _H:
        return self.http

    def _on_trailers(self, message: Message) -> _H:
        problem = _header_list_problem(message.get("headers", ()), lowercase=True)
        if problem:
            self.fail_now("M2", "app", f"trailer headers: {problem}", message)
        more = message.get("more_trailers", False)
        if not isinstance(more, bool):
            self.fail_now("M2", "app", "more_trailers is not a bool", message)
        return _H.TRAILERS if more else _H.DONE

    def _complete(self, message: Message) -> _H:
        self.completed_by = message["type"]
        if self.content_length is not None and self.completed_by == "http.response.body":
            method = self.scope.get("method")
            if (
                self.content_length != self.body_bytes
                and method != "HEAD"
                and self.status not in (204, 304)
            ):
                self.fail(
                    "H5",
                    "app",
                    f"content-length is {self.content_length} but {self.body_bytes} body "
                    "bytes were sent",
                    message,
                )
        return _H.TRAILERS if self.trailers_expected else _H.DONE

    def _check_final_allowed(self, message: Message) -> None:
        for child in self.children:
            if child.cut_short():
                self.fail_now(
                    "H4",
                    "app",
                    "the app's response was cut short (it failed after starting), but the "
                    "middleware completed it, so a truncated body looks whole",
                    message,
                )

    def cut_short(self) -> bool:
        return (
            self.type == "http"
            and not self.running
            and self.http in (_H.BODY, _H.TRAILERS)
            and (self.raised is not None or not self.disconnected)
        )

    def _send_ws(self, message: Message, kind: str) -> None:
        handler = _WS_SEND.get((self.ws, kind))
        if handler is not None:
            self.ws = handler(self, message)
            return
        if not kind.startswith("websocket."):
            if self.ws is _WS.CLOSED:
                self.fail_now("W4", "app", f"{kind!r} sent after websocket.close", message)
            return
        rule, why = _WS_OUT_OF_ORDER[self.ws]
        if self.ws is _WS.OPEN and kind == "websocket.accept":
            rule, why = "W2", "accepted twice"
        self.fail_now(rule, "app", f"{kind!r} sent while {self.ws.value}: {why}", message)

    def _on_accept(self, message: Message) -> _WS:
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and not isinstance(subprotocol, str):
            self.fail_now("W2", "app", "accept subprotocol is not a str or None", message)
        headers = message.get("headers", ())
        problem = _header_list_problem(headers, lowercase=True)
        if problem:
            self.fail_now("W2", "app", f"accept headers: {problem}", message)
        if any(name == b"sec-websocket-protocol" for name, _ in headers):
            self.fail_now(
                "W2",
                "app",
                "accept headers carry sec-websocket-protocol; use 'subprotocol' instead",
                message,
            )
        offered = self.scope.get("subprotocols", [])
        if subprotocol is not None and subprotocol not in offered:
            self.fail(
                "W2",
                "app",
                f"subprotocol {subprotocol!r} was not offered by the client ({offered!r})",
                message,
                warning=True,
            )
        return _WS.OPEN

    def _on_ws_send(self, message: Message) -> _WS:
        _check_one_of_bytes_text(self, message, "app")
        return _WS.OPEN

    def _on_ws_close(self, message: Message) -> _WS:
        code = message.get("code", 1000)
        if not isinstance(code, int) or isinstance(code, bool):
            self.fail_now("M2", "app", "websocket.close code is not an int", message)
        reason = message.get("reason")
        if reason is not None and not isinstance(reason, str):
            self.fail_now("M2", "app", "websocket.close reason is not a str", message)
        return _WS.CLOSED

    def _on_denial_start(self, message: Message) -> _WS:
        status = message.get("status")
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            self.fail_now("W1", "app", f"denial status {status!r} is not in 100-599", message)
        problem = _header_list_problem(message.get("headers", ()), lowercase=True)
        if problem:
            self.fail_now("W1", "app", f"denial headers: {problem}", message)
        return _WS.DENIAL

    def _on_denial_body(self, message: Message) -> _WS:
        if not isinstance(message.get("body", b""), bytes):
            self.fail_now("M2", "app", "denial body is not bytes", message)
        more = message.get("more_body", False)
        if not isinstance(more, bool):
            self.fail_now("M2", "app", "denial more_body is not a bool", message)
        return _WS.DENIAL if more else _WS.CLOSED

    def _send_lifespan(self, message: Message, kind: str) -> None:
        handler = _LIFESPAN_SEND.get((self.life, kind))
        if handler is None:
            if not kind.startswith("lifespan."):
                return
            self.fail_now("L1", "app", f"{kind!r} sent while {self.life.value}", message)
        if kind.endswith(".failed"):
            if not isinstance(message.get("message", ""), str):
                self.fail_now("M2", "app", f"{kind} message is not a str", message)
            if any(child.raised is not None for child in self.children):
                self.fail_now(
                    "L1",
                    "app",
                    "the middleware turned the app's exception into " + kind,
                    message,
                )
            self.sent_failed_message = True
        self.life = handler(self, message)

    def _on_startup_answer(self, message: Message) -> _L:
        return _L.DONE if message["type"].endswith(".failed") else _L.STARTED

    def _on_shutdown_answer(self, message: Message) -> _L:
        return _L.DONE

    # ---- how the app ends ------------------------------------------------------------

    async def on_return(self) -> None:
        if self.violation is not None:
            raise self.violation  # the app swallowed a violation raised inside it
        self._check_kept_messages()
        cancelled = anyio.get_cancelled_exc_class()
        seen = self.cancel_seen or any(isinstance(c.raised, cancelled) for c in self.children)
        if seen and await _still_cancelled(self.cancelling_at_entry):
            self.fail_now("E2", "app", "a cancellation was swallowed: the app returned normally")
        self._check_children_after_return()
        if self.type == "http":
            gone = self.disconnected or self.send_failed
            if self.http is _H.START and not gone:
                self.fail_now("H2", "app", "the app returned without starting a response")
            if self.http in (_H.BODY, _H.TRAILERS) and not gone:
                self.fail_now(
                    "H3",
                    "app",
                    f"the app returned without completing the response ({self.http.value})",
                )

    def _check_children_after_return(self) -> None:
        inner = self.enforcer.inner
        if inner is not None and not self.children and self.type not in ("http", "websocket"):
            self.fail_now(
                "S1",
                "middleware",
                f"the {self.type!r} scope never reached the wrapped app: pass it through",
            )
        for child in self.children:
            for kind, _ in child.passthrough:
                self.fail_now(
                    _passthrough_rule(kind),
                    "app",
                    f"the app sent {kind!r} but it never reached the server",
                )
            if child.raised is None:
                continue
            if isinstance(child.raised, ContractViolation):
                raise child.raised  # the middleware swallowed it; it still counts
            if child.send_failed and isinstance(child.raised, OSError):
                continue  # ending quietly after the client went away is allowed (H7)
            if isinstance(child.raised, anyio.get_cancelled_exc_class()):
                continue  # E2 is judged by whether this task is still being cancelled
            if not self.enforcer.answers_errors:
                self.fail_now(
                    "E1",
                    "app",
                    f"the app raised {type(child.raised).__name__}: {child.raised} — "
                    "but it was swallowed",
                )

    async def on_raise(self, exc: BaseException) -> None:
        self.raised = exc
        if isinstance(exc, ContractViolation):
            return
        found = _find_violation(exc)
        if found is not None:
            raise found from exc  # surfaced from the task group that wrapped it
        if self.violation is not None:
            raise self.violation from exc
        if self.type == "lifespan" and any(c.sent_failed_message for c in self.children):
            self.fail_now(
                "L1", "app", "the middleware turned the app's failed message into an error"
            )
        cancelled = anyio.get_cancelled_exc_class()
        if isinstance(exc, cancelled):
            self.cancel_seen = True
        for child in self.children:
            raised = child.raised
            if raised is None or raised is exc or isinstance(raised, ContractViolation):
                continue
            if isinstance(raised, cancelled):
                if not isinstance(exc, cancelled) and await _still_cancelled(
                    self.cancelling_at_entry
                ):
                    self.fail_now(
                        "E2",
                        "app",
                        f"the app was cancelled, but {type(exc).__name__} came out instead",
                    )
                continue
            if child.send_failed and isinstance(raised, OSError):
                continue
            if not self.enforcer.answers_errors:
                self.fail_now(
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


def _passthrough_rule(kind: str) -> str:
    if kind == "http.response.pathsend":
        return "X2"
    if kind in _EXTENSION_OF:
        return "X3"
    return "M4"


def _check_one_of_bytes_text(
    exchange: _Exchange, message: Message, side: Literal["app", "server"]
) -> None:
    data, text = message.get("bytes"), message.get("text")
    if (data is None) == (text is None):
        exchange.fail_now("W3", side, "carries neither or both of bytes and text", message)
    if data is not None and not isinstance(data, bytes):
        exchange.fail_now("W3", side, "bytes is not bytes", message)
    if text is not None and not isinstance(text, str):
        exchange.fail_now("W3", side, "text is not a str", message)


# The keys the spec defines for the messages a middleware commonly rewrites (M3).
_STANDARD_KEYS: dict[str, frozenset[str]] = {
    "http.response.start": frozenset({"type", "status", "headers", "trailers"}),
    "websocket.accept": frozenset({"type", "subprotocol", "headers"}),
    "websocket.http.response.start": frozenset({"type", "status", "headers"}),
}

_HTTP_TYPES = frozenset(
    {
        "http.response.start",
        "http.response.body",
        "http.response.pathsend",
        "http.response.zerocopysend",
        "http.response.push",
        "http.response.trailers",
        "http.response.early_hint",
        "http.response.debug",
    }
)

_Handler = Callable[[_Exchange, Message], Any]

# (state, message type) -> handler returning the next state. A known type absent here is
# out of order; _send_http names the rule it breaks.
_HTTP_SEND: dict[tuple[_H, str], _Handler] = {
    (_H.START, "http.response.start"): _Exchange._on_start,
    (_H.START, "http.response.early_hint"): _Exchange._on_early_hint,
    (_H.START, "http.response.debug"): _Exchange._on_debug,
    (_H.BODY, "http.response.body"): _Exchange._on_body,
    (_H.BODY, "http.response.pathsend"): _Exchange._on_pathsend,
    (_H.BODY, "http.response.zerocopysend"): _Exchange._on_zerocopysend,
    (_H.BODY, "http.response.push"): _Exchange._on_push,
    (_H.BODY, "http.response.debug"): _Exchange._on_debug,
    (_H.TRAILERS, "http.response.trailers"): _Exchange._on_trailers,
}

_WS_SEND: dict[tuple[_WS, str], _Handler] = {
    (_WS.HANDSHAKE, "websocket.accept"): _Exchange._on_accept,
    (_WS.HANDSHAKE, "websocket.close"): _Exchange._on_ws_close,
    (_WS.HANDSHAKE, "websocket.http.response.start"): _Exchange._on_denial_start,
    (_WS.OPEN, "websocket.send"): _Exchange._on_ws_send,
    (_WS.OPEN, "websocket.close"): _Exchange._on_ws_close,
    (_WS.DENIAL, "websocket.http.response.body"): _Exchange._on_denial_body,
}

_WS_OUT_OF_ORDER: dict[_WS, tuple[str, str]] = {
    _WS.HANDSHAKE: ("W1", "answer the handshake (accept, close or denial) first"),
    _WS.OPEN: ("W1", "a denial response is only possible before accept"),
    _WS.DENIAL: ("W1", "only websocket.http.response.body may follow a denial start"),
    _WS.CLOSED: ("W4", "nothing may be sent after websocket.close"),
}

_LIFESPAN_SEND: dict[tuple[_L, str], _Handler] = {
    (_L.STARTING, "lifespan.startup.complete"): _Exchange._on_startup_answer,
    (_L.STARTING, "lifespan.startup.failed"): _Exchange._on_startup_answer,
    (_L.STOPPING, "lifespan.shutdown.complete"): _Exchange._on_shutdown_answer,
    (_L.STOPPING, "lifespan.shutdown.failed"): _Exchange._on_shutdown_answer,
}


# --------------------------------------------------------------------------------------
# Value helpers


class _Missing:
    __slots__ = ()


_MISSING = _Missing()


def _freeze(value: Any, depth: int = 0) -> Any:
    """A deep, comparable copy of a message or scope (lists become tuples)."""
    if depth > 8:
        return value
    if isinstance(value, Mapping):
        return tuple((k, _freeze(v, depth + 1)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return tuple(_freeze(v, depth + 1) for v in value)
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def _freeze_scope(scope: Mapping[str, Any]) -> dict[str, Any]:
    # state is shared by design (writes at start-up are meant to be seen), so its
    # contents are not the middleware's to keep; only its identity is (S6).
    return {k: id(v) if k == "state" else _freeze(v) for k, v in scope.items()}


def _value_problem(message: Mapping[Any, Any], skip: str | None) -> str | None:
    for key, value in message.items():
        if not isinstance(key, str):
            return f"key {key!r} is not a str"
        if key == skip:
            continue
        problem = _bad_value(value, 0)
        if problem:
            return f"{key!r}: {problem}"
    return None


def _bad_value(value: Any, depth: int) -> str | None:
    if value is None or isinstance(value, bool | bytes | str):
        return None
    if isinstance(value, int):
        return None if _INT64[0] <= value <= _INT64[1] else f"{value} is not a signed 64-bit int"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite float"
    if depth > 16:
        return "nested too deeply"
    if isinstance(value, list | tuple):
        for item in value:
            problem = _bad_value(item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, Mapping):
        for item in value.values():
            problem = _bad_value(item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, bytearray | memoryview):
        return None
    return f"{type(value).__name__} is not an ASGI value type"


def _header_list_problem(headers: Any, *, lowercase: bool) -> str | None:
    if isinstance(headers, str | bytes) or not isinstance(headers, Iterable):
        return "not an iterable of (name, value) pairs"
    for pair in headers:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            return f"{pair!r} is not a (name, value) pair"
        name, value = pair
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            return f"{pair!r} is not a pair of bytes"
        if lowercase and name != name.lower():
            return f"header name {name!r} is not lowercase"
    return None


def _is_address(value: Any, *, port_optional: bool) -> bool:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return False
    host, port = value
    if not isinstance(host, str):
        return False
    if port is None:
        return port_optional
    return isinstance(port, int) and not isinstance(port, bool)


def _content_length(
    headers: Iterable[tuple[bytes, bytes]], exchange: _Exchange, message: Message
) -> int | None:
    values = {value.strip() for name, value in headers if name == b"content-length"}
    if not values:
        return None
    if len(values) > 1 or not next(iter(values)).isdigit():
        exchange.fail("H5", "app", f"content-length is not one number: {sorted(values)}", message)
        return None
    return int(next(iter(values)))


def _scope_view(scope: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in scope.items() if k not in ("state", "app", "router")}
