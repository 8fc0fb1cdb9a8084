"""Soak: the full asgikit stack under uvicorn and wrk until N requests, then an audit.

    python -m benchmarks.soak [--requests 100000] [--connections 64] [--max-seconds 300]

Serves ``benchmarks.stacks:asgikit_stack`` (every middleware, canonical order) with one
uvicorn worker on 127.0.0.1, loads ``GET /items/42`` with gzip accepted and a CORS
``Origin`` through wrk in runs of a few seconds until ``--requests`` were answered (or
``--max-seconds`` passed: the run is bounded either way), then stops the server with
SIGTERM and audits what it left behind:

- errors: wrk's socket errors and non-2xx responses (a 429 would show here);
- lost log lines: JSON access-log lines written against requests that entered the
  stack (counted in the server process, reported at lifespan shutdown);
- unfinished spans: spans started against spans ended, after the providers flushed;
- memory: the server's resident set size after warm-up and at the end.

Request rates are not compared here (``benchmarks.e2e`` does that, interleaved); this
answers "does it hold up", and prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from asgikit.logging import HTTP_EVENT
from benchmarks.e2e import Options, _pinning, _read, _run_wrk
from benchmarks.harness import BenchmarkError, environment
from benchmarks.processes import HOST, free_port, stop, wait_until_accepting
from benchmarks.stacks import LOG_ENV, ORIGIN, REPORT_ENV

__all__ = ["main"]

MAX_SECONDS = 900
RUN_SECONDS = 5


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchmarkError(f"no VmRSS for process {pid}")


def _options(connections: int, duration: int) -> Options:
    return Options(
        cases=(),
        duration=duration,
        connections=connections,
        threads=1,
        path="/items/42",
        headers=("Accept-Encoding: gzip", f"Origin: {ORIGIN}"),
        rounds=1,
        output=None,
        app_dir=".",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--max-seconds", type=int, default=300, help=f"≤ {MAX_SECONDS}")
    args = parser.parse_args(argv)
    target = max(1, min(args.requests, 10_000_000))
    limit = max(1, min(args.max_seconds, MAX_SECONDS))
    pinning = _pinning()
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        log_path = Path(work, "access.jsonl")
        report_path = Path(work, "report.json")
        env = {**os.environ, LOG_ENV: str(log_path), REPORT_ENV: str(report_path)}
        command = [
            *pinning.server,
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.stacks:asgikit_stack",
            "--host",
            HOST,
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--no-proxy-headers",
        ]
        with open(Path(work, "server.out"), "w+b") as server_out:
            server = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=server_out,
                stderr=subprocess.STDOUT,
                env=env,
            )
            try:
                wait_until_accepting(server, port, lambda: _read(server_out))
                _run_wrk(port, _options(args.connections, 2), pinning.wrk)  # warm-up
                rss_start = _rss_kib(server.pid)
                answered = errors = non_2xx = 0
                began = time.monotonic()
                while answered < target and time.monotonic() - began < limit:
                    run = _run_wrk(port, _options(args.connections, RUN_SECONDS), pinning.wrk)
                    answered += run.requests
                    errors += run.socket_errors
                    non_2xx += run.non_2xx
                elapsed = time.monotonic() - began
                rss_end = _rss_kib(server.pid)
            finally:
                stop(server)  # SIGTERM: the lifespan shutdown writes the report
        if not report_path.exists():
            output = Path(work, "server.out").read_text(errors="replace")
            raise BenchmarkError(f"the server wrote no report at shutdown:\n{output}")
        counts = json.loads(report_path.read_text())
        lines = [
            json.loads(line)
            for line in log_path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    logged = sum(1 for line in lines if line.get("event") == HTTP_EVENT)
    requests = counts["requests"]
    rows = [
        ("requests answered (wrk, after warm-up)", f"{answered:,} in {elapsed:.0f} s"),
        ("requests into the stack (server, with warm-up)", f"{requests:,}"),
        ("socket errors / non-2xx responses", f"{errors} / {non_2xx}"),
        ("access-log lines (lost)", f"{logged:,} ({requests - logged})"),
        (
            "spans started / ended / exported",
            f"{counts['spans_started']:,} / {counts['spans_ended']:,} / "
            f"{counts['spans_exported']:,}",
        ),
        (
            "resident memory after warm-up → end",
            f"{rss_start / 1024:.1f} MiB → {rss_end / 1024:.1f} MiB "
            f"({(rss_end - rss_start) / 1024:+.1f} MiB)",
        ),
    ]
    print(f"### Soak: the full asgikit stack, {answered:,} requests at -c{args.connections}\n")
    print("| what | figure |\n| --- | --- |")
    for what, figure in rows:
        print(f"| {what} | {figure} |")
    print(
        f"\n_{environment()}; uvicorn (1 worker), wrk -t1 -c{args.connections}, GET /items/42 "
        f"with gzip and a CORS Origin, on {HOST}; {pinning.note}._"
    )
    healthy = (
        errors == 0
        and non_2xx == 0
        and logged == requests
        and counts["spans_started"] == counts["spans_ended"]
    )
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
