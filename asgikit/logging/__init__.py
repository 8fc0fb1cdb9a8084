"""structlog set-up for two audiences: a readable console in development, JSON in production.

``configure()`` sets structlog up once, at start-up, and (by default) routes the standard
library's ``logging`` through the same renderer, so the servers' and the app's own
``logging`` calls come out in the same format with the same request context, once each
(``bridge``). ``AccessLogMiddleware`` never calls it: it logs through whatever structlog
is configured to do. See ``docs/logging.md``.

The console pieces are processors that can be used in a hand-built chain too:
``EscapeControlCharacters`` (one event stays one line, whatever the client sent) and
``AccessLineFormatter`` (``GET /items/42 200 3.1ms 1.2KB`` for access events).

The pieces live beside this module: ``names`` (event, field and level names),
``console`` and ``json_lines`` (the renderers' processors), ``tracebacks`` (short
tracebacks, the app's frames first), ``bridge`` (``logging`` routed through one
handler); this module sets them up and re-exports them.
"""

from __future__ import annotations

import functools
import inspect
import io
import os
import sys
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, TextIO, cast

import structlog
from structlog.contextvars import bind_contextvars, merge_contextvars, reset_contextvars
from structlog.typing import Processor

from asgikit.logging.bridge import (
    SERVER_LOGGERS,
    add_public_extras,
    claim_console,
    install,
    traceback_written,
    uninstall,
)
from asgikit.logging.collector import to_collector
from asgikit.logging.console import (
    CONSOLE_DETAILS,
    AccessLineFormatter,
    EscapeControlCharacters,
    escape_control_characters,
    escaped_traceback,
)
from asgikit.logging.json_lines import JSONRenderer, UTCTimeStamper
from asgikit.logging.names import HTTP_EVENT, LEVELS, WEBSOCKET_EVENT, Field
from asgikit.logging.tracebacks import short_traceback

__all__ = [
    "CONSOLE_DETAILS",
    "HTTP_EVENT",
    "LEVELS",
    "SERVER_LOGGERS",
    "WEBSOCKET_EVENT",
    "AccessLineFormatter",
    "EscapeControlCharacters",
    "Field",
    "UTCTimeStamper",
    "claim_console",
    "configure",
    "escape_control_characters",
    "short_traceback",
    "structlog_contextvar",
    "to_collector",
    "traceback_written",
]


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
# configure()

Format = Literal["auto", "console", "json"]
Tracebacks = Literal["short", "full"]


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


@dataclass(frozen=True, slots=True)
class _Output:
    """Where lines go and how they are rendered, for the console or for JSON."""

    stream: TextIO
    timestamper: Processor
    comforts: list[Processor]
    render: list[Processor]
    """structlog's own events: the last processors of the chain."""
    text_render: list[Processor]
    """The same for ``logging`` records, which are written as text."""
    logger_factory: Any


def _console_output(stream: TextIO, colors: bool | None, short: bool) -> _Output:
    use_colors = _colors_for(stream) if colors is None else colors
    # Plain tracebacks, even where rich is installed (another package may bring it):
    # structlog's rich formatter prints every frame's locals, request headers and
    # all, past the access log's redaction, and the output would depend on what
    # else happens to be installed.
    render: list[Processor] = [
        EscapeControlCharacters(),
        AccessLineFormatter(colors=use_colors),
        structlog.dev.ConsoleRenderer(
            colors=use_colors, exception_formatter=functools.partial(escaped_traceback, short=short)
        ),
    ]
    return _Output(
        stream=stream,
        timestamper=structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
        # Development comforts: log.info(..., stack_info=True), log.exception() anywhere.
        comforts=[structlog.processors.StackInfoRenderer(), structlog.dev.set_exc_info],
        render=render,
        text_render=render,
        logger_factory=structlog.WriteLoggerFactory(file=stream),
    )


def _json_output(given: TextIO | None, short: bool) -> _Output:
    # structlog's own production recipe, with a cheaper timestamp.
    text_render: list[Processor] = [JSONRenderer(text=True, short=short)]
    render: list[Processor] = text_render
    stream = sys.stdout if given is None else given
    # Bytes straight to stdout's buffer (no encoding step). A stream the caller gave is
    # written as text: the loggers must hold the text stream itself, since a file object
    # nothing else refers to closes its buffer when it is collected, and text written
    # to it elsewhere must not overtake lines still in its buffer.
    binary = _binary_stream(stream) if given is None else None
    logger_factory: Any
    if binary is None:
        logger_factory = structlog.WriteLoggerFactory(file=stream)
    else:
        render = [JSONRenderer(text=False, short=short)]
        logger_factory = structlog.BytesLoggerFactory(file=binary)
    return _Output(stream, UTCTimeStamper(), [], render, text_render, logger_factory)


def configure(
    *,
    format: Format = "auto",
    level: int | str = "info",
    stream: TextIO | None = None,
    colors: bool | None = None,
    stdlib: bool = True,
    processors: Sequence[Processor] = (),
    tracebacks: Tracebacks = "short",
    configure: bool = True,
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
        stdlib: Also route the standard library's ``logging`` through the same
            renderer with the same context, at the same level: asgikit's handler
            becomes the only one writing to stdout and stderr (the servers' and the
            frameworks' console handlers are taken out, their loggers propagate to it;
            see ``docs/logging.md``).
        processors: More processors (functions or instances taking ``logger,
            method_name, event_dict``), run after the level and timestamp are added and
            before rendering, for structlog's events and ``logging``'s records alike. A
            config file names them by import string: ``"package.module:function"``.
        tracebacks: ``"short"``: the app's frames, with asgikit's and the libraries'
            before them folded into one line; ``"full"``: every frame, as Python prints
            them.
        configure: False: change nothing at all, and leave the app's own structlog and
            ``logging`` set-up as it is (a config file's ``[logging] configure =
            false``; in code, simply do not call this function).

    Raises:
        ValueError: ``format``, ``level`` or ``tracebacks`` is not one of the known values.
        TypeError: ``level`` is neither a str nor an int, or a processor is not one.
    """
    if format not in ("auto", "console", "json"):
        raise ValueError(f"format must be 'auto', 'console' or 'json', not {format!r}")
    if tracebacks not in ("short", "full"):
        raise ValueError(f"tracebacks must be 'short' or 'full', not {tracebacks!r}")
    level_number = _level_number(level)
    extra = _processors(processors)
    if not configure:
        uninstall()  # asgikit no longer owns logging: claim_console() does nothing
        return
    short = tracebacks == "short"
    console_stream: TextIO = stream if stream is not None else sys.stderr
    if format == "auto":
        format = "console" if _isatty(console_stream) else "json"
    if format == "console":
        output = _console_output(console_stream, colors, short)
    else:
        output = _json_output(stream, short)
    shared: list[Processor] = [
        merge_contextvars,
        structlog.processors.add_log_level,
        *output.comforts,
        output.timestamper,
        *extra,
        to_collector,  # a copy to the OpenTelemetry collector, when telemetry asks
    ]
    structlog.configure(
        processors=[*shared, *output.render],
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=output.logger_factory,
        context_class=dict,
        cache_logger_on_first_use=True,
    )
    if not stdlib:
        uninstall()  # logging stays as it is, now and after the app is built
        return
    foreign: list[Processor] = [
        merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        add_public_extras,
        output.timestamper,
        *extra,
        to_collector,
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=foreign,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *output.text_render,
        ],
    )
    install(output.stream, level_number, formatter)


def _processors(processors: Sequence[Processor]) -> list[Processor]:
    """The processors, checked: each is called with ``(logger, method_name, event_dict)``."""
    given: object = processors
    if isinstance(given, str) or not isinstance(given, Sequence):
        raise TypeError(f"processors must be a list of processors, not {processors!r}")
    for index, processor in enumerate(processors):
        if inspect.isclass(processor):
            raise TypeError(
                f"processors[{index}]: {processor.__qualname__} is a class: give an instance "
                "(in a config file, the import string of an instance or of a function)"
            )
        if not callable(processor):
            raise TypeError(f"processors[{index}]: {processor!r} is not callable")
    return list(processors)
