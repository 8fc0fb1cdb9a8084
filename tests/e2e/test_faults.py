"""Faults under a real uvicorn serving the full stack: the server keeps serving, and every
request is logged exactly once and its span ended once.

uvicorn (one process, h11) serves tests/e2e/faults_app.py's app through the e2e stack
from a config file with JSON logs; spans go to a file as JSON lines (tests/e2e/stack.py's
``export_spans``). Each test injects one kind of fault with real clients (raw sockets
where the fault is in the client's behaviour, httpx otherwise), then finds each
request's access log line by the ``x-request-id`` it sent and its span by the trace id
of the ``traceparent`` it sent. The Redis outage test runs its own two servers (limits
in a private redis-server it kills and restarts, ``on_backend_error`` "allow" and
"deny"). Every wait is bounded; every process is stopped by PID.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.to_thread
import httpx
import pytest

from tests._redis import RedisServer, needs_redis, private_redis_fixture  # noqa: F401
from tests.e2e.faults_app import (
    CHUNK,
    ENDLESS_CAP,
    MIDBODY_CHUNK,
    config_text,
    connect,
    logged_counts,
    read_body,
    read_response_head,
    request_head,
    server_span,
    trace_headers,
)
from tests.e2e.servers import Running, ServerSpec, start_all, uvicorn_command
from tests.e2e.stack import LIMIT, SPANS_ENV, json_lines, needs

pytest.importorskip("uvicorn", reason="uvicorn is not installed")

TIMEOUT = 10.0
MARGIN = 2.0  # two busy cores
IDLE = 0.5  # request_body_idle: seconds an upload may stall before the 408
UVICORN = ServerSpec("uvicorn-h11", "uvicorn", uvicorn_command("h11", "asyncio"))
ENDED_TWICE = "Calling end() on an ended span"  # the OpenTelemetry SDK's warning


def _server_env(directory: Path, options: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Any:
    def env(spec: ServerSpec) -> dict[str, str]:
        config = directory / f"{spec.name}.toml"
        config.write_text(config_text(options.get(spec.name)), encoding="utf-8")
        return {"ASGIKIT_CONFIG": str(config), SPANS_ENV: str(directory / f"{spec.name}.spans")}

    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """uvicorn serving the stack, with an idle-upload limit; stopped by PID at the end."""
    directory = tmp_path_factory.mktemp("faults")
    options = {UVICORN.name: {"timeout": {"request_body_idle": IDLE}}}
    with start_all([UVICORN], _server_env(directory, options), directory) as running:
        yield running[UVICORN.name]


@pytest.fixture
def client(server: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, trust_env=False) as http:
        yield http


def _still_serving(server: Running, client: httpx.Client) -> None:
    assert server.alive(), server.output()[-3000:]
    assert client.get("/items/1").json() == {"item_id": "1"}
    assert ENDED_TWICE not in server.output()


# ---- a. the client leaves mid-stream -----------------------------------------------------


def test_a_client_leaving_mid_stream_is_logged_once_as_disconnected(
    server: Running, client: httpx.Client
) -> None:
    request_id = "fault-disconnect-0001"
    trace_id, traceparent = trace_headers()
    with connect(server) as sock:
        sock.sendall(request_head("GET", "/endless", {"x-request-id": request_id, **traceparent}))
        status, _, body = read_response_head(sock)
        while body.count(b"chunk ") < 3:
            more = sock.recv(65536)
            assert more, "the stream ended before three chunks"
            body += more
    assert status == 200

    _still_serving(server, client)
    line = server.access_line(request_id)  # exactly one line, and soon: the stream stopped
    assert line["disconnected"] is True
    assert line["http.response.status_code"] == 200
    assert 3 * CHUNK <= line["http.response.body.size"] < ENDLESS_CAP * CHUNK
    assert "error.type" not in line
    span = server_span(server, trace_id)
    assert span["attributes"]["asgikit.disconnected"] is True
    assert span["status"]["status_code"] == "UNSET"  # the client left: not the server's error


# ---- b. slow clients -----------------------------------------------------------------------


def _slow_upload(server: Running) -> tuple[int, bytes]:
    """POST a body in pieces, each pause under the idle limit: the whole body echoes."""
    pieces = [b"piece %02d|" % n for n in range(8)]
    size = sum(map(len, pieces))
    headers = {"content-length": str(size), "content-type": "text/plain"}
    with connect(server) as sock:
        sock.sendall(
            request_head("POST", "/echo", {"x-request-id": "fault-slow-upload", **headers})
        )
        for piece in pieces:
            time.sleep(IDLE / 3)
            sock.sendall(piece)
        status, response_headers, body = read_response_head(sock)
        return status, read_body(sock, response_headers, body)


def _stalled_upload(server: Running) -> tuple[int, dict[str, str], float]:
    """POST part of a body, then nothing: the idle limit answers 408."""
    headers = {"content-length": "1000", "content-type": "text/plain"}
    with connect(server) as sock:
        sock.sendall(
            request_head("POST", "/echo", {"x-request-id": "fault-stalled-upload", **headers})
        )
        sock.sendall(b"only the start of the body")
        begin = time.monotonic()
        status, response_headers, _ = read_response_head(sock)
        return status, response_headers, time.monotonic() - begin


BIG = 8 * 1024 * 1024
CLOCK_SLACK = 0.02


def _slow_reader(server: Running) -> tuple[int, int, bool]:
    """GET 8 MB, read slowly for a second, then the rest.

    Returns the status, the bytes read, and whether the response was logged (so
    complete on the server's side) while the client was still reading slowly.
    """
    with connect(server, receive_buffer=16 * 1024) as sock:
        sock.sendall(request_head("GET", f"/big?size={BIG}", {"x-request-id": "fault-slow-reader"}))
        status, headers, body = read_response_head(sock)
        read = len(body)
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            read += len(sock.recv(16 * 1024))
            time.sleep(0.02)
        logged_early = any(
            line.get("request_id") == "fault-slow-reader" for line in json_lines(server.output())
        )
        while read < int(headers["content-length"]):
            more = sock.recv(1024 * 1024)
            assert more, f"the connection closed after {read} bytes"
            read += len(more)
        return status, read, logged_early


def test_slow_clients_do_not_hold_up_the_others(server: Running, client: httpx.Client) -> None:
    slow: dict[str, Callable[[Running], Any]] = {
        "upload": _slow_upload,
        "stalled": _stalled_upload,
        "reader": _slow_reader,
    }
    latencies: list[float] = []
    with ThreadPoolExecutor(len(slow)) as pool:
        running: dict[str, Future[Any]] = {
            name: pool.submit(job, server) for name, job in slow.items()
        }
        while not all(future.done() for future in running.values()) and len(latencies) < 200:
            begin = time.monotonic()
            assert client.get("/items/3").status_code == 200
            latencies.append(time.monotonic() - begin)
            time.sleep(0.02)
        results = {name: future.result(timeout=TIMEOUT) for name, future in running.items()}
    # Served meanwhile, promptly: no slow client holds the event loop or a worker.
    assert len(latencies) >= 10 and max(latencies) < MARGIN, latencies

    status, echoed = results["upload"]
    assert status == 200 and echoed == b"".join(b"piece %02d|" % n for n in range(8))
    assert server.access_line("fault-slow-upload")["http.request.body.size"] == len(echoed)

    status, headers, waited = results["stalled"]
    assert status == 408 and headers["connection"] == "close"
    # uvloop's clock is the loop iteration's cached time (libuv's uv_now, milliseconds),
    # so a deadline armed late in an iteration fires up to that iteration's length early.
    assert IDLE - CLOCK_SLACK <= waited < IDLE + MARGIN
    line = server.access_line("fault-stalled-upload")
    assert line["http.response.status_code"] == 408 and line["error.type"] == "timeout"

    status, read, logged_early = results["reader"]
    assert status == 200 and read == BIG
    assert not logged_early, "the server finished the response while the client read slowly"
    line = server.access_line("fault-slow-reader")
    assert line["http.response.body.size"] == BIG and "disconnected" not in line
    _still_serving(server, client)


# ---- c. Redis stopped and restarted under load -------------------------------------------

MODES = ("allow", "deny")
# Per server, the client whose bucket the test exhausts (both servers share one Redis).
PROBE = {"allow": "203.0.113.1", "deny": "203.0.113.2"}
OUTAGE = 1.5  # seconds Redis stays down
RECOVERY_TIMEOUT = 10.0
LOAD_CAP = 3000  # requests per load task at most


class Record(NamedTuple):
    """One request of the load: its server, its phase at both ends, what it got."""

    mode: str
    began: str
    ended: str
    path: str
    status: int
    request_id: str


class Load:
    """Requests in flight through the outage's phases, each with its phase at both ends."""

    def __init__(self) -> None:
        self.phase = "healthy"
        self.records: list[Record] = []
        self.running = True

    async def run(self, mode: str, client: httpx.AsyncClient, task: int) -> None:
        for n in range(LOAD_CAP):
            if not self.running:
                return
            path = "/limited" if n % 2 else f"/items/{n}"
            address = f"198.51.{task}.{n % 250 + 1}"
            began = self.phase
            response = await client.get(path, headers={"x-forwarded-for": address})
            status, request_id = response.status_code, response.headers["x-request-id"]
            self.records.append(Record(mode, began, self.phase, path, status, request_id))
            await anyio.sleep(0.005)

    def statuses(self, mode: str, phase: str, path: str) -> Counter[int]:
        """The statuses of requests to ``path`` that began and ended in ``phase``."""
        return Counter(
            r.status
            for r in self.records
            if (r.mode, r.began, r.ended, r.path) == (mode, phase, phase, path)
        )


async def _probe(mode: str, client: httpx.AsyncClient) -> int:
    response = await client.get("/limited", headers={"x-forwarded-for": PROBE[mode]})
    return response.status_code


async def _outage(
    servers: Mapping[str, Running], redis: RedisServer
) -> tuple[Load, dict[str, Any]]:
    load = Load()
    seen: dict[str, Any] = {}
    clients = {
        mode: httpx.AsyncClient(base_url=servers[mode].url, timeout=TIMEOUT, trust_env=False)
        for mode in MODES
    }
    try:
        async with anyio.create_task_group() as group:
            for number, mode in enumerate(MODES):
                for task in (2 * number, 2 * number + 1):
                    group.start_soon(load.run, mode, clients[mode], task)
            # Healthy: the probe's bucket runs dry.
            for mode in MODES:
                seen[f"{mode} healthy"] = [
                    await _probe(mode, clients[mode]) for _ in range(LIMIT + 1)
                ]
            await anyio.sleep(0.3)

            load.phase = "down"
            redis.kill()
            load.phase = "outage"
            await anyio.sleep(OUTAGE / 2)
            for mode in MODES:
                seen[f"{mode} outage"] = [
                    await _probe(mode, clients[mode]) for _ in range(LIMIT + 1)
                ]
            await anyio.sleep(OUTAGE / 2)

            load.phase = "restarting"
            await anyio.to_thread.run_sync(redis.restart)
            load.phase = "recovered"
            # Limits resume once the store tries Redis again: the probe's (new) bucket
            # runs dry again.
            for mode in MODES:
                answers: list[int] = []
                deadline = time.monotonic() + RECOVERY_TIMEOUT
                while 429 not in answers[-1:] and time.monotonic() < deadline:
                    answers.append(await _probe(mode, clients[mode]))
                    await anyio.sleep(0.05)
                seen[f"{mode} recovered"] = answers
            load.running = False
    finally:
        for client in clients.values():
            await client.aclose()
    return load, seen


@pytest.fixture
def limited_servers(private_redis: RedisServer, tmp_path: Path) -> Iterator[dict[str, Running]]:
    """Two uvicorns whose limits live in ``private_redis``: "allow" and "deny" on errors."""
    needs("rate_limit")
    specs = [ServerSpec(mode, UVICORN.module, UVICORN.command) for mode in MODES]
    options = {
        mode: {
            "rate_limit": {
                "storage": private_redis.url,
                "on_backend_error": mode,
                "timeout": 1.0,  # generous: only the outage should fail the store
                "log_interval": 60.0,
            }
        }
        for mode in MODES
    }
    with start_all(specs, _server_env(tmp_path, options), tmp_path) as running:
        yield running


@needs_redis
def test_redis_stopped_and_restarted_under_load(
    limited_servers: dict[str, Running], private_redis: RedisServer
) -> None:
    load, seen = anyio.run(_outage, limited_servers, private_redis)

    refused = {"allow": 200, "deny": 503}  # what the exhausted probe gets without Redis
    for mode, server in limited_servers.items():
        assert seen[f"{mode} healthy"] == [200] * LIMIT + [429]
        assert seen[f"{mode} outage"] == [refused[mode]] * (LIMIT + 1)
        recovered = seen[f"{mode} recovered"]
        # Before the store tries Redis again (its cool-down), the outage's answer holds.
        assert recovered[-1] == 429 and set(recovered[:-1]) <= {200, refused[mode]}

        mine = [record for record in load.records if record.mode == mode]
        assert 500 not in {r.status for r in mine}, Counter(r.status for r in mine)
        assert set(load.statuses(mode, "healthy", "/limited")) <= {200, 429}
        assert set(load.statuses(mode, "recovered", "/limited")) <= {200, 429, refused[mode]}
        during = load.statuses(mode, "outage", "/limited")
        assert during.keys() == {refused[mode]} and during.total() >= 10, during
        unlimited = [
            r.status
            for r in mine
            if r.path.startswith("/items/") and r.began == r.ended == "outage"
        ]
        assert unlimited and set(unlimited) == {200}

        # The outage is logged once (per log_interval), not once per failed request.
        errors = [
            line
            for line in json_lines(server.output())
            if line.get("event") == "rate_limit.backend_error"
        ]
        assert len(errors) == 1, errors
        assert errors[0]["on_backend_error"] == mode

        # Every request of the load logged exactly once.
        ids = Counter(record.request_id for record in mine)
        assert set(ids.values()) == {1}
        assert logged_counts(server, ids) == ids


# ---- d. the app raises at random points --------------------------------------------------

KINDS = ("ok", "before", "midbody", "background")
FAULTY_REQUESTS = 40
SEED = 11  # the plan is random, and the same on every run


def _call(
    client: httpx.Client, kind: str, at: int, headers: dict[str, str]
) -> tuple[int, bytes, bool]:
    """One request: the status, the body bytes received, whether the body was complete.

    On its own connection: uvicorn closes the connection after an app error, also after
    a complete response (a background task's), and a request already sent on it then
    fails without a response: the client's race, not the server losing a request.
    """
    path = "/" if kind == "ok" else f"/raise/{kind}"
    body = b""
    # identity: a compressor holds the response start back until it has enough body to
    # decide, so a fault in the first small chunks would still come before the start.
    headers = {**headers, "connection": "close", "accept-encoding": "identity"}
    with client.stream("GET", path, params={"at": at}, headers=headers) as response:
        try:
            for chunk in response.iter_bytes():
                body += chunk
        except httpx.RemoteProtocolError:  # the server cut the body short
            return response.status_code, body, False
    return response.status_code, body, True


def test_an_app_raising_at_random_points(server: Running, client: httpx.Client) -> None:
    rng = random.Random(SEED)
    plan = [
        (f"fault-raise-{n:03d}", rng.choice(KINDS), rng.randint(1, 4), trace_headers())
        for n in range(FAULTY_REQUESTS)
    ]
    assert {kind for _, kind, _, _ in plan} == set(KINDS)
    with ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(
                lambda step: _call(
                    client, step[1], step[2], {"x-request-id": step[0], **step[3][1]}
                ),
                plan,
            )
        )
    _still_serving(server, client)

    ids = Counter(request_id for request_id, _, _, _ in plan)
    assert logged_counts(server, ids) == ids  # nothing lost, nothing twice
    for (request_id, kind, at, (trace_id, _)), (status, body, complete) in zip(
        plan, answers, strict=True
    ):
        line = server.access_line(request_id)
        span = server_span(server, trace_id)
        if kind == "ok":
            assert (status, complete) == (200, True)
            assert "error.type" not in line and span["status"]["status_code"] == "UNSET"
            continue
        if kind == "before":
            assert status == 500 and complete
        elif kind == "midbody":
            # The head went out, then the body stopped after the chunks sent.
            assert status == 200 and not complete and body == MIDBODY_CHUNK * at
        else:
            assert (status, body, complete) == (200, b"sent in full\n", True)
        assert line["http.response.status_code"] == status, line
        assert line["error.type"] == "AppFault", line
        assert span["status"]["status_code"] == "ERROR", span
        assert span["attributes"]["error.type"] == "AppFault"
