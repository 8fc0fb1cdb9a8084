"""RateLimitMiddleware beside slowapi's ASGI middleware, the one users pick for the job.

python -m benchmarks.bench_rate_limit [--rounds 15] [--min-time 0.05] [--redis-requests 2000]

Every case is the same Starlette app (one route answering "Hello, world!"), bare or with
one rate-limit middleware added by ``add_middleware``: slowapi's
``SlowAPIASGIMiddleware`` (a ``Limiter`` keyed by the remote address, ``memory://``
storage, headers enabled) and asgikit's ``RateLimitMiddleware`` (``memory://``, headers
on by default). Two scenarios, each measured in one interleaved run:

* allowed: a limit so high that no request is ever rejected;
* rejected: a limit of one per hour, spent by the harness's first call, so every timed
  request is answered 429 by the middleware.

The figure that matters for allowed requests is the added per-request cost over the
bare app, ours vs slowapi's: (ours - bare) / (slowapi - bare); the goal is 0.1 or less.
For rejected requests the app is never called, so the whole cost of a 429 is compared.

With Redis (a redis-server started on a free loopback port, stopped afterwards), the
round trips per request are counted, by the store and by Redis's own command stats; and
the same FastAPI app is timed bare, under slowapi (``storage_uri`` on that Redis: the
``limits`` library, synchronous redis-py), under fastapi-limiter (a ``RateLimiter``
dependency over pyrate-limiter's ``RedisBucket``, asyncio redis-py; measured only when
fastapi-limiter is installed) and under asgikit's middleware, all on the same Redis with
a limit never reached: added µs per request over the bare app, and Redis commands per
request from ``INFO commandstats``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.middleware import SlowAPIASGIMiddleware
from slowapi.util import get_remote_address
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgikit.middleware.rate_limit import RateLimitMiddleware
from asgikit.testing import request
from asgikit.types import ASGIApp
from benchmarks.harness import Request, Result, added_cost, report, run_asgi
from benchmarks.processes import free_port

__all__ = ["count_redis_round_trips", "main", "starlette_apps"]

ANCHOR = "slowapi SlowAPIASGIMiddleware"
OURS = "asgikit RateLimitMiddleware"
BARE = "bare Starlette app"

REJECTING = "1/hour"
SCENARIOS = {
    "allowed requests (limit never reached)": "1000000000/minute",
    "rejected requests (429 from the middleware)": REJECTING,
}


async def _hello(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse("Hello, world!")


def _starlette() -> Starlette:
    return Starlette(routes=[Route("/", _hello)])


def starlette_apps(rate: str) -> dict[str, ASGIApp]:
    """The bare Starlette app, and one under slowapi's and one under asgikit's middleware."""
    slow = _starlette()
    limiter = Limiter(
        key_func=get_remote_address,
        default_limits=[rate],
        storage_uri="memory://",
        headers_enabled=True,
    )
    slow.state.limiter = limiter
    slow.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    slow.add_middleware(SlowAPIASGIMiddleware)
    ours = _starlette()
    ours.add_middleware(RateLimitMiddleware, rate=rate)
    return {BARE: _starlette(), ANCHOR: slow, OURS: ours}


def added(results: Sequence[Result]) -> tuple[float, float, float]:
    """Ours and slowapi's added µs per request over the bare app, and their ratio."""
    ours = added_cost(results, OURS, BARE)
    theirs = added_cost(results, ANCHOR, BARE)
    return ours, theirs, ours / theirs


# ---- Redis ------------------------------------------------------------------------------


@contextlib.contextmanager
def _redis_server(binary: str) -> Iterator[int]:
    """A throw-away redis-server on a free loopback port, stopped by PID."""
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [
                *(binary, "--port", str(port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)
            yield port
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _redis_run(url: str, requests: int) -> dict[str, Any]:
    import redis.asyncio

    rules: list[Any] = [
        {"name": "global", "rate": "1000000000/minute"},
        {"name": "api", "rate": "1000000000/minute", "key": "header:x-api-key"},
    ]
    middleware = RateLimitMiddleware(_starlette(), rules=rules, storage=url, timeout=1.0)
    inspect = redis.asyncio.Redis.from_url(url)
    try:
        await request(middleware)  # loads the script (NOSCRIPT, then EVAL) once
        await inspect.config_resetstat()
        before = middleware.store.round_trips
        started = time.perf_counter()
        for _ in range(requests):
            response = await request(middleware, headers={"x-api-key": "k"})
            assert response.status == 200
        elapsed = time.perf_counter() - started
        stats = await inspect.info("commandstats")
    finally:
        await inspect.aclose()
        await middleware.store.close()
    calls = sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )
    return {
        "requests": requests,
        "store_round_trips": middleware.store.round_trips - before,
        "redis_script_calls": calls,
        "mean_us": elapsed / requests * 1e6,
    }


def count_redis_round_trips(requests: int) -> dict[str, Any] | None:
    """Round trips to a fresh redis-server for *requests* two-rule requests (None: no
    redis-server installed)."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with _redis_server(binary) as port:
        return asyncio.run(_redis_run(f"redis://127.0.0.1:{port}/0", requests))


# ---- the same Redis, beside slowapi and fastapi-limiter -----------------------------------

NEVER = 1_000_000_000  # a limit per minute that no run reaches
FASTAPI_BARE = "bare FastAPI app"
FASTAPI_SLOWAPI = "slowapi (limits, sync redis-py)"
FASTAPI_LIMITER = "fastapi-limiter (pyrate-limiter RedisBucket)"
FASTAPI_OURS = "asgikit RateLimitMiddleware (redis://)"


def _fastapi(dependencies: Sequence[Any] = ()) -> Any:
    from fastapi import FastAPI

    app = FastAPI(dependencies=list(dependencies))
    app.add_api_route("/", _hello, methods=["GET"])
    return app


class _Cases:
    """The FastAPI app bare and under each limiter, all on the Redis at *port*, made
    inside the running event loop (pyrate-limiter's ``Limiter`` schedules a task there),
    and closed in it: every client and connection the run opened."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.apps: dict[str, ASGIApp] = {}
        self._closers: list[Callable[[], Any]] = []

    def build(self) -> dict[str, ASGIApp]:
        url = f"redis://127.0.0.1:{self.port}/0"
        slow = _fastapi()
        limiter = Limiter(
            key_func=get_remote_address,
            default_limits=[f"{NEVER}/minute"],
            storage_uri=url,
            headers_enabled=True,
        )
        slow.state.limiter = limiter
        slow.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
        slow.add_middleware(SlowAPIASGIMiddleware)
        ours = RateLimitMiddleware(_fastapi(), rate=f"{NEVER}/minute", storage=url, timeout=1.0)
        self._closers += [limiter.reset, ours.store.close]
        self.apps = {FASTAPI_BARE: _fastapi(), FASTAPI_SLOWAPI: slow, FASTAPI_OURS: ours}
        limited = self._fastapi_limiter()
        if limited is not None:
            self.apps[FASTAPI_LIMITER] = limited
        return self.apps

    def _fastapi_limiter(self) -> ASGIApp | None:
        try:  # not a dependency of the project: imported by name when present
            depends = importlib.import_module("fastapi_limiter.depends")
            pyrate = importlib.import_module("pyrate_limiter")
        except ImportError:
            return None
        import redis
        import redis.asyncio
        from fastapi import Depends

        with contextlib.closing(redis.Redis(port=self.port)) as sync:
            script = sync.script_load(pyrate.buckets.redis_bucket.LuaScript.PUT_ITEM)
        client = redis.asyncio.Redis(port=self.port)
        bucket = pyrate.RedisBucket(
            [pyrate.Rate(NEVER, pyrate.Duration.MINUTE)], client, "b", script
        )
        limiter = pyrate.Limiter(bucket)
        self._closers += [limiter.close, client.aclose]
        app: ASGIApp = _fastapi([Depends(depends.RateLimiter(limiter=limiter))])
        return app

    async def close(self) -> None:
        for closer in self._closers:
            result = closer()
            if asyncio.iscoroutine(result):
                await result


def _monitor(port: int, seen: list[tuple[str, str]], ready: threading.Event) -> None:
    """Append ``(client_type, command)`` of every command Redis runs (MONITOR) to *seen*,
    until an ``ECHO monitor-stop``; commands a Lua script runs have client_type 'lua'."""
    import redis

    with (
        contextlib.closing(redis.Redis(port=port)) as client,
        client.monitor() as monitor,  # type: ignore[no-untyped-call]
    ):
        ready.set()
        for command in monitor.listen():
            seen.append((str(command.get("client_type")), str(command["command"])))
            if command["command"] == "ECHO monitor-stop":
                return


async def _time_cases(apps: dict[str, ASGIApp], rounds: int, calls: int) -> dict[str, float]:
    """Median µs per request of each app over *rounds* interleaved rounds of *calls*."""
    for app in apps.values():
        await request(app)  # connections, scripts: first-use costs out of the timing
    samples: dict[str, list[float]] = {name: [] for name in apps}
    order = list(apps)
    for round_number in range(rounds):
        random.Random(round_number).shuffle(order)
        for name in order:
            app = apps[name]
            started = time.perf_counter()
            for _ in range(calls):
                await request(app)
            samples[name].append((time.perf_counter() - started) / calls * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


async def _round_trips(apps: dict[str, ASGIApp], port: int, count: int) -> dict[str, float]:
    """Per app: what it sends Redis per request (a script once, not what it runs inside)."""
    import redis.asyncio

    seen: list[tuple[str, str]] = []
    ready = threading.Event()
    watcher = threading.Thread(target=_monitor, args=(port, seen, ready), daemon=True)
    watcher.start()
    ready.wait(10)
    inspect = redis.asyncio.Redis(port=port)
    try:
        for name, app in apps.items():
            await inspect.echo(f"start {name}")
            for _ in range(count):
                await request(app)
            await inspect.echo(f"end {name}")
        await inspect.echo("monitor-stop")
    finally:
        await inspect.aclose()
    watcher.join(30)
    per_request: dict[str, float] = {}
    for name in apps:
        start = seen.index(("tcp", f"ECHO start {name}"))
        end = seen.index(("tcp", f"ECHO end {name}"))
        sent = [command for kind, command in seen[start + 1 : end] if kind != "lua"]
        per_request[name] = len(sent) / count
    return per_request


async def _compare(port: int, rounds: int, calls: int) -> tuple[dict[str, float], ...]:
    cases = _Cases(port)
    apps = cases.build()
    try:
        return await _time_cases(apps, rounds, calls), await _round_trips(apps, port, calls)
    finally:
        await cases.close()


def compare_on_redis(rounds: int, calls: int) -> str | None:
    """The comparison on one fresh redis-server, as markdown (None: no redis-server)."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with _redis_server(binary) as port:
        timed, trips = asyncio.run(_compare(port, rounds, calls))
    bare = timed[FASTAPI_BARE]
    lines = [
        f"### Rate limit on one local Redis, allowed requests ({rounds} rounds of {calls})",
        "",
        "| Case | median µs | added over the bare app, µs | round trips per request |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, median in timed.items():
        added_us = "" if name == FASTAPI_BARE else f"{median - bare:+.1f}"
        lines.append(f"| {name} | {median:.1f} | {added_us} | {trips[name]:.2f} |")
    if FASTAPI_LIMITER not in timed:
        lines.append("\nfastapi-limiter is not installed: not measured.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_rate_limit")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.05)
    parser.add_argument("--redis-requests", type=int, default=2000)
    args = parser.parse_args(argv)
    for title, rate in SCENARIOS.items():
        results = run_asgi(
            starlette_apps(rate),
            baseline=ANCHOR,
            request=Request(),
            rounds=args.rounds,
            min_time=args.min_time,
        )
        print(report(results, f"Rate limit, memory storage, {title}"))
        if rate == REJECTING:
            # The app is never called: compare what a rejection costs, whole.
            by_case = {r.case: r.median_us for r in results}
            print(
                f"Cost of a rejected request: ours {by_case[OURS]:.3f} µs, slowapi "
                f"{by_case[ANCHOR]:.3f} µs: {by_case[OURS] / by_case[ANCHOR]:.3f}x\n"
            )
            continue
        ours, theirs, ratio = added(results)
        print(
            f"Added per-request cost over the bare app: ours {ours:+.3f} µs, "
            f"slowapi {theirs:+.3f} µs: {ratio:.3f}x (goal <= 0.1)\n"
        )
    compared = compare_on_redis(args.rounds, max(1, args.redis_requests // 10))
    print(compared or "Redis: redis-server is not installed; no comparison.")
    counted = count_redis_round_trips(args.redis_requests)
    if counted is None:
        print("Redis: redis-server is not installed; round trips not counted.")
    else:
        per_request = counted["redis_script_calls"] / counted["requests"]
        print(
            f"Redis, two rules per request, {counted['requests']} requests: "
            f"{counted['store_round_trips']} store round trips, "
            f"{counted['redis_script_calls']} script calls seen by Redis "
            f"({per_request:.2f} per request); {counted['mean_us']:.0f} µs per request."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
