"""Short tracebacks: the app's own frames, with asgikit's and the libraries' folded away.

A 500 behind a stack of middleware and a framework carries 40 to 70 frames, and the one
that matters, the app's, comes last. ``short_traceback`` keeps Python's order and layout
(the most recent call last, chained and grouped exceptions as the interpreter prints
them) but folds frames into one line each run:

- asgikit's own frames (the kit and its middleware), wherever they are;
- any frame of the standard library or an installed package that comes before the
  app's last frame: the server, the framework and the glue between the app's frames.

What comes after the app's last frame (a library the app called, which raised) is
shown. When no frame is the app's (the app is itself an installed package, or the
error is not the app's), only asgikit's frames are folded. Source lines are read only
for the frames shown; the caret lines (``^^^^``) are left out.
"""

from __future__ import annotations

import importlib.util
import linecache
import os
import site
import sysconfig
import traceback
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Final

from structlog.typing import ExcInfo

__all__ = ["full_traceback", "short_traceback"]

_ASGIKIT: Final = "asgikit"
_RECURSIVE_CUTOFF: Final = 3  # what the traceback module shows of a repeated frame
_CACHE_LIMIT: Final = 4096


def _asgikit_directories() -> tuple[str, ...]:
    directories = {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    spec = importlib.util.find_spec("asgikit.middleware")  # mapped from middleware/
    if spec is not None and spec.submodule_search_locations:
        directories.update(os.path.abspath(path) for path in spec.submodule_search_locations)
    return tuple(sorted(directories, key=len, reverse=True))


def _library_directories() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    found = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    found.update(getattr(site, "getsitepackages", list)())
    user_site = getattr(site, "getusersitepackages", lambda: None)()
    if isinstance(user_site, str):
        found.add(user_site)
    # Longest first: site-packages is inside platstdlib in a virtual environment.
    return tuple(sorted((os.path.abspath(path) for path in found), key=len, reverse=True))


class _Origins:
    """Where a file belongs: the app (None), asgikit, or a library (its package name)."""

    __slots__ = ("_asgikit", "_cache", "_cwd", "_libraries")

    def __init__(self) -> None:
        self._asgikit = _asgikit_directories()
        self._libraries = _library_directories()
        self._cache: dict[str, str | None] = {}
        self._cwd = os.getcwd()

    def __call__(self, filename: str) -> str | None:
        cache = self._cache
        if filename in cache:
            return cache[filename]
        origin = self._origin(filename)
        if len(cache) >= _CACHE_LIMIT:  # code made at run time, each under a new name
            cache.clear()
        cache[filename] = origin
        return origin

    def _origin(self, filename: str) -> str | None:
        if filename.startswith("<"):  # <frozen runpy>, <string>: no source of the app's
            name = filename.strip("<>").removeprefix("frozen ").partition(".")[0]
            return name or filename
        path = os.path.normpath(os.path.join(self._cwd, filename))
        if _under(path, self._asgikit) is not None:
            return _ASGIKIT
        library = _under(path, self._libraries)
        if library is not None:
            first = os.path.relpath(path, library).split(os.sep, 1)[0]
            return first.partition(".")[0] or first
        if not filename.endswith(".py"):  # compiled code (uvloop/loop.pyx): a library's
            return filename.replace("\\", "/").split("/", 1)[0].partition(".")[0] or filename
        return None


def _under(path: str, directories: Iterable[str]) -> str | None:
    for directory in directories:
        if path.startswith(directory + os.sep):
            return directory
    return None


_origins: _Origins | None = None


def _origin_of(filename: str) -> str | None:
    global _origins
    if _origins is None:
        _origins = _Origins()  # once, on the first traceback: the paths are settled by then
    return _origins(filename)


def _fold_line(packages: list[str]) -> str:
    counts: dict[str, int] = {}
    for package in packages:
        counts[package] = counts.get(package, 0) + 1
    total = len(packages)
    if len(counts) == 1:
        return f"  [{total} {packages[0]} frame{'s' if total > 1 else ''}]\n"
    parts = ", ".join(f"{package} {count}" for package, count in counts.items())
    return f"  [{total} frames: {parts}]\n"


# One frame: file, line number, function, and the module globals (to find the source).
_Frame = tuple[str, int | None, str, dict[str, Any]]


def _frames(tb: TracebackType | None) -> list[_Frame]:
    """The traceback's frames, outermost first, without their column positions.

    ``traceback.TracebackException`` computes each frame's columns from its bytecode
    for the caret lines; that is most of its cost, and short tracebacks have no carets.
    """
    frames: list[_Frame] = []
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append((code.co_filename, tb.tb_lineno, code.co_name, tb.tb_frame.f_globals))
        tb = tb.tb_next
    return frames


def _frame_lines(frame: _Frame) -> str:
    filename, lineno, name, module_globals = frame
    text = f'  File "{filename}", line {lineno}, in {name}\n'
    if lineno is None:
        return text
    linecache.checkcache(filename)  # source is read for the frames shown only
    line = linecache.getline(filename, lineno, module_globals).strip()
    return f"{text}    {line}\n" if line else text


def _stack_lines(frames: list[_Frame]) -> list[str]:
    """The frames as the traceback module prints them, folded where they are not the app's."""
    origins = [_origin_of(frame[0]) for frame in frames]
    last_app = max((i for i, origin in enumerate(origins) if origin is None), default=-1)
    lines: list[str] = []
    folded: list[str] = []
    repeats = _Repeats(lines)
    for index, (frame, origin) in enumerate(zip(frames, origins, strict=True)):
        if origin == _ASGIKIT or (origin is not None and index < last_app):
            folded.append(origin)
            continue
        if folded:
            repeats.end()
            lines.append(_fold_line(folded))
            folded = []
        if repeats.shows(frame):
            lines.append(_frame_lines(frame))
    repeats.end()
    if folded:
        lines.append(_fold_line(folded))
    return lines


class _Repeats:
    """The same frame over and over (recursion): the first few, then a count, as Python."""

    __slots__ = ("_count", "_last", "_lines")

    def __init__(self, lines: list[str]) -> None:
        self._lines = lines
        self._last: tuple[str, int | None, str] | None = None
        self._count = 0

    def shows(self, frame: _Frame) -> bool:
        current = (frame[0], frame[1], frame[2])
        if current != self._last:
            self.end()
            self._last = current
        self._count += 1
        return self._count <= _RECURSIVE_CUTOFF

    def end(self) -> None:
        more = self._count - _RECURSIVE_CUTOFF
        if more > 0:
            plural = "s" if more > 1 else ""
            self._lines.append(f"  [Previous line repeated {more} more time{plural}]\n")
        self._last, self._count = None, 0


def _safe(value: object, what: str, func: Any = str) -> str:
    try:
        return str(func(value))
    except Exception:
        return f"<{what} {func.__name__}() failed>"


def _exception_only(exc: BaseException) -> list[str]:
    """The exception's last lines: ``Type: message`` and its notes, as Python prints them."""
    if isinstance(exc, SyntaxError):  # with the offending line and a caret
        return list(traceback.TracebackException(type(exc), exc, None).format_exception_only())
    kind = type(exc)
    name, module = kind.__qualname__, kind.__module__
    if module not in ("__main__", "builtins"):
        name = f"{module if isinstance(module, str) else '<unknown>'}.{name}"
    message = _safe(exc, "exception")
    lines = [f"{name}: {message}\n" if message else f"{name}\n"]
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, Sequence) and not isinstance(notes, str):
        for note in notes:
            lines += [line + "\n" for line in _safe(note, "note").split("\n")]
    elif notes is not None:
        lines.append(_safe(notes, "__notes__", repr))
    return lines


_CAUSE: Final = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT: Final = "\nDuring handling of the above exception, another exception occurred:\n\n"
_MAX_GROUP_WIDTH: Final = 15
_MAX_GROUP_DEPTH: Final = 10


def _links(root: BaseException) -> dict[int, tuple[str, BaseException]]:
    """Each exception's cause or context to print before it, with the message between.

    Walked in the order ``traceback.TracebackException`` walks them, so that an
    exception reached twice (a cycle, a group member that is also a context) is
    printed where, and as often as, Python prints it.
    """
    seen = {id(root)}
    links: dict[int, tuple[str, BaseException]] = {}
    pending = [root]
    while pending:
        current = pending.pop()
        cause, context = current.__cause__, current.__context__
        if cause is not None and id(cause) not in seen:
            links[id(current)] = (_CAUSE, cause)
            seen.add(id(cause))
            pending.append(cause)
        elif not current.__suppress_context__ and context is not None and id(context) not in seen:
            links[id(current)] = (_CONTEXT, context)
            seen.add(id(context))
            pending.append(context)
        if isinstance(current, BaseExceptionGroup):
            seen.update(id(member) for member in current.exceptions)
            pending += current.exceptions
    return links


class _Printer:
    """``TracebackException.format`` (chains, groups and their margins), on short stacks."""

    __slots__ = ("depth", "lines", "links", "need_close")

    def __init__(self, root: BaseException) -> None:
        self.lines: list[str] = []
        self.links = _links(root)
        self.depth = 0
        self.need_close = False

    def emit(self, texts: Iterable[str], margin: str = "|") -> None:
        prefix = " " * (2 * self.depth) + (f"{margin} " if self.depth else "")
        for text in texts:
            self.lines += [prefix + line for line in text.splitlines(keepends=True)]

    def exception(self, exc: BaseException) -> None:
        chain: list[tuple[str | None, BaseException]] = []
        current: BaseException | None = exc
        while current is not None:
            message, following = self.links.get(id(current), (None, None))
            chain.append((message, current))
            current = following
        for message, each in reversed(chain):
            if message is not None:
                self.emit([message])
            self.one(each)

    def one(self, exc: BaseException) -> None:
        frames = _frames(exc.__traceback__)
        if not isinstance(exc, BaseExceptionGroup):
            if frames:
                self.emit(["Traceback (most recent call last):\n"])
                self.emit(_stack_lines(frames))
            self.emit(_exception_only(exc))
        elif self.depth > _MAX_GROUP_DEPTH:
            self.emit([f"... (max_group_depth is {_MAX_GROUP_DEPTH})\n"])
        else:
            self.group(exc, frames)

    def group(self, exc: BaseExceptionGroup[Any], frames: list[_Frame]) -> None:
        toplevel = self.depth == 0
        if toplevel:
            self.depth += 1
        if frames:
            title = "Exception Group Traceback (most recent call last):\n"
            self.emit([title], margin="+" if toplevel else "|")
            self.emit(_stack_lines(frames))
        self.emit(_exception_only(exc))
        members = exc.exceptions
        shown = len(members) if len(members) <= _MAX_GROUP_WIDTH else _MAX_GROUP_WIDTH + 1
        self.need_close = False
        for index in range(shown):
            last = index == shown - 1
            if last:
                self.need_close = True
            truncated = index >= _MAX_GROUP_WIDTH
            title = "..." if truncated else str(index + 1)
            corner = "+-" if index == 0 else "  "
            self.lines.append(
                f"{' ' * (2 * self.depth)}{corner}+---------------- {title} ----------------\n"
            )
            self.depth += 1
            if truncated:
                remaining = len(members) - _MAX_GROUP_WIDTH
                self.emit([f"and {remaining} more exception{'s' if remaining > 1 else ''}\n"])
            else:
                self.exception(members[index])
            if last and self.need_close:
                self.lines.append(
                    f"{' ' * (2 * self.depth)}+------------------------------------\n"
                )
                self.need_close = False
            self.depth -= 1
        if toplevel:
            self.depth = 0


def short_traceback(exc_info: ExcInfo) -> str:
    """The traceback of *exc_info*, asgikit's and the libraries' frames folded (above).

    Chained exceptions, groups and notes are printed as the interpreter prints them.
    """
    exc = exc_info[1]
    printer = _Printer(exc)
    printer.exception(exc)
    return "".join(printer.lines).rstrip("\n")


def full_traceback(exc_info: ExcInfo) -> str:
    """The traceback of *exc_info* as the interpreter prints it, every frame included."""
    return "".join(traceback.format_exception(*exc_info)).rstrip("\n")
