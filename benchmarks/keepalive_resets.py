"""Keep-alive connections reset after an app exception: the bare app, nine pass-through
layers, and the asgikit stack, under uvicorn, in one interleaved run.

python -m benchmarks.keepalive_resets [--rounds 5] [--requests 1000]

uvicorn closes a keep-alive connection when the app raises after its response went out
(Starlette's 500 page, then the re-raise); a client that reused the connection in the
meantime sees its next request fail. How often depends on how soon the exception reaches
the server. Each round sends ``--requests`` requests over 16 connections, half of them to
a handler that raises, to each of three servers (httptools, loopback, each stopped by
its PID), and counts the client's transport errors.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import httpx

from benchmarks.harness import environment
from benchmarks.processes import HOST, free_port, stop, wait_until_accepting

__all__ = ["APP", "CONFIG", "main", "resets"]

CONNECTIONS = 16

APP = """\
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


def ok(request):
    return PlainTextResponse("ok")


def fail(request):
    raise RuntimeError("the handler failed")


app = Starlette(routes=[Route("/", ok), Route("/fail", fail)])


class PassThrough:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


layered = app
for _ in range(9):
    layered = PassThrough(layered)
"""

CONFIG = """\
app = "keepalive_app:app"

[logging]
format = "json"

[telemetry]
service_name = "keepalive"
traces = "none"

[[middleware]]
use = "proxy_headers"

[[middleware]]
use = "request_id"

[[middleware]]
use = "access_log"

[[middleware]]
use = "tracing"

[[middleware]]
use = "cors"
allow_origins = ["https://app.example.com"]

[[middleware]]
use = "timeout"

[[middleware]]
use = "compression"
"""

CASES = {
    "bare Starlette": ["keepalive_app:app"],
    "9 pass-through layers": ["keepalive_app:layered"],
    "asgikit stack": ["--factory", "asgikit:app_from_env"],
}


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def resets(url: str, requests: int) -> int:
    """Send *requests* (every other one to ``/fail``); the transport errors seen."""
    errors = 0
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    gate = asyncio.Semaphore(CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10.0) as client:

        async def one(number: int) -> None:
            nonlocal errors
            async with gate:
                try:
                    await client.get("/fail" if number % 2 else "/")
                except httpx.TransportError:
                    errors += 1

        await asyncio.gather(*(one(number) for number in range(requests)))
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.keepalive_resets")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        here = Path(directory)
        (here / "keepalive_app.py").write_text(APP, encoding="utf-8")
        (here / "asgikit.toml").write_text(CONFIG, encoding="utf-8")
        env = {**os.environ, "ASGIKIT_CONFIG": str(here / "asgikit.toml"), "PYTHONPATH": str(here)}
        servers: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
        try:
            for name, target in CASES.items():
                port, log = free_port(), here / f"{len(servers)}.log"
                command = [sys.executable, "-m", "uvicorn", *target, "--host", HOST]
                command += ["--port", str(port), "--http", "httptools", "--no-access-log"]
                with log.open("wb") as out:
                    process = subprocess.Popen(command, cwd=here, env=env, stdout=out, stderr=out)
                servers[name] = (process, port, log)
                wait_until_accepting(process, port, functools.partial(_tail, log))
            found: dict[str, list[int]] = {name: [] for name in servers}
            for _ in range(args.rounds):  # interleaved: each round visits every server
                for name, (_, port, _) in servers.items():
                    found[name].append(asyncio.run(resets(f"http://{HOST}:{port}", args.requests)))
        finally:
            for process, _, _ in servers.values():
                stop(process)
    print(f"### Keep-alive resets after an app exception, per {args.requests:,} requests\n")
    print("| Server app | Resets per round |\n| --- | --- |")
    for name, counts in found.items():
        print(f"| {name} | {', '.join(map(str, counts))} |")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"\n{environment()}; load average {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
