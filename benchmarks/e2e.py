"""End-to-end runner: each case served by uvicorn on loopback and loaded by wrk, interleaved.

    python -m benchmarks.e2e --case bare=benchmarks.apps:bare \\
        --case gzip=benchmarks.apps:starlette_gzip --duration 5 --rounds 3

Every round starts a fresh server per case (round-robin over the cases), so drift hits
every case alike; the figures are medians over rounds and req/s ratios to the first case.
Only 127.0.0.1 is ever targeted. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from benchmarks.harness import BenchmarkError, environment
from benchmarks.processes import HOST, free_port, stop, wait_until_accepting

__all__ = ["Case", "CaseSummary", "Options", "WrkResult", "main", "parse_args", "parse_wrk"]

MAX_DURATION = 60
MAX_ROUNDS = 10
MAX_CONNECTIONS = 1024
MAX_THREADS = 16
WRK_GRACE = 30  # wrk is killed this many seconds after its duration should have ended

_CASE = re.compile(r"^(?P<name>[^=\s]+)=(?P<target>[A-Za-z_][\w.]*:[A-Za-z_][\w.]*)$")
_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True)
class Case:
    """A named app, as uvicorn's ``module:attr`` import string."""

    name: str
    target: str


@dataclass(frozen=True)
class Options:
    """Validated, bounded command-line options."""

    cases: tuple[Case, ...]
    duration: int
    connections: int
    threads: int
    path: str
    headers: tuple[str, ...]
    rounds: int
    output: Path | None
    app_dir: str


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured; latencies in milliseconds."""

    requests_per_sec: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int


@dataclass(frozen=True)
class CaseSummary:
    """One case over all rounds: medians, and the req/s ratio to the baseline (first) case."""

    case: str
    target: str
    requests_per_sec: float
    latency_p50_ms: float
    latency_p99_ms: float
    ratio: float
    runs: tuple[WrkResult, ...]


def _latency_ms(value: str, unit: str) -> float:
    return float(value) * _TO_MS[unit]


def parse_wrk(output: str) -> WrkResult:
    """Parse ``wrk --latency`` output; latencies in us/ms/s/m/h are normalised to ms."""
    rate = re.search(r"^Requests/sec:\s+([\d.]+)\s*$", output, re.MULTILINE)
    percentiles = {
        int(match["p"]): _latency_ms(match["value"], match["unit"])
        for match in re.finditer(
            r"^\s+(?P<p>\d+)(?:\.0+)?%\s+(?P<value>[\d.]+)(?P<unit>us|ms|s|m|h)\s*$",
            output,
            re.MULTILINE,
        )
    }
    if rate is None or not {50, 90, 99} <= percentiles.keys():
        raise BenchmarkError(f"could not parse wrk output (was --latency given?):\n{output}")
    requests = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    non_2xx = re.search(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", output, re.MULTILINE)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests_per_sec=float(rate[1]),
        latency_p50_ms=percentiles[50],
        latency_p90_ms=percentiles[90],
        latency_p99_ms=percentiles[99],
        requests=int(requests[1]) if requests else 0,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def _bounded(name: str, value: int, low: int, high: int) -> int:
    if low <= value <= high:
        return value
    bounded = min(max(value, low), high)
    print(f"benchmarks.e2e: --{name} {value} is out of range, using {bounded}", file=sys.stderr)
    return bounded


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Parse and bound the command line (duration ≤ 60 s, rounds ≤ 10)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.e2e",
        description="Serve each case with uvicorn on 127.0.0.1 and load it with wrk, "
        "interleaved over rounds; req/s ratios are to the first case.",
    )
    parser.add_argument(
        "--case",
        action="append",
        required=True,
        metavar="NAME=module:attr",
        help="a case; the first one given is the baseline",
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (≤ 60)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--path", default="/", help="request path, query string allowed")
    parser.add_argument(
        "--header", action="append", default=[], metavar="'name: value'", help="sent by wrk"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all cases (≤ 10)")
    parser.add_argument("--output", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--app-dir", default=".", help="directory uvicorn imports apps from")
    args = parser.parse_args(argv)

    cases = []
    for spec in args.case:
        match = _CASE.match(spec)
        if match is None:
            parser.error(f"--case {spec!r}: expected NAME=module:attr")
        cases.append(Case(match["name"], match["target"]))
    names = [case.name for case in cases]
    if len(set(names)) != len(names):
        parser.error(f"case names must be unique: {names}")
    # The path is appended to http://127.0.0.1:PORT, so the host can never change; this only
    # rejects what wrk would mangle.
    if not args.path.startswith("/") or re.search(r"[\s#]", args.path):
        parser.error(f"--path {args.path!r}: must start with '/' and contain no spaces or '#'")
    for header in args.header:
        if ":" not in header or "\r" in header or "\n" in header:
            parser.error(f"--header {header!r}: expected 'name: value' on one line")
    threads = _bounded("threads", args.threads, 1, MAX_THREADS)
    return Options(
        cases=tuple(cases),
        duration=_bounded("duration", args.duration, 1, MAX_DURATION),
        connections=_bounded("connections", args.connections, threads, MAX_CONNECTIONS),
        threads=threads,
        path=args.path,
        headers=tuple(args.header),
        rounds=_bounded("rounds", args.rounds, 1, MAX_ROUNDS),
        output=args.output,
        app_dir=args.app_dir,
    )


@dataclass(frozen=True)
class _Pinning:
    server: tuple[str, ...]
    wrk: tuple[str, ...]
    note: str


def _pinning() -> _Pinning:
    # Server and load generator on separate CPUs, so wrk does not steal the server's time.
    if shutil.which("taskset") is None:
        return _Pinning((), (), "no CPU pinning (taskset not found)")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return _Pinning((), (), "no CPU pinning (fewer than 2 CPUs)")
    server, wrk = str(cpus[0]), str(cpus[1])
    return _Pinning(
        ("taskset", "-c", server), ("taskset", "-c", wrk), f"server on CPU {server}, wrk on {wrk}"
    )


def _read(log: IO[bytes]) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace").strip() or "(no output)"


@contextmanager
def _serve(case: Case, port: int, app_dir: str, pin: Sequence[str]) -> Iterator[None]:
    """Run uvicorn for ``case`` on 127.0.0.1:``port`` until the block ends; always stopped."""
    command = [
        *pin,
        sys.executable,
        "-m",
        "uvicorn",
        case.target,
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        # uvicorn's own X-Forwarded-For handling would run in every case and blur the
        # proxy-headers comparison; the cases bring whatever middleware they measure.
        "--no-proxy-headers",
        "--workers",
        "1",
        "--app-dir",
        app_dir,
    ]
    # A file, not a pipe: a chatty server cannot block on a full pipe nobody reads.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until_accepting(process, port, lambda: _read(log))
            yield
        finally:
            stop(process)


def _run_wrk(port: int, options: Options, pin: Sequence[str]) -> WrkResult:
    url = f"http://{HOST}:{port}{options.path}"
    command = [
        *pin,
        "wrk",
        f"-t{options.threads}",
        f"-c{options.connections}",
        f"-d{options.duration}s",
        "--latency",
        *[arg for header in options.headers for arg in ("-H", header)],
        url,
    ]
    limit = options.duration + WRK_GRACE
    if shutil.which("timeout") is not None:
        command = ["timeout", "--kill-after=5", str(limit), *command]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=limit + 10, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(f"wrk did not finish within {limit + 10} s") from exc
    if completed.returncode != 0:
        raise BenchmarkError(
            f"wrk exited with status {completed.returncode}:\n{completed.stderr}{completed.stdout}"
        )
    return parse_wrk(completed.stdout)


def _measure(case: Case, options: Options, pinning: _Pinning) -> WrkResult:
    port = free_port()
    with _serve(case, port, options.app_dir, pinning.server):
        return _run_wrk(port, options, pinning.wrk)


def _wrk_version() -> str:
    completed = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (completed.stdout or completed.stderr).splitlines()
    return first[0].split(" Copyright")[0].strip() if first else "wrk"


def _summarise(options: Options, runs: dict[str, list[WrkResult]]) -> list[CaseSummary]:
    medians = {
        name: statistics.median(r.requests_per_sec for r in results)
        for name, results in runs.items()
    }
    base = medians[options.cases[0].name]
    return [
        CaseSummary(
            case=case.name,
            target=case.target,
            requests_per_sec=medians[case.name],
            latency_p50_ms=statistics.median(r.latency_p50_ms for r in runs[case.name]),
            latency_p99_ms=statistics.median(r.latency_p99_ms for r in runs[case.name]),
            ratio=medians[case.name] / base if base else float("nan"),
            runs=tuple(runs[case.name]),
        )
        for case in options.cases
    ]


def _context(options: Options, pinning: _Pinning) -> str:
    try:
        uvicorn = f"uvicorn {importlib.metadata.version('uvicorn')}"
    except importlib.metadata.PackageNotFoundError:
        uvicorn = "uvicorn"
    return (
        f"{environment()}; {uvicorn} (1 worker, default loop and http), {_wrk_version()} "
        f"-t{options.threads} -c{options.connections}, GET {options.path} on {HOST}; "
        f"one run, {options.rounds} round{'s' if options.rounds != 1 else ''} of "
        f"{options.duration} s per case, cases "
        "interleaved round-robin (start rotated each round), a fresh server per run; "
        f"{pinning.note}; medians over rounds."
    )


def report(summaries: Sequence[CaseSummary], title: str, context: str) -> str:
    """A markdown table of the summaries (first case is the baseline) and its context line."""
    lines = [
        f"### {title}",
        "",
        "| case | app | req/s | p50 ms | p99 ms | req/s ratio to baseline |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for i, s in enumerate(summaries):
        ratio = "1.00x (baseline)" if i == 0 else f"{s.ratio:.2f}x"
        lines.append(
            f"| {s.case} | `{s.target}` | {s.requests_per_sec:,.0f} | {s.latency_p50_ms:.2f} "
            f"| {s.latency_p99_ms:.2f} | {ratio} |"
        )
    lines += ["", f"_{context}_"]
    # A fast 404 or a pile of socket errors is not a figure; say so beside the table.
    for s in summaries:
        non_2xx = sum(r.non_2xx for r in s.runs)
        errors = sum(r.socket_errors for r in s.runs)
        if non_2xx or errors:
            lines.append(
                f"\n**Warning:** {s.case}: {non_2xx} non-2xx/3xx responses, {errors} socket errors."
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; print the table, optionally write JSON. Returns an exit status."""
    options = parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "benchmarks.e2e: wrk is not installed; install it with `apt-get install wrk`",
            file=sys.stderr,
        )
        return 2
    if importlib.util.find_spec("uvicorn") is None:
        print(
            "benchmarks.e2e: uvicorn is not installed; `pip install 'asgikit[server]'`",
            file=sys.stderr,
        )
        return 2
    pinning = _pinning()
    runs: dict[str, list[WrkResult]] = {case.name: [] for case in options.cases}
    try:
        for round_index in range(options.rounds):
            # Round-robin, starting one case later each round, so no case always runs first.
            start = round_index % len(options.cases)
            for case in options.cases[start:] + options.cases[:start]:
                result = _measure(case, options, pinning)
                runs[case.name].append(result)
                print(
                    f"round {round_index + 1}/{options.rounds} {case.name}: "
                    f"{result.requests_per_sec:,.0f} req/s",
                    file=sys.stderr,
                )
    except BenchmarkError as exc:
        print(f"benchmarks.e2e: {exc}", file=sys.stderr)
        return 1
    summaries = _summarise(options, runs)
    names = ", ".join(case.name for case in options.cases)
    context = _context(options, pinning)
    print(report(summaries, f"End to end: {names} (baseline {options.cases[0].name})", context))
    if options.output is not None:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "baseline": options.cases[0].name,
            "context": context,
            "cases": [asdict(s) for s in summaries],
        }
        options.output.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
