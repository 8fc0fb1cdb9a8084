"""DevInspectorMiddleware's log capture: the app's log lines, attached to their request.

While a request runs, the middleware sets ``LOG_LINES`` to that request's ``LogBuffer``;
contextvars follow the request into its tasks and into the threads a framework runs sync
code in, as structlog's bound context does (the ``request_id`` and ``trace_id`` the
access log and tracing bind are part of each captured line). Two hooks read it:

- a ``logging.Handler`` on the root logger, for the standard library's records;
- a structlog processor, put just before the renderer in structlog's processor chain
  (the list itself, so loggers already cached see it too). When structlog hands its
  events to ``logging`` (``ProcessorFormatter.wrap_for_formatter`` last) it is not put
  in: the handler reads the event from the record.

Both are installed once per process, however many inspectors run (``acquire``), and
taken out when the last one lets go (``release``, at lifespan shutdown). Outside a
request they cost one ``ContextVar.get``.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from contextvars import ContextVar
from typing import Any, Final

import structlog
from structlog.contextvars import get_contextvars
from structlog.typing import EventDict, WrappedLogger

from asgikit.redact import truncate

__all__ = ["LOG_LINES", "LogBuffer", "acquire", "installed", "release"]

MAX_FIELDS: Final = 30
"""Fields kept per line; more are counted."""
MAX_EXCEPTION: Final = 8_000
"""Characters of a logged exception's traceback kept (its end)."""
_SKIPPED: Final = frozenset({"event", "level", "timestamp", "logger", "_record", "_from_structlog"})
# The servers' access lines: the page shows the request's access fields already.
_SKIPPED_LOGGERS: Final = frozenset(
    {"uvicorn.access", "hypercorn.access", "granian.access", "gunicorn.access"}
)
_RECORD_KEYS: Final = frozenset(
    {*logging.LogRecord("n", 0, "p", 0, "m", (), None).__dict__, "message", "asctime"}
)


class LogBuffer:
    """The log lines of one request, at most ``limit`` (later ones are counted)."""

    __slots__ = ("dropped", "field_limit", "limit", "lines")

    def __init__(self, limit: int, field_limit: int) -> None:
        self.lines: list[dict[str, Any]] = []
        self.dropped = 0
        self.limit = limit
        self.field_limit = field_limit

    def add(self, level: str, logger: str, event: str, fields: dict[str, Any]) -> None:
        """Keep one line (JSON-ready: the values are already text)."""
        if len(self.lines) >= self.limit:
            self.dropped += 1
            return
        self.lines.append(
            {
                "time": time.time_ns() // 1000 / 1000,
                "level": level,
                "logger": logger,
                "event": truncate(event, self.field_limit),
                "fields": fields,
            }
        )


LOG_LINES: ContextVar[LogBuffer | None] = ContextVar("asgikit_inspector_logs", default=None)
"""The running request's log lines (None outside a request the inspector records)."""

# Set by the processor, read by the handler in the same thread: structlog's
# ``stdlib.LoggerFactory`` passes a rendered event on to ``logging``, already captured.
_just_captured = threading.local()


def _text(value: Any, limit: int) -> str:
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception:  # a broken __repr__ must not break the app's logging
        text = f"<{type(value).__name__}>"
    return truncate(text, limit)


def _fields(items: Any, limit: int) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    extra = 0
    for key, value in items:
        if key in _SKIPPED or key in fields:
            continue
        if len(fields) >= MAX_FIELDS:
            extra += 1
            continue
        if key == "exception" and isinstance(value, str):
            fields[key] = value[-MAX_EXCEPTION:]
        else:
            fields[str(key)] = _text(value, limit)
    if extra:
        fields["..."] = f"[+{extra} fields]"
    return fields


def capture_event(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: copy the event into the running request's lines."""
    buffer = LOG_LINES.get()
    if buffer is not None:
        _add_event(buffer, event_dict, method_name)
        _just_captured.event = str(event_dict.get("event", ""))
    return event_dict


def _add_event(buffer: LogBuffer, event_dict: Any, method_name: str) -> None:
    level = str(event_dict.get("level", method_name)).lower()
    logger = event_dict.get("logger") or event_dict.get("logger_name") or ""
    buffer.add(
        level,
        str(logger),
        _text(event_dict.get("event", ""), buffer.field_limit),
        _fields(event_dict.items(), buffer.field_limit),
    )


class CaptureHandler(logging.Handler):
    """A handler that copies ``logging`` records into the running request's lines."""

    def emit(self, record: logging.LogRecord) -> None:
        buffer = LOG_LINES.get()
        if buffer is None or record.name in _SKIPPED_LOGGERS:
            return
        try:
            self._capture(buffer, record)
        except Exception:  # pragma: no cover - logging must never fail the app
            self.handleError(record)

    @staticmethod
    def _capture(buffer: LogBuffer, record: logging.LogRecord) -> None:
        if isinstance(record.msg, dict):  # structlog's wrap_for_formatter: its event
            _add_event(buffer, {"logger": record.name, **record.msg}, record.levelname)
            return
        message = record.getMessage()
        pending = getattr(_just_captured, "event", None)
        if pending is not None:
            _just_captured.event = None
            if pending in message:
                return  # structlog's own event, rendered and passed on: kept already
        items = [
            *get_contextvars().items(),
            *((k, v) for k, v in record.__dict__.items() if k not in _RECORD_KEYS),
        ]
        if record.exc_info and record.exc_info[1] is not None:
            items.append(("exception", "".join(traceback.format_exception(record.exc_info[1]))))
        buffer.add(
            record.levelname.lower(),
            record.name,
            message,
            _fields(items, buffer.field_limit),
        )


class _Hooks:
    """The process's one handler and processor, and how many inspectors use them."""

    lock = threading.Lock()
    users = 0
    handler = CaptureHandler()
    chain: list[Any] | None = None
    """The structlog processor list the processor was put into."""


def _hand_over_to_logging(processor: Any) -> bool:
    return getattr(processor, "__qualname__", "") == "ProcessorFormatter.wrap_for_formatter"


def _place() -> None:
    """Put the handler on the root logger and the processor in structlog's chain, where
    they are missing (a logging set-up since the last time may have taken them out)."""
    root = logging.getLogger()
    if _Hooks.handler not in root.handlers:
        root.addHandler(_Hooks.handler)
    chain = structlog.get_config()["processors"]
    if chain is _Hooks.chain or not isinstance(chain, list):
        return
    _take_out()
    if capture_event in chain:  # put back by a set-up that copied the chain: ours again
        _Hooks.chain = chain
    elif chain and not _hand_over_to_logging(chain[-1]):
        chain.insert(len(chain) - 1, capture_event)  # before the renderer
        _Hooks.chain = chain


def _take_out() -> None:
    chain, _Hooks.chain = _Hooks.chain, None
    if chain is not None and capture_event in chain:
        chain.remove(capture_event)


def acquire() -> None:
    """Install the hooks where they are missing (every call needs a ``release``)."""
    with _Hooks.lock:
        _Hooks.users += 1
        _place()


def release() -> None:
    """Take the hooks out once the last user released them."""
    with _Hooks.lock:
        if _Hooks.users == 0:
            return
        _Hooks.users -= 1
        if _Hooks.users:
            return
        logging.getLogger().removeHandler(_Hooks.handler)
        _take_out()


def installed() -> bool:
    """Whether the hooks are in place (for tests and the page)."""
    return _Hooks.users > 0
