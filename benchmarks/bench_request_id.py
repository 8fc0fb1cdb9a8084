"""RequestIDMiddleware beside asgi-correlation-id, the library users pick for the job.

python -m benchmarks.bench_request_id [--rounds 15] [--min-time 0.05]

Two scenarios: the client sends no id (one is generated), and the client sends a valid
UUID (it is validated and kept). Both middleware echo the id in the response and make it
available to logs (a structlog contextvar here, asgi-correlation-id's own contextvar
there). Besides the ratio to the anchor, the added per-request cost over the bare app is
compared: (ours - bare) / (anchor - bare).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from asgi_correlation_id import CorrelationIdMiddleware

from asgikit.middleware import RequestIDMiddleware
from asgikit.types import ASGIApp
from benchmarks.harness import Request, Result, bare_app, report, run_asgi

__all__ = ["main"]

ANCHOR = "asgi-correlation-id"

SCENARIOS = {
    "no incoming id (generate)": Request(),
    "valid incoming UUID (validate, keep)": Request(
        headers=[
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"asgikit-benchmarks/1"),
            (b"x-request-id", b"0b2d6c2e4a8b4f7e9c1d2e3f4a5b6c7d"),
        ]
    ),
}


def added_cost(results: Sequence[Result]) -> float:
    """Our added per-request cost over the bare app, relative to the anchor's."""
    by_case = {r.case: r.median_us for r in results}
    bare = by_case["bare app"]
    return (by_case["asgikit RequestIDMiddleware"] - bare) / (by_case[ANCHOR] - bare)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_request_id")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.05)
    args = parser.parse_args(argv)
    apps: dict[str, ASGIApp] = {
        "bare app": bare_app,
        ANCHOR: CorrelationIdMiddleware(bare_app),
        "asgikit RequestIDMiddleware": RequestIDMiddleware(bare_app),
    }
    for title, scenario in SCENARIOS.items():
        results = run_asgi(
            apps, baseline=ANCHOR, request=scenario, rounds=args.rounds, min_time=args.min_time
        )
        print(report(results, f"Request id, {title}"))
        print(f"Added per-request cost vs {ANCHOR}: {added_cost(results):.2f}x\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
