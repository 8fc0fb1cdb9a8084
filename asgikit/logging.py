"""structlog set-up for two audiences: a readable console in development, JSON in production.

``configure()`` sets structlog up once, at start-up, and (by default) routes the standard
library's ``logging`` through the same renderer, so uvicorn's and the app's own
``logging`` calls come out in the same format with the same request context.
``AccessLogMiddleware`` never calls it: it logs through whatever structlog is configured
to do. See ``docs/access_log.md``.

The console pieces are processors that can be used in a hand-built chain too:
``EscapeControlCharacters`` (one event stays one line, whatever the client sent) and
``AccessLineFormatter`` (``GET /items/42 200 3.1ms 1.2KB`` for access events).
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import IO, Any, BinaryIO, Final, Literal, TextIO, cast

import msgspec
import structlog
from structlog.contextvars import bind_contextvars, merge_contextvars, reset_contextvars
from structlog.typing import EventDict, ExcInfo, Processor, WrappedLogger

__all__ = [
    "CONSOLE_DETAILS",
    "HTTP_EVENT",
    "LEVELS",
    "WEBSOCKET_EVENT",
    "AccessLineFormatter",
    "EscapeControlCharacters",
    "Field",
    "UTCTimeStamper",
    "configure",
    "escape_control_characters",
    "structlog_contextvar",
]

HTTP_EVENT: Final = "http.request"
"""The event name of the access line for an http request."""

WEBSOCKET_EVENT: Final = "websocket.connection"
"""The event name of the access line for a websocket connection."""

LEVELS: Final = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
"""Level names and their numbers, as structlog and ``logging`` use them."""


class Field:
    """The access line's field names: stable, documented in ``docs/access_log.md``.

    OpenTelemetry semantic-convention names where one exists, so a log line and the
    span of the same request use the same keys.
    """

    METHOD: Final = "http.request.method"
    PATH: Final = "url.path"
    QUERY: Final = "url.query"
    ROUTE: Final = "http.route"
    STATUS: Final = "http.response.status_code"
    HTTP_VERSION: Final = "network.protocol.version"
    SCHEME: Final = "url.scheme"
    CLIENT_ADDRESS: Final = "client.address"
    CLIENT_PORT: Final = "client.port"
    PEER_ADDRESS: Final = "network.peer.address"
    USER_AGENT: Final = "user_agent.original"
    REFERER: Final = "http.request.header.referer"
    REQUEST_BODY_SIZE: Final = "http.request.body.size"
    RESPONSE_BODY_SIZE: Final = "http.response.body.size"
    DURATION_MS: Final = "duration_ms"
    TTFB_MS: Final = "ttfb_ms"
    REQUEST_ID: Final = "request_id"
    TRACE_ID: Final = "trace_id"
    SPAN_ID: Final = "span_id"
    ERROR_TYPE: Final = "error.type"
    DISCONNECTED: Final = "disconnected"
    SLOW: Final = "slow"
    SAMPLE_RATE: Final = "sample_rate"
    WS_CLOSE_CODE: Final = "websocket.close_code"
    WS_MESSAGES_RECEIVED: Final = "websocket.messages_received"
    WS_MESSAGES_SENT: Final = "websocket.messages_sent"
    REQUEST_HEADER_PREFIX: Final = "http.request.header."
    RESPONSE_HEADER_PREFIX: Final = "http.response.header."


_time_ns = time.time_ns

_ACCESS_FIELDS: Final = frozenset(
    value for name, value in vars(Field).items() if name.isupper() and not name.endswith("PREFIX")
)


def structlog_contextvar(key: str) -> ContextVar[Any]:
    """The ContextVar structlog itself keeps for *key*, found through its public API.

    Setting it directly (``token = var.set(value)`` ... ``var.reset(token)``) is what
    ``bind_contextvars`` does, minus the per-call keyword dict and lookups;
    ``merge_contextvars`` and ``get_contextvars`` see the value as usual. Look it up
    once, at start-up.
    """
    tokens = bind_contextvars(**{key: None})
    reset_contextvars(**tokens)
    return tokens[key].var


# --------------------------------------------------------------------------------------
# Escaping: one event, one console line

# C0 and C1 controls (CR, LF, ESC and the 8-bit CSI among them), DEL, the Unicode line
# and paragraph separators, and the bidirectional overrides that can reorder a line.
_UNSAFE_CODES = (
    *range(0x20),
    *range(0x7F, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
)
_ESCAPES: Final = {code: repr(chr(code))[1:-1] for code in _UNSAFE_CODES}
_ESCAPES_KEEP_NEWLINE: Final = {code: text for code, text in _ESCAPES.items() if code != 0x0A}
_UNSAFE = re.compile("[" + "".join(re.escape(chr(code)) for code in _UNSAFE_CODES) + "]").search
# Keys whose values are multi-line by design (tracebacks, stacks): newlines stay.
_MULTILINE_KEYS: Final = frozenset({"exception", "stack"})


def escape_control_characters(text: str) -> str:
    r"""Return *text* with every control character written as an escape (``\x1b``, ``\n``).

    Covers C0 and C1 controls, DEL, U+2028/U+2029 and the bidirectional overrides; any
    other character, non-ASCII letters included, is kept as is.
    """
    return text.translate(_ESCAPES) if _UNSAFE(text) else text


class EscapeControlCharacters:
    """Processor: escape control characters in every str value of the event.

    Put it before a console renderer, so that a hostile path, user agent or header
    cannot end the line, forge a second one or send terminal escape sequences. JSON
    renderers escape by themselves and do not need it.
    """

    __slots__ = ()

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        for key, value in event_dict.items():
            if isinstance(value, str) and _UNSAFE(value):
                table = _ESCAPES_KEEP_NEWLINE if key in _MULTILINE_KEYS else _ESCAPES
                event_dict[key] = value.translate(table)
        return event_dict


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__: the traceback prints a placeholder instead
        return ""


def _messages(exc: BaseException | None) -> Iterator[str]:
    """The messages and notes of *exc* and of every exception chained to or grouped in it."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield _message(current)
        notes = getattr(current, "__notes__", None)
        if isinstance(notes, list):
            yield from (note for note in notes if isinstance(note, str))
        pending += [current.__cause__, current.__context__]
        if isinstance(current, BaseExceptionGroup):
            pending += current.exceptions


def _escaped_traceback(sio: IO[str], exc_info: ExcInfo) -> None:
    """structlog's plain traceback, with control characters escaped.

    The traceback keeps its own line breaks; those inside exception messages and notes,
    which may quote what a client sent, are escaped like any other control character.
    """
    buffer = io.StringIO()
    structlog.dev.plain_traceback(buffer, exc_info)
    text = buffer.getvalue()
    for message in _messages(exc_info[1]):
        if "\n" in message:
            text = text.replace(message, message.translate(_ESCAPES))
    sio.write(text.translate(_ESCAPES_KEEP_NEWLINE))


# --------------------------------------------------------------------------------------
# The console line of an access event

_RESET: Final = "\x1b[0m"
_BOLD: Final = "\x1b[1m"
_STATUS_STYLES: Final = {
    1: "",
    2: "\x1b[32m",  # green
    3: "\x1b[36m",  # cyan
    4: "\x1b[33m",  # yellow
    5: "\x1b[31m",  # red
}
_SLOW_STYLE: Final = "\x1b[33m"

CONSOLE_DETAILS: Final = (
    Field.REQUEST_ID,
    Field.ERROR_TYPE,
    Field.DISCONNECTED,
    Field.SLOW,
    Field.WS_CLOSE_CODE,
)


def _duration(ms: float) -> str:
    if ms < 1:
        return f"{ms:.2f}ms"
    if ms < 1000:
        return f"{ms:.1f}ms"
    return f"{ms / 1000:.2f}s"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size}B"
    value = size / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GB"


class AccessLineFormatter:
    """Processor: turn an access event into a short line for people, for the console.

    The event becomes ``GET /items/42?page=2 200 3.1ms 1.2KB`` (websockets:
    ``WS /chat 101 12.40s``), followed by the fields named in ``details`` and by
    everything that is not an access-log field (values the app bound to the context,
    captured headers). Other events pass through untouched. Put it after
    ``EscapeControlCharacters``, so the colours it adds are not escaped, and before
    ``ConsoleRenderer``. JSON output keeps every field and needs no formatter.

    Args:
        colors: Colour the status by class and a slow duration.
        details: Access fields kept as ``key=value`` after the summary; every other
            access field is dropped from the console line.
    """

    __slots__ = ("_colors", "_hidden")

    def __init__(self, *, colors: bool = False, details: Iterable[str] = CONSOLE_DETAILS) -> None:
        self._colors = colors
        self._hidden = _ACCESS_FIELDS - set(details)

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        event = event_dict.get("event")
        if event != HTTP_EVENT and event != WEBSOCKET_EVENT:
            return event_dict
        method = event_dict.get(Field.METHOD, "WS")
        target = str(event_dict.get(Field.PATH, ""))
        query = event_dict.get(Field.QUERY)
        if query:
            target = f"{target}?{query}"
        status = event_dict.get(Field.STATUS)
        status_text = str(status) if status is not None else "-"
        duration = event_dict.get(Field.DURATION_MS)
        duration_text = _duration(duration) if isinstance(duration, int | float) else "-"
        if self._colors:
            style = _STATUS_STYLES.get(status // 100, "") if isinstance(status, int) else ""
            status_text = f"{style}{status_text}{_RESET}{_BOLD}"
            if event_dict.get(Field.SLOW):
                duration_text = f"{_SLOW_STYLE}{duration_text}{_RESET}{_BOLD}"
        parts = [str(method), target, status_text, duration_text]
        size = event_dict.get(Field.RESPONSE_BODY_SIZE)
        if event == HTTP_EVENT and isinstance(size, int):
            parts.append(_size(size))
        event_dict["event"] = " ".join(parts)
        for key in self._hidden.intersection(event_dict):
            del event_dict[key]
        return event_dict


# --------------------------------------------------------------------------------------
# JSON


class UTCTimeStamper:
    """Processor: ``timestamp`` in ISO 8601 UTC with microseconds (``...T09:30:00.123456Z``).

    What ``structlog.processors.TimeStamper(fmt="iso", utc=True)`` writes (always with
    six digits of microseconds), at less than half the cost: the part up to the
    second is formatted once per second.
    """

    __slots__ = ("_cached",)

    def __init__(self) -> None:
        self._cached = (-1, "")

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        second, nanoseconds = divmod(_time_ns(), 1_000_000_000)
        cached_second, prefix = self._cached  # one read: threads may replace it
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._cached = (second, prefix)
        event_dict["timestamp"] = f"{prefix}.{nanoseconds // 1000:06d}Z"
        return event_dict


def _json_fallback(value: Any) -> Any:
    return repr(value)


_format_exc_info: Final = structlog.processors.format_exc_info


class _JSONRenderer:
    """Render the event as one JSON object with msgspec: bytes, or str for ``logging``.

    An ``exc_info`` is first rendered as text under ``exception`` by structlog's
    ``format_exc_info``, called only for the events that carry one: a processor of its
    own in the chain would cost every event a call.
    """

    __slots__ = ("_encode", "_text")

    def __init__(self, *, text: bool) -> None:
        self._encode = msgspec.json.Encoder(enc_hook=_json_fallback).encode
        self._text = text

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> bytes | str:
        if "exc_info" in event_dict:
            event_dict = _format_exc_info(logger, name, event_dict)
        line = self._encode(event_dict)
        return line.decode("utf-8") if self._text else line


# --------------------------------------------------------------------------------------
# configure()

Format = Literal["auto", "console", "json"]

# Servers that install handlers of their own; their records are sent to the root logger.
_SERVER_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access")


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler ``configure`` installs (a class of its own, to be found again)."""


def _level_number(level: int | str) -> int:
    if isinstance(level, bool) or not isinstance(level, int | str):
        raise TypeError(f"level must be a level name or number, not {level!r}")
    if isinstance(level, str):
        number = LEVELS.get(level.lower())
        if number is None:
            raise ValueError(f"level {level!r} is not one of {', '.join(LEVELS)}")
        return number
    if level not in LEVELS.values():
        raise ValueError(f"level {level!r} is not one of {sorted(LEVELS.values())}")
    return level


def _isatty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    if isatty is None:
        return False
    try:
        return bool(isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


def _colors_for(stream: object) -> bool:
    """Colours on a terminal, unless NO_COLOR is set; FORCE_COLOR forces them."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return _isatty(stream)


def _binary_stream(stream: TextIO) -> BinaryIO | None:
    """The binary stream under a text stream (``sys.stdout.buffer``), if it has one."""
    buffer = getattr(stream, "buffer", None)
    return cast(BinaryIO, buffer) if isinstance(buffer, io.IOBase) else None


def configure(
    *,
    format: Format = "auto",
    level: int | str = "info",
    stream: TextIO | None = None,
    colors: bool | None = None,
    stdlib: bool = True,
    processors: Sequence[Processor] = (),
) -> None:
    """Configure structlog (and, by default, ``logging``) for the console or for JSON.

    Call it once at start-up, before anything logs: loggers are cached on first use.

    Args:
        format: ``"console"``: structlog's ``ConsoleRenderer``, one readable line per
            event, to stderr. ``"json"``: one JSON object per line (msgspec), to stdout.
            ``"auto"``: console when the console stream is a terminal, JSON otherwise.
        level: The lowest level logged, as a name (``"info"``) or number (``20``).
        stream: Where lines go instead of stderr (console) or stdout (JSON): a text
            stream; JSON is written to its binary ``buffer`` when it has one.
        colors: Console colours; by default on when the stream is a terminal and the
            ``NO_COLOR`` environment variable is not set (``FORCE_COLOR`` forces them).
        stdlib: Also route the standard library's ``logging`` (the root logger, and
            uvicorn's loggers, whose own handlers are removed) through the same renderer
            with the same context, at the same level.
        processors: More processors, run after the level and timestamp are added and
            before rendering.

    Raises:
        ValueError: ``format`` or ``level`` is not one of the known values.
        TypeError: ``level`` is neither a str nor an int.
    """
    if format not in ("auto", "console", "json"):
        raise ValueError(f"format must be 'auto', 'console' or 'json', not {format!r}")
    level_number = _level_number(level)
    console_stream: TextIO = stream if stream is not None else sys.stderr
    if format == "auto":
        format = "console" if _isatty(console_stream) else "json"

    console = format == "console"
    extra = list(processors)
    timestamper: Processor
    if console:
        timestamper = structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False)
        # Development comforts: log.info(..., stack_info=True), log.exception() anywhere.
        comforts: list[Processor] = [
            structlog.processors.StackInfoRenderer(),
            structlog.dev.set_exc_info,
        ]
    else:
        # structlog's own production recipe, with a cheaper timestamp.
        timestamper = UTCTimeStamper()
        comforts = []
    shared: list[Processor] = [
        merge_contextvars,
        structlog.processors.add_log_level,
        *comforts,
        timestamper,
        *extra,
    ]
    logger_factory: Any
    render: list[Processor]
    text_render: list[Processor]
    out: TextIO
    if console:
        use_colors = _colors_for(console_stream) if colors is None else colors
        # Plain tracebacks, even where rich is installed (another package may bring it):
        # structlog's rich formatter prints every frame's locals, request headers and
        # all, past the access log's redaction, and the output would depend on what
        # else happens to be installed.
        render = text_render = [
            EscapeControlCharacters(),
            AccessLineFormatter(colors=use_colors),
            structlog.dev.ConsoleRenderer(
                colors=use_colors, exception_formatter=_escaped_traceback
            ),
        ]
        out = console_stream
        logger_factory = structlog.WriteLoggerFactory(file=console_stream)
    else:
        out = stream if stream is not None else sys.stdout
        text_render = [_JSONRenderer(text=True)]
        binary = _binary_stream(out)
        if binary is not None:
            render = [_JSONRenderer(text=False)]
            logger_factory = structlog.BytesLoggerFactory(file=binary)
        else:
            render = text_render
            logger_factory = structlog.WriteLoggerFactory(file=out)

    structlog.configure(
        processors=[*shared, *render],
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=logger_factory,
        context_class=dict,
        cache_logger_on_first_use=True,
    )
    if stdlib:
        foreign: list[Processor] = [
            merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            timestamper,
            *extra,
        ]
        _route_stdlib(out, level_number, foreign, text_render)


def _route_stdlib(
    stream: TextIO, level: int, foreign: list[Processor], render: list[Processor]
) -> None:
    handler = _Handler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=foreign,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        if not server_logger.handlers and not server_logger.propagate:
            # Silenced on purpose (uvicorn --no-access-log leaves uvicorn.access so):
            # routing it would bring back the lines the server was told to drop.
            continue
        server_logger.handlers.clear()
        server_logger.propagate = True
