"""``asgikit serve --workers 2`` with a Redis rate limit: one limit across both workers.

The server is a real ``python -m asgikit serve CONFIG --workers 2`` process (uvicorn's
supervisor and two worker processes), serving the full e2e stack with the rate limit's
store in a real redis-server and one rule on ``/shared``: 50 an hour, 50 at once. The
test finds connections held by each worker (``/pid`` answers the worker's process id),
fires 150 requests at once over connections of both workers, and counts: exactly 50
allowed, by both workers together, and 100 refused with the limit's headers. With
per-process (memory) limits each worker would allow its own 50. The server is stopped
with SIGTERM to the supervisor, which must take its workers down with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import anyio
import httpx
import pytest

from tests._processes import free_port, stop
from tests._redis import needs_redis, redis_server_fixture, redis_url_fixture  # noqa: F401
from tests.e2e.faults_app import config_text
from tests.e2e.servers import HOST, ROOT
from tests.e2e.stack import json_lines, needs

pytest.importorskip("uvicorn", reason="asgikit serve needs uvicorn")

pytestmark = needs_redis

WORKERS = 2
LIMIT = 50
REQUESTS = 150
PER_WORKER = 3  # connections held on each worker for the burst
STARTUP_TIMEOUT = 40.0  # two workers importing the whole stack on two busy cores
STOP_TIMEOUT = 15.0
TIMEOUT = 20.0
LOG_TIMEOUT = 5.0


def _logged(path: str, output: str) -> Counter[str]:
    """Access log lines per request id, for ``path``, in the servers' output."""
    return Counter(
        line["request_id"]
        for line in json_lines(output)
        if line.get("event") == "http.request" and line.get("url.path") == path
    )


def _children(parent: int) -> set[int]:
    """The PIDs whose parent is ``parent`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # The command may hold spaces and parentheses: the fields follow the last ")".
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == parent and fields[0] != "Z":
                    found.add(int(entry.name))
    return found


def _exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_until_accepting(process: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise AssertionError(f"asgikit serve exited early:\n{log.read().decode()[-3000:]}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            assert time.monotonic() < deadline, f"asgikit serve did not listen on {port}"
            time.sleep(0.05)


class Served:
    """The ``asgikit serve`` process: its URL, PID and output."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
        self.process = process
        self.url = f"http://{HOST}:{port}"
        self._log = log

    def output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")


@pytest.fixture
def served(tmp_path: Path, redis_url: str) -> Iterator[Served]:
    needs("rate_limit")
    rule = {"name": "shared", "path": "/shared", "rate": f"{LIMIT}/hour", "burst": LIMIT}
    options = {
        # "deny": a failing store shows as 503s instead of passing requests unlimited.
        "rate_limit": {
            "rules": [rule],
            "storage": redis_url,
            "timeout": 2.0,
            "on_backend_error": "deny",
        }
    }
    config = tmp_path / "asgikit.toml"
    config.write_text(config_text(options), encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "asgikit", "serve", str(config)]
    command += ["--workers", str(WORKERS), "--host", HOST, "--port", str(port)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    with (tmp_path / "serve.log").open("w+b") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        try:
            _wait_until_accepting(process, port, log)
            yield Served(process, port, log)
        finally:
            workers = _children(process.pid)
            stop(process, STOP_TIMEOUT)
            for pid in workers:  # only if the supervisor failed to take them down
                if _exists(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


async def _worker_of(client: httpx.AsyncClient) -> int:
    response = await client.get("/pid")
    assert response.status_code == 200, response.text
    worker: int = response.json()["pid"]
    return worker


async def _connections(url: str) -> dict[int, list[httpx.AsyncClient]]:
    """``PER_WORKER`` one-connection clients per worker, keyed by the worker's PID.

    Each client holds one keep-alive connection; its first request says which worker
    accepted it. Extra connections to a worker already served enough are closed.
    """
    held: dict[int, list[httpx.AsyncClient]] = {}
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while len(held) < WORKERS or any(len(c) < PER_WORKER for c in held.values()):
        assert time.monotonic() < deadline, f"connections per worker: {held}"
        client = httpx.AsyncClient(
            base_url=url,
            timeout=TIMEOUT,
            trust_env=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        worker = await _worker_of(client)
        mine = held.setdefault(worker, [])
        if len(mine) < PER_WORKER:
            mine.append(client)
        else:
            await client.aclose()
    return held


async def _burst(url: str) -> tuple[dict[int, list[httpx.Response]], set[int]]:
    """Fire ``REQUESTS`` at /shared at once over both workers' connections.

    Returns the responses per worker (the one holding the connection each went over)
    and the workers' PIDs.
    """
    held = await _connections(url)
    assert len(held) == WORKERS, f"more workers than asked for: {sorted(held)}"
    clients = [(worker, client) for worker, mine in held.items() for client in mine]
    answers: dict[int, list[httpx.Response]] = {worker: [] for worker in held}
    try:

        async def shoot(worker: int, client: httpx.AsyncClient) -> None:
            answers[worker].append(await client.get("/shared"))

        async with anyio.create_task_group() as group:
            for n in range(REQUESTS):
                group.start_soon(shoot, *clients[n % len(clients)])
        # The connections were not replaced meanwhile: each still reaches its worker.
        for worker, client in clients:
            assert await _worker_of(client) == worker
    finally:
        for _, client in clients:
            await client.aclose()
    return answers, set(held)


def test_two_workers_share_one_redis_limit(served: Served) -> None:
    answers, workers = anyio.run(_burst, served.url)

    # Two worker processes of the supervisor served the requests.
    assert workers <= _children(served.process.pid), served.output()[-3000:]
    everything = [response for mine in answers.values() for response in mine]
    assert len(everything) == REQUESTS
    statuses = Counter(response.status_code for response in everything)
    assert statuses == {200: LIMIT, 429: REQUESTS - LIMIT}, f"{statuses}\n{served.output()[-3000:]}"

    # Both workers allowed some, and both refused some: the 50 are one shared count.
    allowed_by = Counter(r.json()["pid"] for r in everything if r.status_code == 200)
    assert set(allowed_by) == workers, allowed_by
    for worker, mine in answers.items():
        assert {r.status_code for r in mine} == {200, 429}, (
            worker,
            Counter(r.status_code for r in mine),
        )

    for response in everything:
        assert response.headers["ratelimit-policy"] == f'"shared";q={LIMIT};w=3600'
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) > 0
            retry = response.headers["ratelimit"]
            assert retry.startswith('"shared";r=0;t='), retry
            assert int(retry.rsplit("t=", 1)[1]) <= int(response.headers["retry-after"])
        else:
            assert response.headers["ratelimit"].startswith('"shared";r=')

    # Each request logged once, by the worker that served it.
    ids = Counter(response.headers["x-request-id"] for response in everything)
    assert set(ids.values()) == {1}
    deadline = time.monotonic() + LOG_TIMEOUT
    while (logged := _logged("/shared", served.output())) != ids:
        assert time.monotonic() < deadline, f"logged {sum(logged.values())} of {REQUESTS}"
        time.sleep(0.05)

    # SIGTERM to the supervisor stops it and both workers.
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=STOP_TIMEOUT) == 0
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(_exists(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers left running: {workers}"
        time.sleep(0.05)
