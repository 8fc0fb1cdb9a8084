"""DevInspectorMiddleware under ``asgikit serve --workers N``: one page for every worker.

Two inspectors in this process stand for two workers of one serve process (the same
parent): what one records, the other's page shows, through the SQLite file they share.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from asgikit.middleware.inspector.serve import Endpoints
from asgikit.middleware.inspector.shared import SharedStore, shared_path
from asgikit.testing import Response, lifespan
from asgikit.types import ASGIApp, Receive, Scope, Send

from .test_inspector import (
    _log_hooks_released,  # noqa: F401 - autouse here too
    get,
    hello,
    inspector,
    listed,
)
from .test_inspector_events import EVENTS, events

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _two_workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ASGIKIT_WORKERS", "2")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def folder(tmp_path: Path) -> Path:
    return tmp_path / f"asgikit-inspector-{os.getuid()}"


def the_file(tmp_path: Path) -> Path:
    return folder(tmp_path) / f"{os.getppid()}.sqlite3"


async def eventually_listed(app: ASGIApp, count: int) -> list[dict[str, Any]]:
    """The listing once it holds *count* rows (the writer thread writes a moment later)."""
    with anyio.fail_after(10):
        while True:
            rows = await listed(app)
            if len(rows) >= count:
                return rows
            await anyio.sleep(0.05)


def traced_app(provider: TracerProvider) -> Any:
    tracer = provider.get_tracer("shop")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        with tracer.start_as_current_span("work"):
            structlog.get_logger("shop").info("working")
            await hello(scope, receive, send)

    return app


async def test_every_worker_s_page_shows_every_worker_s_requests(tmp_path: Path) -> None:
    provider = TracerProvider()
    first, _ = inspector(traced_app(provider), tracer_provider=provider)
    second, _ = inspector(hello)
    async with lifespan(first), lifespan(second):
        await get(first, "/one?access_token=abc")
        await get(second, "/two")
        rows = await eventually_listed(first, 2)
        assert rows == await listed(second)
        assert sorted(r["path"] for r in rows) == ["/one", "/two"]
        assert {r["pid"] for r in rows} == {os.getpid()}
        one = next(r for r in rows if r["path"] == "/one")
        found = json.loads((await get(second, f"/_asgikit/api/requests/{one['id']}")).body)
        assert found["id"] == one["id"] and found["fields"]["url.query"].endswith("[REDACTED]")
        assert [s["name"] for s in found["spans"]] == ["work"]
        assert [line["event"] for line in found["log_lines"]] == ["working"]
        page = (await get(second, "/_asgikit/")).body.decode()
        assert "the requests of all 2 worker processes" in page and str(the_file(tmp_path)) in page
        missing = await get(first, "/_asgikit/api/requests/999")
        assert missing.status == 404

        cleared = await get(
            second, "/_asgikit/api/clear", method="POST", headers={"x-asgikit-inspector": "clear"}
        )
        assert cleared.status == 204
        assert await listed(first) == []
        assert the_file(tmp_path).exists()
    assert not the_file(tmp_path).exists()  # the last worker out deleted it
    assert not list(folder(tmp_path).iterdir())  # its -wal and -shm too


async def test_the_event_stream_brings_the_other_workers_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Endpoints, "poll_seconds", 0.02)
    first, _ = inspector()
    second, _ = inspector()
    async with lifespan(first), lifespan(second):
        streamed: list[Response] = []

        async def watch() -> None:
            streamed.append(await get(second, EVENTS, disconnect_after=3))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(watch)
                await anyio.sleep(0.1)  # the stream polls: nothing wakes it
                await get(first, "/from-the-first")
    [response] = streamed
    assert [e["path"] for e in events(response)] == ["/from-the-first"]


async def test_the_shared_rows_are_bounded() -> None:
    app, _ = inspector(max_requests=2)
    async with lifespan(app):
        for path in ("/a", "/b", "/c"):
            await get(app, path)
        with anyio.fail_after(10):
            while [r["path"] for r in await listed(app)] != ["/c", "/b"]:  # noqa: ASYNC110
                await anyio.sleep(0.05)


async def test_after_shutdown_a_worker_keeps_its_own_requests(tmp_path: Path) -> None:
    app, _ = inspector()
    async with lifespan(app):
        pass
    assert not the_file(tmp_path).exists()
    await get(app, "/late")
    assert [r["path"] for r in await listed(app)] == ["/late"]


async def test_a_refused_inspector_lets_the_file_go(tmp_path: Path) -> None:
    app, _ = inspector()
    assert not folder(tmp_path).exists()  # built, not serving yet: no file
    await get(app, "/")
    assert the_file(tmp_path).exists()
    await get(app, "/", server=("10.0.0.1", 80))
    assert not the_file(tmp_path).exists()


def test_files_of_servers_that_are_gone_are_removed(tmp_path: Path) -> None:
    folder(tmp_path).mkdir(mode=0o700)
    gone = folder(tmp_path) / "999999999.sqlite3"
    alive = folder(tmp_path) / f"{os.getpid()}.sqlite3-wal"
    other = folder(tmp_path) / "notes.sqlite3"
    for path in (gone, alive, other):
        path.write_bytes(b"")
    assert shared_path(os.getppid()) == the_file(tmp_path)
    assert not gone.exists() and alive.exists() and other.exists()


@pytest.mark.parametrize("mode", [0o755, 0o700])
def test_a_directory_open_to_others_or_not_a_directory_is_not_used(
    tmp_path: Path, mode: int
) -> None:
    if mode == 0o700:
        folder(tmp_path).symlink_to(tmp_path)  # a link, whatever it points to
    else:
        folder(tmp_path).mkdir()
        folder(tmp_path).chmod(mode)
    assert shared_path(os.getppid()) is None


async def test_a_file_that_cannot_be_opened_leaves_each_worker_to_itself(tmp_path: Path) -> None:
    folder(tmp_path).mkdir(mode=0o700)
    the_file(tmp_path).mkdir()  # not a database
    app, _ = inspector()
    page = (await get(app, "/_asgikit/")).body.decode()
    assert "one worker process" in page


def test_one_store_keeps_what_it_was_given(tmp_path: Path) -> None:
    path = tmp_path / "one.sqlite3"
    store = SharedStore(path, max_rows=5)
    other = SharedStore(path, max_rows=5)
    number = store.insert({"id": 7, "path": "/x"}, {"id": 7, "path": "/x", "spans": []})
    assert json.loads(other.listing()) == [{"id": number, "pid": os.getpid(), "path": "/x"}]
    assert other.since(number) == [] and other.detail(number + 1) is None
    assert store.workers() == [os.getpid()]
    another_worker = sqlite3.connect(path)
    another_worker.execute("INSERT INTO workers VALUES (1)")
    another_worker.commit()
    another_worker.close()
    store.close()
    assert path.exists()  # worker 1 is still there
    assert other.workers() == [1]
    with pytest.raises(sqlite3.ProgrammingError):
        store.listing()
    other.close()


def test_the_writer_keeps_the_newest_and_survives_a_request_it_cannot_write(
    tmp_path: Path,
) -> None:
    store = SharedStore(tmp_path / "one.sqlite3", max_rows=2)
    taken, release = threading.Event(), threading.Event()

    def slow() -> tuple[dict[str, Any], dict[str, Any]]:
        taken.set()
        release.wait(5)
        return {"path": "/slow"}, {}

    def broken() -> tuple[dict[str, Any], dict[str, Any]]:
        raise ValueError("cannot render")

    def fine(path: str) -> Any:
        return lambda: ({"path": path}, {})

    another_worker = sqlite3.connect(tmp_path / "one.sqlite3")  # keeps the file at close
    another_worker.execute("INSERT INTO workers VALUES (1)")
    another_worker.commit()
    another_worker.close()
    past = time.monotonic() - 1
    store.put(past, slow)  # the writer takes it and waits
    assert taken.wait(5)
    store.put(past, fine("/dropped"))
    store.put(past, broken)
    store.put(past, fine("/kept"))  # two wait at most: the oldest is dropped
    assert store.dropped == 1
    release.set()
    store.close()  # writes what waits first
    assert store.dropped == 2  # and the broken one
    reader = SharedStore(tmp_path / "one.sqlite3", max_rows=2)
    assert [r["path"] for r in json.loads(reader.listing())] == ["/kept", "/slow"]
    reader.close()
