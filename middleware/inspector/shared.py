"""DevInspectorMiddleware across worker processes: one SQLite file they all write to.

``asgikit serve --workers N`` starts N worker processes, each with its own inspector, and
a request is answered by any of them. So that the page of any worker shows every
request, each worker writes the requests it recorded, rendered as the page reads them,
to one SQLite file (WAL mode: the workers write while pages read) named after the
serve process (the workers' parent), in a directory of the temporary directory only
this user may enter. No extra service: the file is the store.

Bounded: the newest ``max_rows`` requests are kept, each already cut to the inspector's
limits. Cleaned up: each worker registers at start-up and unregisters at shutdown; the
last one out deletes the file, and a worker that starts deletes the files of serve
processes that are gone (a server killed without a shutdown).

The request's own task never touches the file: a record is handed to a writer thread,
which renders it (a moment later, so that spans ending just after the response are in)
and inserts it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from .records import encode

__all__ = ["SETTLE_SECONDS", "SharedStore", "shared_path"]

SETTLE_SECONDS: Final = 0.2
"""How long after a request ended its record is written (spans still ending join it)."""
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "pid INTEGER NOT NULL, summary BLOB NOT NULL, detail BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS workers (pid INTEGER PRIMARY KEY)",
)

Render = Callable[[], tuple[dict[str, Any], dict[str, Any]]]
"""Renders one request: its summary and its detail (called in the writer thread)."""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # pragma: no cover - another user's process of that number
        return False
    return False


def shared_path(parent: int) -> Path | None:
    """The file the workers of serve process *parent* share, in a directory only this
    user may enter (None if it cannot be had safely). Stale files are removed."""
    folder = Path(tempfile.gettempdir()) / f"asgikit-inspector-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None  # someone else's, or open to others: not a place for headers
    for old in folder.glob("*.sqlite3*"):
        number = old.name.partition(".")[0]
        if number.isdecimal() and int(number) != parent and _gone(int(number)):
            with contextlib.suppress(OSError):
                old.unlink()
    return folder / f"{parent}.sqlite3"


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 5000")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def _with_id(number: int, pid: int, kept: bytes) -> bytes:
    """A kept JSON object with its id and worker's process id put first."""
    return b'{"id":%d,"pid":%d,%s' % (number, pid, bytes(kept)[1:])


class SharedStore:
    """The requests of every worker, in one SQLite file.

    Args:
        path: The file (``shared_path``).
        max_rows: How many requests are kept, all workers together.
    """

    def __init__(self, path: Path, max_rows: int) -> None:
        self.path = path
        self._max = max_rows
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._db = _connect(path)
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._db.execute("INSERT OR IGNORE INTO workers VALUES (?)", (self._pid,))
        self._waiting: deque[tuple[float, Render]] = deque(maxlen=max_rows)
        self._waiting_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._writer: threading.Thread | None = None
        self.dropped = 0
        """Requests not written: the writer was ``max_rows`` behind, or writing failed."""

    def workers(self) -> list[int]:
        """The process ids of the workers registered now."""
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT pid FROM workers ORDER BY pid")]

    def put(self, ended: float, render: Render) -> None:
        """Write a request (rendered by *render*, ``SETTLE_SECONDS`` after *ended*, a
        ``time.monotonic()``) from the writer thread, started on first use. At most
        ``max_rows`` wait: when the writer is that far behind, the oldest is dropped."""
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write_all, name="asgikit-inspector-writer", daemon=True
            )
            self._writer.start()
        with self._waiting_lock:
            if len(self._waiting) == self._max:
                self.dropped += 1
            self._waiting.append((ended + SETTLE_SECONDS, render))
            self._wake.set()

    def _next(self) -> tuple[float, Render] | None:
        """The oldest waiting request; None once stopped and nothing waits."""
        while True:
            with self._waiting_lock:
                if self._waiting:
                    return self._waiting.popleft()
                if self._stopping:
                    return None
                self._wake.clear()
            self._wake.wait()

    def _write_all(self) -> None:
        while (item := self._next()) is not None:
            due, render = item
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                self.insert(*render())
            except Exception:  # one request that cannot be written must not stop the rest
                self.dropped += 1

    def insert(self, summary: dict[str, Any], detail: dict[str, Any]) -> int:
        """Keep one rendered request under a new id, all workers' ids in one sequence;
        drop the oldest beyond ``max_rows``. Returns the id."""
        summary = {key: value for key, value in summary.items() if key != "id"}
        detail = {key: value for key, value in detail.items() if key != "id"}
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO requests (pid, summary, detail) VALUES (?, ?, ?)",
                (self._pid, encode(summary), encode(detail)),
            )
            number = cursor.lastrowid or 0
            self._db.execute("DELETE FROM requests WHERE id <= ?", (number - self._max,))
            return number

    def listing(self) -> bytes:
        """Every kept request's summary, newest first, as a JSON array."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, pid, summary FROM requests ORDER BY id DESC"
            ).fetchall()
        return b"[" + b",".join(_with_id(*row) for row in rows) + b"]"

    def detail(self, number: int) -> bytes | None:
        """One request's detail (JSON), if it is still kept."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, pid, detail FROM requests WHERE id = ?", (number,)
            ).fetchone()
        return None if row is None else _with_id(*row)

    def since(self, number: int) -> list[tuple[int, bytes]]:
        """The summaries of the requests kept after *number*, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, pid, summary FROM requests WHERE id > ? ORDER BY id", (number,)
            ).fetchall()
        return [(row[0], _with_id(*row)) for row in rows]

    def clear(self) -> None:
        """Forget every request, of every worker."""
        with self._lock:
            self._db.execute("DELETE FROM requests")

    def close(self) -> None:
        """Stop writing (what is queued is written first), unregister, and delete the file
        if this was the last worker."""
        if self._writer is not None:
            with self._waiting_lock:
                self._stopping = True
                self._wake.set()
            self._writer.join(5.0)
            self._writer = None
        with self._lock:
            self._db.execute("DELETE FROM workers WHERE pid = ?", (self._pid,))
            (left,) = self._db.execute("SELECT count(*) FROM workers").fetchone()
            self._db.close()
        if not left:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{self.path}{suffix}").unlink()
