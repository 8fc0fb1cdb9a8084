"""ConcurrencyLimitMiddleware on the requests it does not act on, beside a pure
pass-through layer.

python -m benchmarks.bench_concurrency_limit [--rounds 31] [--min-time 0.05]

Nothing stands in the way of these requests: the limit is far above the one request in
flight, so each takes a slot (an int increment), calls the app with the original
``receive`` and ``send``, and gives the slot back. That path should cost what any pure
ASGI layer costs, within the run's spread. The cases:

* the bare app, and the bare app under a pure pass-through layer (the baseline: an
  ``async def __call__`` that awaits the app);
* a fixed limit (``max_concurrency=1000``);
* the adaptive limit, the default (two clock reads and a sample per request besides);
* a fixed limit with three rules, the request matching none (the rule lookup);
* an excluded path (``exclude_paths=["/health"]``, GET /health).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import structlog

from asgikit.middleware.concurrency_limit import ConcurrencyLimitMiddleware
from asgikit.types import ASGIApp
from benchmarks.harness import PassThrough, Request, added_cost, bare_app, report, run_asgi

__all__ = ["BARE", "PASS_THROUGH", "SCENARIOS", "PassThrough", "apps", "main"]

BARE = "bare app"
PASS_THROUGH = "pure ASGI pass-through"
RULES: list[dict[str, object]] = [
    {"name": "reports", "path": "/reports", "max_concurrency": 4},
    {"name": "exports", "route": "/exports/{id:int}", "max_concurrency": 2},
    {"name": "uploads", "path": "/uploads", "methods": ["POST"], "max_concurrency": 8},
]


def apps() -> dict[str, ASGIApp]:
    """Every case, by name."""
    return {
        BARE: bare_app,
        PASS_THROUGH: PassThrough(bare_app),
        "fixed limit": ConcurrencyLimitMiddleware(bare_app, max_concurrency=1000),
        "adaptive limit (default)": ConcurrencyLimitMiddleware(bare_app),
        "fixed limit, 3 rules, none matching": ConcurrencyLimitMiddleware(
            bare_app,
            max_concurrency=1000,
            rules=RULES,  # type: ignore[arg-type]
        ),
        "excluded path": ConcurrencyLimitMiddleware(bare_app, exclude_paths=["/health"]),
    }


SCENARIOS: dict[str, Request] = {
    "GET /items/42, under the limit": Request(path="/items/42"),
    "GET /health": Request(path="/health"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_concurrency_limit")
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--min-time", type=float, default=0.05)
    args = parser.parse_args(argv)
    # The adaptive limit logs its changes at debug level: not in the report.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    for title, scenario in SCENARIOS.items():
        cases = apps()
        if title == "GET /health":
            cases = {name: cases[name] for name in (BARE, PASS_THROUGH, "excluded path")}
        else:
            del cases["excluded path"]
        results = run_asgi(
            cases,
            baseline=PASS_THROUGH,
            request=scenario,
            rounds=args.rounds,
            min_time=args.min_time,
        )
        print(report(results, f"Concurrency limit, {title}"))
        spread = next(r for r in results if r.case == PASS_THROUGH)
        print(f"The pass-through layer's p10-p90: {spread.p10_us:.3f}-{spread.p90_us:.3f} µs")
        for result in results:
            if result.case not in (BARE, PASS_THROUGH):
                cost = added_cost(results, result.case, PASS_THROUGH)
                print(f"{result.case}: {cost:+.3f} µs over the pass-through layer")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
