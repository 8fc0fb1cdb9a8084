"""The cost of one layer: a pure ASGI pass-through against Starlette's BaseHTTPMiddleware.

python -m benchmarks.bench_kit [--rounds 15] [--min-time 0.05] [--uvloop]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response

from asgikit.types import ASGIApp
from benchmarks.harness import PassThrough, bare_app, report, run_asgi

__all__ = ["CASES", "BaseHTTPPassThrough", "PassThrough", "main"]


class BaseHTTPPassThrough(BaseHTTPMiddleware):
    """The anchor the project argues against: the same nothing, as BaseHTTPMiddleware."""

    async def dispatch(
        self, request: StarletteRequest, call_next: RequestResponseEndpoint
    ) -> Response:
        return await call_next(request)


CASES: dict[str, ASGIApp] = {
    "bare app": bare_app,
    "pure ASGI pass-through": PassThrough(bare_app),
    "BaseHTTPMiddleware pass-through": BaseHTTPPassThrough(bare_app),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and print the report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_kit", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per case per round")
    parser.add_argument("--uvloop", action="store_true", help="run the event loop on uvloop")
    args = parser.parse_args(argv)
    results = run_asgi(
        CASES,
        baseline="bare app",
        rounds=args.rounds,
        min_time=args.min_time,
        use_uvloop=args.uvloop,
    )
    loop = "uvloop" if args.uvloop else "asyncio"
    print(report(results, f"One middleware layer, GET / in process ({loop})"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
