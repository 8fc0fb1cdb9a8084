"""DevInspectorMiddleware's cost per request that does not ask for its page, beside the
bare app, a pass-through layer and AccessLogMiddleware.

python -m benchmarks.bench_inspector [--rounds 15] [--min-time 0.05]

Six cases in one interleaved run, per scenario:

- the bare app;
- a pass-through layer (``await self.app(scope, receive, send)``): the least any
  middleware costs;
- asgikit's ``AccessLogMiddleware`` with its defaults, writing JSON lines (through
  ``asgikit.logging.configure(format="json")``) to a null sink: the anchor, since the
  inspector records about what a log line holds;
- ``DevInspectorMiddleware`` with its defaults: log lines captured (its hooks are in
  place after the first request), no tracer provider (the global one is not set);
- the same with ``capture_logs=False``;
- the same with an SDK ``TracerProvider`` (its span processor added; the bare app opens
  no spans, so this is the price of watching for them).

The inspector keeps references and decodes nothing while the request runs; the
redaction and the JSON are paid when the page asks. Ratios are to the access log; the
summary line gives each case's added cost in µs over the bare app, beside the
pass-through layer's and the access log's.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from opentelemetry.sdk.trace import TracerProvider

from asgikit.middleware.access_log import AccessLogMiddleware
from asgikit.middleware.inspector import DevInspectorMiddleware
from asgikit.types import ASGIApp
from benchmarks.bench_access_log import _BROWSER, json_logs_to_nowhere
from benchmarks.harness import PassThrough, Request, added_cost, bare_app, report, run_asgi

__all__ = ["main"]

BARE = "bare app"
FLOOR = "floor: pass-through layer"
ANCHOR = "asgikit AccessLogMiddleware"
OURS = "asgikit DevInspectorMiddleware"
QUIET = "asgikit DevInspectorMiddleware, capture_logs=False"
TRACED = "asgikit DevInspectorMiddleware, SDK tracer provider"

SCENARIOS = {
    "GET, browser headers": Request(path="/items/42", headers=_BROWSER),
    "GET with a query (one sensitive parameter)": Request(
        path="/search?q=shoes&page=2&access_token=abc123def456", headers=_BROWSER
    ),
}


def apps() -> dict[str, ASGIApp]:
    """The six cases, each around the harness's bare app."""
    return {
        BARE: bare_app,
        FLOOR: PassThrough(bare_app),
        ANCHOR: AccessLogMiddleware(bare_app),
        OURS: DevInspectorMiddleware(bare_app),
        QUIET: DevInspectorMiddleware(bare_app, capture_logs=False),
        TRACED: DevInspectorMiddleware(bare_app, tracer_provider=TracerProvider()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_inspector")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.05)
    args = parser.parse_args(argv)
    with json_logs_to_nowhere():
        cases = apps()
        for title, scenario in SCENARIOS.items():
            results = run_asgi(
                cases,
                baseline=ANCHOR,
                request=scenario,
                rounds=args.rounds,
                min_time=args.min_time,
            )
            print(report(results, f"Development inspector, {title}"))
            floor = added_cost(results, FLOOR, BARE)
            anchor = added_cost(results, ANCHOR, BARE)
            parts = [
                f"{case}: +{added_cost(results, case, BARE):.2f} µs"
                for case in (OURS, QUIET, TRACED)
            ]
            print(
                "Added per-request cost over the bare app (medians): "
                + "; ".join(parts)
                + f"; beside the pass-through layer's +{floor:.2f} µs and the access log's "
                f"+{anchor:.2f} µs\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
