"""The console renderers' pieces: control characters escaped, and the access line.

Processors usable in a hand-built chain too (``asgikit.logging`` re-exports them):
``EscapeControlCharacters`` (one event stays one line, whatever the client sent) and
``AccessLineFormatter`` (``GET /items/42 200 3.1ms 1.2KB`` for access events).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Final

from structlog.typing import EventDict, ExcInfo, WrappedLogger

from asgikit.logging.names import ACCESS_FIELDS, HTTP_EVENT, WEBSOCKET_EVENT, Field
from asgikit.logging.tracebacks import full_traceback, short_traceback

__all__ = [
    "CONSOLE_DETAILS",
    "SHORT_TRACE_ID",
    "AccessLineFormatter",
    "EscapeControlCharacters",
    "escape_control_characters",
    "escaped_traceback",
]

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


def _as_written(message: str) -> re.Pattern[str]:
    """*message* as the traceback module writes it: inside an exception group each of
    its line breaks is followed by the group's margin (``  | ``, ``+-+``), nested too."""
    lines = message.split("\n")
    return re.compile(
        re.escape(lines[0]) + "".join(r"\n[ \t|+-]*" + re.escape(line) for line in lines[1:])
    )


def _escaped(message: str) -> Callable[[re.Match[str]], str]:
    escaped = message.translate(_ESCAPES)
    return lambda match: escaped


def escaped_traceback(sio: IO[str], exc_info: ExcInfo, *, short: bool = False) -> None:
    """The traceback, with control characters escaped: structlog's plain one, or with
    ``short=True`` the short one of ``asgikit.logging.tracebacks``.

    The traceback keeps its own line breaks; those inside exception messages and notes,
    which may quote what a client sent, are escaped like any other control character.
    """
    text = "\n" + (short_traceback if short else full_traceback)(exc_info)
    for message in _messages(exc_info[1]):
        if "\n" in message:
            text = _as_written(message).sub(_escaped(message), text)
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


SHORT_TRACE_ID: Final = 8
"""Hex digits of the trace id a console access line shows."""


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
    ``WS /chat 101 12.40s``), followed by the span's short ``trace_id`` (its first
    ``SHORT_TRACE_ID`` hex digits) when one was current, the fields named in ``details``, and by
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
        self._hidden = ACCESS_FIELDS - set(details)

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
        trace_id = event_dict.get(Field.TRACE_ID)
        for key in self._hidden.intersection(event_dict):
            del event_dict[key]
        if isinstance(trace_id, str) and trace_id:
            # Short, as a commit hash is: enough to tell requests apart and to find the
            # trace; the JSON line keeps the whole id.
            event_dict[Field.TRACE_ID] = trace_id[:SHORT_TRACE_ID]
        return event_dict
