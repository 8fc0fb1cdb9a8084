"""structlog set-up for two audiences: a readable console in development, JSON in production.

``configure()`` sets structlog up once, at start-up, and (by default) routes the standard
library's ``logging`` through the same renderer, so uvicorn's and the app's own
``logging`` calls come out in the same format with the same request context.
``AccessLogMiddleware`` never calls it: it logs through whatever structlog is configured
to do. See ``docs/access_log.md``.

The console pieces are processors that can be used in a hand-built chain too:
``EscapeControlCharacters`` (one event stays one line, whatever the client sent) and
``AccessLineFormatter`` (``GET /items/42 200 3.1ms 1.2KB`` for access events).

The pieces live beside this module: ``names`` (event, field and level names),
``console`` and ``json_lines`` (the renderers' processors); this module sets them up and
re-exports them.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, Literal, TextIO, cast

import structlog
from structlog.contextvars import bind_contextvars, merge_contextvars, reset_contextvars
from structlog.typing import Processor

from asgikit.logging.console import (
    CONSOLE_DETAILS,
    AccessLineFormatter,
    EscapeControlCharacters,
    escape_control_characters,
    escaped_traceback,
)
from asgikit.logging.json_lines import JSONRenderer, UTCTimeStamper
from asgikit.logging.names import HTTP_EVENT, LEVELS, WEBSOCKET_EVENT, Field

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


def _console_output(stream: TextIO, colors: bool | None) -> _Output:
    use_colors = _colors_for(stream) if colors is None else colors
    # Plain tracebacks, even where rich is installed (another package may bring it):
    # structlog's rich formatter prints every frame's locals, request headers and
    # all, past the access log's redaction, and the output would depend on what
    # else happens to be installed.
    render: list[Processor] = [
        EscapeControlCharacters(),
        AccessLineFormatter(colors=use_colors),
        structlog.dev.ConsoleRenderer(colors=use_colors, exception_formatter=escaped_traceback),
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


def _json_output(stream: TextIO) -> _Output:
    # structlog's own production recipe, with a cheaper timestamp.
    text_render: list[Processor] = [JSONRenderer(text=True)]
    render: list[Processor] = text_render
    binary = _binary_stream(stream)
    logger_factory: Any
    if binary is None:
        logger_factory = structlog.WriteLoggerFactory(file=stream)
    else:
        render = [JSONRenderer(text=False)]
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
        stdlib: Also route the standard library's ``logging`` (the root logger, and
            uvicorn's loggers, whose own handlers are removed) through the same renderer
            with the same context, at the same level.
        processors: More processors, run after the level and timestamp are added and
            before rendering.
        configure: False: change nothing at all, and leave the app's own structlog and
            ``logging`` set-up as it is (a config file's ``[logging] configure =
            false``; in code, simply do not call this function).

    Raises:
        ValueError: ``format`` or ``level`` is not one of the known values.
        TypeError: ``level`` is neither a str nor an int.
    """
    if format not in ("auto", "console", "json"):
        raise ValueError(f"format must be 'auto', 'console' or 'json', not {format!r}")
    level_number = _level_number(level)
    if not configure:
        return
    console_stream: TextIO = stream if stream is not None else sys.stderr
    if format == "auto":
        format = "console" if _isatty(console_stream) else "json"
    if format == "console":
        output = _console_output(console_stream, colors)
    else:
        output = _json_output(stream if stream is not None else sys.stdout)
    extra = list(processors)
    shared: list[Processor] = [
        merge_contextvars,
        structlog.processors.add_log_level,
        *output.comforts,
        output.timestamper,
        *extra,
    ]
    structlog.configure(
        processors=[*shared, *output.render],
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=output.logger_factory,
        context_class=dict,
        cache_logger_on_first_use=True,
    )
    if stdlib:
        foreign: list[Processor] = [
            merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            output.timestamper,
            *extra,
        ]
        _route_stdlib(output.stream, level_number, foreign, output.text_render)


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
