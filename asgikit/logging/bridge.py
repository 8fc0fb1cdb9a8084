"""The bridge to ``logging``: while asgikit owns logging, one handler writes the console.

``configure(stdlib=True)`` installs one handler on the root logger, asgikit's, which
renders every ``logging`` record as asgikit renders its own events. What it does to
the handlers others installed follows one rule: **a handler that writes to stdout or
stderr is taken out, wherever it is** (the root logger, a server's logger, a
framework's), and a logger that wrote only through such handlers propagates to the
root logger instead, so that its lines still come out, once, through asgikit's handler.
Handlers that write elsewhere (files, Sentry, OpenTelemetry, Django's mail to admins)
stay. A logger silenced on purpose (no handler, not propagating, as
``uvicorn --no-access-log`` leaves ``uvicorn.access``) stays silent.

The rule is applied by ``configure()``, again by ``claim_console()`` (once the app is
built: Litestar and Django set logging up when their app is created), and, as a safety
net, at a server's first line and whenever a server's logger or the root logger gained
a console handler since (hypercorn gives ``hypercorn.error`` a handler of its own only
after it loaded the app).

Exceptions: the access log writes the traceback of an app's exception and says so with
``traceback_written``; the server's own copy of it, logged when the exception reaches
the server in the same task, is then dropped by asgikit's handler.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from logging.handlers import QueueHandler
from typing import Final, TextIO

from structlog.typing import EventDict, WrappedLogger

__all__ = [
    "SERVER_LOGGERS",
    "add_public_extras",
    "claim_console",
    "install",
    "traceback_written",
    "uninstall",
]

SERVER_LOGGERS: Final = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "hypercorn.error",
    "hypercorn.access",
    "_granian",  # the Rust core logs under _granian.* (the name granian.log keeps)
    "granian.access",
    "gunicorn.error",
    "gunicorn.access",
)
"""The servers' loggers, kept routed to asgikit's handler whenever they log. daphne's
(``daphne.*``) have no handler of their own: daphne installs its handler on the root
logger (``logging.basicConfig``), where the rule above takes it out."""

_NOT_EXTRAS: Final = frozenset(
    {
        *logging.LogRecord("name", 0, "pathname", 0, "msg", (), None).__dict__,
        "message",  # set by any Formatter that formatted the record before
        "asctime",  # (Litestar's queue handler does, on the record itself)
        "color_message",  # uvicorn's: the message again, with terminal escape codes
    }
)


def add_public_extras(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    """Processor: a ``logging`` record's ``extra=`` fields, without the private ones.

    What ``structlog.stdlib.ExtraAdder()`` copies, less uvicorn's ``color_message``
    and the ``message`` and ``asctime`` another handler's formatter leaves behind.
    """
    record = event_dict["_record"]  # a foreign_pre_chain's event: always has its record
    for key, value in record.__dict__.items():
        if key not in _NOT_EXTRAS:
            event_dict[key] = value
    return event_dict


# --------------------------------------------------------------------------------------
# One traceback per exception

_WRITTEN: Final[ContextVar[BaseException | None]] = ContextVar(
    "asgikit.logging.traceback_written", default=None
)
_GRANIAN_APP_ERROR: Final = "Application callable raised an exception"


def traceback_written(exc: BaseException) -> None:
    """Note that *exc*'s traceback was logged (the access log calls this).

    The note lives in the current context, which is the request's task: when the
    exception reaches the server, which logs it again in that same task, asgikit's
    handler drops that copy (uvicorn's "Exception in ASGI application", hypercorn's
    "Error in ASGI Framework", granian's "Application callable raised an exception").
    A server that logs it elsewhere (daphne) keeps its copy.
    """
    _WRITTEN.set(exc)


class _NotTwice(logging.Filter):
    """Drops a server's record of an exception whose traceback was already written."""

    def filter(self, record: logging.LogRecord) -> bool:
        written = _WRITTEN.get()
        if written is None:
            return True
        if record.exc_info:
            return record.exc_info[1] is not written
        # granian's Rust core writes the traceback into the message itself.
        message = record.msg
        if (
            record.name.startswith("_granian")
            and isinstance(message, str)
            and message.startswith(_GRANIAN_APP_ERROR)
        ):
            return type(written).__name__ not in record.getMessage()
        return True


# --------------------------------------------------------------------------------------
# One handler on the console


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler ``configure`` installs (a class of its own, to be found again)."""


_installed: _Handler | None = None
"""The handler of the last ``configure(stdlib=True)``, while asgikit owns logging."""
_unclaimed = False
"""No server has logged since ``install``: its first line claims the console again."""


def _console_stream(stream: object) -> bool:
    standard = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    if any(stream is each for each in standard):
        return True
    fileno = getattr(stream, "fileno", None)
    try:
        return fileno is not None and fileno() in (1, 2)
    except (OSError, ValueError):  # not a file, or closed
        return False


def _writes_to_console(handler: logging.Handler) -> bool:
    """A StreamHandler on stdout or stderr, directly or behind a QueueHandler's listener
    (Litestar's default, and ``dictConfig``'s queue handlers since Python 3.12)."""
    if isinstance(handler, _Handler | logging.FileHandler):
        return False
    if isinstance(handler, logging.StreamHandler):
        return _console_stream(handler.stream)
    if isinstance(handler, QueueHandler):
        listener = getattr(handler, "listener", None)
        handlers = getattr(listener, "handlers", ()) or ()
        return any(
            isinstance(each, logging.Handler) and _writes_to_console(each) for each in handlers
        )
    return False


def _claim(logger: logging.Logger) -> None:
    """Take *logger*'s console handlers out; it propagates if it wrote through them."""
    removed = [handler for handler in logger.handlers if _writes_to_console(handler)]
    for handler in removed:
        logger.removeHandler(handler)
    if removed and not logger.propagate and logger is not logging.root:
        logger.propagate = True


class _KeepRouted(logging.Filter):
    """On a server's logger: what was set up since ``configure()`` is claimed again
    before the record reaches any handler (a console handler the server gave its own
    logger, asgikit's handler gone from the root logger or another one beside it there).

    A safety net for what ``claim_console()`` cannot see coming: hypercorn gives
    ``hypercorn.error`` its handler only after loading the app, and an app module may
    create a Litestar or Django app after calling ``configure()``. The server's first
    line claims the console once more (uvicorn's and hypercorn's come once the app is
    built); after that, a few checks per server record.
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        global _unclaimed
        handler = _installed
        if handler is None:
            return True
        if _unclaimed or _has_console(self._logger) or _root_changed(handler):
            _unclaimed = False  # the server's first line comes once the app is built
            claim_console()
        return True


def _has_console(logger: logging.Logger) -> bool:
    return any(_writes_to_console(each) for each in logger.handlers)


def _root_changed(handler: _Handler) -> bool:
    handlers = logging.root.handlers
    if handler not in handlers:
        return True
    return any(each is not handler and _writes_to_console(each) for each in handlers)


def claim_console() -> None:
    """Make asgikit's handler the only one writing to the console again (the rule above).

    ``configure()`` applies it; call this once the app is created when its framework
    sets logging up itself (``asgikit serve`` and ``app_from_env`` do). Does nothing
    unless ``configure()`` routed ``logging`` (``stdlib=True``, and not ``configure =
    false``).
    """
    handler = _installed
    if handler is None:
        return
    root = logging.getLogger()
    for old in [each for each in root.handlers if isinstance(each, _Handler)]:
        if old is not handler:
            root.removeHandler(old)
    if handler not in root.handlers:
        root.addHandler(handler)
    _claim(root)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):  # not a PlaceHolder
            _claim(logger)
    for name in SERVER_LOGGERS:
        server = logging.getLogger(name)
        if not any(isinstance(each, _KeepRouted) for each in server.filters):
            server.addFilter(_KeepRouted(server))


def install(stream: TextIO, level: int, formatter: logging.Formatter) -> None:
    """Route ``logging`` through a handler on *stream* (``configure(stdlib=True)``)."""
    global _installed, _unclaimed
    handler = _Handler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(_NotTwice())
    _installed, _unclaimed = handler, True
    claim_console()
    logging.getLogger().setLevel(level)


def uninstall() -> None:
    """Forget the handler: ``claim_console`` does nothing until ``install`` again."""
    global _installed
    _installed = None
