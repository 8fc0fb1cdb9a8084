"""A bounded overload run: latency of an app whose latency grows with concurrency, with
and without ConcurrencyLimitMiddleware, under uvicorn and hypercorn, beside uvicorn's own
``--limit-concurrency``.

python -m benchmarks.overload [--seconds 4] [--rate-factor 2]

The app is ``tests.e2e.overload_app`` (``KNEE`` workers, ``SERVICE`` seconds each: it
serves ``KNEE / SERVICE`` requests a second, and past ``KNEE`` in flight the excess
queues inside it). Per server, one process serves ``limited`` (the middleware with its
defaults; ``/unlimited`` excluded from it), and the run measures, in order:

1. **unloaded**: requests two at a time (below the knee): the latency to keep;
2. **no limit**: open-loop arrivals at ``rate-factor`` times the capacity for
   ``seconds``, to ``/unlimited`` (the app alone), until every answer came back;
3. **adaptive limit**: the same arrivals to ``/`` after one second of warm-up (the
   first min RTT window and the first updates, left out of the figures).

Then uvicorn serves ``bare`` with ``--limit-concurrency`` (connections and tasks; it
answers 503 without ``Retry-After``) for step 3's arrivals. Open loop: arrivals do not
wait for answers, as users do not, so an overloaded app's backlog shows. Everything
runs on 127.0.0.1, each server is stopped by its PID, the whole run is bounded to
about a minute, and the client is httpx (async) in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
import httpx

from benchmarks.harness import environment
from benchmarks.processes import HOST, free_port, stop, wait_until_accepting

__all__ = [
    "COMMANDS",
    "Outcome",
    "Summary",
    "main",
    "open_loop",
    "serve",
    "steady",
    "summarise",
]

ROOT: Final = Path(__file__).resolve().parents[1]
APP: Final = "tests.e2e.overload_app"
REQUEST_TIMEOUT: Final = 30.0


def _uvicorn(app: str, *extra: str) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return [
            *(sys.executable, "-m", "uvicorn", f"{APP}:{app}", "--host", HOST),
            *("--port", str(port), "--app-dir", str(ROOT), "--no-access-log"),
            *("--log-level", "warning", "--timeout-graceful-shutdown", "1", *extra),
        ]

    return command


def _hypercorn(app: str) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return [
            *(sys.executable, "-m", "hypercorn", f"{APP}:{app}"),
            *("--bind", f"{HOST}:{port}", "--worker-class", "asyncio"),
        ]

    return command


COMMANDS: Final[dict[str, Callable[[int], list[str]]]] = {
    "uvicorn": _uvicorn("limited"),
    "hypercorn": _hypercorn("limited"),
}
"""The servers, each serving ``limited``: the command given a port."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request: its status (None: no answer), latency and ``Retry-After``."""

    status: int | None
    latency: float
    retry_after: str | None = None


@dataclass(frozen=True, slots=True)
class Summary:
    """Latencies in milliseconds; ``None`` where there was nothing to measure."""

    requests: int
    ok: int
    shed: int
    failed: int
    ok_p50: float | None
    ok_p99: float | None
    shed_p50: float | None
    retry_after: bool  # every 503 carried Retry-After


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1] * 1000.0


def summarise(outcomes: Sequence[Outcome]) -> Summary:
    ok = [o.latency for o in outcomes if o.status == 200]
    shed = [o for o in outcomes if o.status == 503]
    return Summary(
        requests=len(outcomes),
        ok=len(ok),
        shed=len(shed),
        failed=len(outcomes) - len(ok) - len(shed),
        ok_p50=_quantile(ok, 0.5),
        ok_p99=_quantile(ok, 0.99),
        shed_p50=_quantile([o.latency for o in shed], 0.5),
        retry_after=bool(shed) and all(o.retry_after for o in shed),
    )


async def _one(client: httpx.AsyncClient, url: str, into: list[Outcome]) -> None:
    begin = time.perf_counter()
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        into.append(Outcome(None, time.perf_counter() - begin))
        return
    latency = time.perf_counter() - begin
    into.append(Outcome(response.status_code, latency, response.headers.get("retry-after")))


def _client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    return httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits, trust_env=False)


async def open_loop(url: str, rate: float, seconds: float) -> list[Outcome]:
    """Requests to *url* arriving every ``1/rate`` seconds for *seconds*, each on its
    own (none waits for another's answer); returns once every one is answered."""
    outcomes: list[Outcome] = []
    async with _client() as client, anyio.create_task_group() as tasks:
        begin = anyio.current_time()
        for index in range(round(rate * seconds)):
            await anyio.sleep_until(begin + index / rate)
            tasks.start_soon(_one, client, url, outcomes)
    return outcomes


async def steady(url: str, requests: int, concurrency: int) -> list[Outcome]:
    """*requests* to *url*, *concurrency* at a time (closed loop)."""
    outcomes: list[Outcome] = []
    async with _client() as client:

        async def worker(count: int) -> None:
            for _ in range(count):
                await _one(client, url, outcomes)

        async with anyio.create_task_group() as tasks:
            for _ in range(concurrency):
                tasks.start_soon(worker, requests // concurrency)
    return outcomes


@contextlib.contextmanager
def serve(command: Callable[[int], list[str]], port: int | None = None) -> Iterator[str]:
    """Run the server *command* on *port* (a free one by default) of 127.0.0.1; yield
    its base URL; stop it by its PID whatever happens."""
    port = free_port() if port is None else port
    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory) / "server.log"
        with log.open("wb") as out:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            process = subprocess.Popen(
                command(port), cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
            try:
                wait_until_accepting(process, port, lambda: log.read_text()[-3000:])
                yield f"http://{HOST}:{port}"
            finally:
                stop(process)


async def _server_rows(url: str, rate: float, seconds: float) -> dict[str, Summary]:
    rows = {"unloaded (2 at a time)": summarise(await steady(url + "/", 60, 2))}
    rows["no limit"] = summarise(await open_loop(url + "/unlimited", rate, seconds))
    await open_loop(url + "/", rate, 1.0)  # warm-up: the first min RTT window
    rows["adaptive limit"] = summarise(await open_loop(url + "/", rate, seconds))
    return rows


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def table(results: dict[str, dict[str, Summary]]) -> str:
    lines = [
        "| server | run | requests | 200 | 503 | p50 ms (200) | p99 ms (200) "
        "| p50 ms (503) | Retry-After |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for server, rows in results.items():
        for run, s in rows.items():
            retry = "yes" if s.retry_after else ("no" if s.shed else "-")
            failed = f" ({s.failed} failed)" if s.failed else ""
            lines.append(
                f"| {server} | {run} | {s.requests}{failed} | {s.ok} | {s.shed} "
                f"| {_ms(s.ok_p50)} | {_ms(s.ok_p99)} | {_ms(s.shed_p50)} | {retry} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    app = importlib.import_module(APP)  # by name: the app lives with the tests
    knee, service = int(app.KNEE), float(app.SERVICE)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload")
    parser.add_argument("--seconds", type=float, default=4.0, help="per overload run (1-8)")
    parser.add_argument("--rate-factor", type=float, default=2.0, help="times the capacity")
    args = parser.parse_args(argv)
    seconds = min(8.0, max(1.0, args.seconds))  # bounded: the whole run stays near a minute
    rate = knee / service * min(4.0, max(1.0, args.rate_factor))
    results: dict[str, dict[str, Summary]] = {}
    for name, command in COMMANDS.items():
        with serve(command) as url:
            results[name] = anyio.run(_server_rows, url, rate, seconds)
    limit = 2 * knee
    with serve(_uvicorn("bare", "--limit-concurrency", str(limit))) as url:
        outcomes = anyio.run(open_loop, url + "/", rate, seconds)
        results["uvicorn"][f"--limit-concurrency {limit}"] = summarise(outcomes)
    print(f"#### Overload: {knee} workers x {service * 1000:.0f} ms, {rate:.0f} requests/s\n")
    print(table(results))
    print(
        f"\n_{environment()}; the app serves {knee / service:.0f} requests/s; open-loop "
        f"arrivals at {rate:.0f}/s for {seconds:g} s per run (httpx, async, same machine); "
        "adaptive limit: the middleware's defaults after 1 s of warm-up._"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
