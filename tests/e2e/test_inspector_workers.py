"""``asgikit serve --workers 2`` with the inspector: one page shows both workers' requests.

A real ``python -m asgikit serve CONFIG --workers 2`` (uvicorn's supervisor and two
worker processes) serves a small app behind the inspector and tracing. Requests over
new connections reach both workers (``/pid`` says which); the page's JSON, asked of
either worker, lists the requests of both, each with its worker's pid and its spans and
log lines. The shared SQLite file lives in the server's temporary directory while it
runs and is gone once it stopped (SIGTERM to the supervisor).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests._processes import free_port, stop
from tests.e2e.servers import HOST, ROOT

pytest.importorskip("uvicorn", reason="asgikit serve needs uvicorn")

WORKERS = 2
STARTUP_TIMEOUT = 40.0  # two workers starting on two busy cores
TIMEOUT = 20.0

APP = """
import logging
import os

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from opentelemetry import trace

tracer = trace.get_tracer("workers")


async def pid(request):
    with tracer.start_as_current_span("which.worker"):
        logging.getLogger("workers").warning("answered by %d", os.getpid())
        return JSONResponse({"pid": os.getpid()})


app = Starlette(routes=[Route("/pid", pid)])
"""

CONFIG = """app = "inspected:app"

[logging]
format = "json"
level = "info"

[telemetry]
service_name = "workers"
traces = "none"
metrics = "none"

[[middleware]]
use = "inspector"

[[middleware]]
use = "tracing"
"""


def _wait_until_answering(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            raise AssertionError(f"asgikit serve exited early:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(url + "/_asgikit/api/requests", timeout=1.0, trust_env=False)
        except httpx.HTTPError:
            assert time.monotonic() < deadline, f"asgikit serve did not answer:\n{log.read_text()}"
            time.sleep(0.1)
        else:
            return


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    (tmp_path / "inspected.py").write_text(APP, encoding="utf-8")
    config = tmp_path / "asgikit.toml"
    config.write_text(CONFIG, encoding="utf-8")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    port = free_port()
    url = f"http://{HOST}:{port}"
    command = [sys.executable, "-m", "asgikit", "serve", str(config)]
    command += ["--workers", str(WORKERS), "--host", HOST, "--port", str(port)]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "TMPDIR": str(temporary),
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
        try:
            _wait_until_answering(process, url, log)
            yield process, url, temporary
        finally:
            stop(process, 15.0)


def test_both_workers_requests_are_on_either_worker_s_page(
    served: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, url, temporary = served
    seen: dict[int, int] = {}
    deadline = time.monotonic() + TIMEOUT
    while len(seen) < WORKERS or min(seen.values()) < 2:
        assert time.monotonic() < deadline, f"requests per worker: {seen}"
        with httpx.Client(base_url=url, timeout=5, trust_env=False) as client:  # new connection
            worker = client.get("/pid").json()["pid"]
        seen[worker] = seen.get(worker, 0) + 1
    shared = temporary / f"asgikit-inspector-{os.getuid()}" / f"{process.pid}.sqlite3"
    assert shared.exists()

    expected = sum(seen.values())
    rows: list[dict[str, object]] = []
    pages = []
    while len(rows) < expected or len(pages) < 2 * WORKERS:
        assert time.monotonic() < deadline, f"{len(rows)} of {expected} requests listed"
        with httpx.Client(base_url=url, timeout=5, trust_env=False) as client:
            rows = client.get("/_asgikit/api/requests").json()
            pages.append(client.get("/_asgikit/").text)
        time.sleep(0.05)
    listed = [r for r in rows if r["path"] == "/pid"]
    assert len(listed) == expected
    assert {r["pid"] for r in listed} == set(seen)  # both workers, on one page
    assert all("all 2 worker processes" in page for page in pages)

    one = listed[0]
    with httpx.Client(base_url=url, timeout=5, trust_env=False) as client:
        found = client.get(f"/_asgikit/api/requests/{one['id']}").json()
    assert "which.worker" in [span["name"] for span in found["spans"]]
    assert [line["event"] for line in found["log_lines"]] == [f"answered by {one['pid']}"]

    stop(process, 15.0)
    assert process.returncode is not None
    assert not shared.exists()
    assert not list(shared.parent.iterdir())  # the -wal and -shm files too
