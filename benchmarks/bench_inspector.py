"""DevInspectorMiddleware's cost per request, beside the bare app and AccessLogMiddleware.

python -m benchmarks.bench_inspector [--rounds 15] [--min-time 0.05]

Four cases in one interleaved run, per scenario:

- the bare app;
- asgikit's ``AccessLogMiddleware`` with its defaults, writing JSON lines (through
  ``asgikit.logging.configure(format="json")``) to a null sink: the anchor, since the
  inspector records about what a log line holds;
- ``DevInspectorMiddleware`` with no tracer provider (the global one is not set);
- ``DevInspectorMiddleware`` with an SDK ``TracerProvider`` (its span processor added;
  the bare app opens no spans, so this is the price of watching for them).

The inspector keeps references and decodes nothing while the request runs; the
redaction and the JSON are paid when the page asks. Ratios are to the access log.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from opentelemetry.sdk.trace import TracerProvider

from asgikit.middleware.access_log import AccessLogMiddleware
from asgikit.middleware.inspector import DevInspectorMiddleware
from asgikit.types import ASGIApp
from benchmarks.bench_access_log import _BROWSER, json_logs_to_nowhere
from benchmarks.harness import Request, added_cost, bare_app, report, run_asgi

__all__ = ["main"]

BARE = "bare app"
ANCHOR = "asgikit AccessLogMiddleware"
OURS = "asgikit DevInspectorMiddleware"
TRACED = "asgikit DevInspectorMiddleware, SDK tracer provider"

SCENARIOS = {
    "GET, browser headers": Request(path="/items/42", headers=_BROWSER),
    "GET with a query (one sensitive parameter)": Request(
        path="/search?q=shoes&page=2&access_token=abc123def456", headers=_BROWSER
    ),
}


def apps() -> dict[str, ASGIApp]:
    """The four cases, each around the harness's bare app."""
    return {
        BARE: bare_app,
        ANCHOR: AccessLogMiddleware(bare_app),
        OURS: DevInspectorMiddleware(bare_app),
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
            ours = added_cost(results, OURS, BARE, ANCHOR)
            traced = added_cost(results, TRACED, BARE, ANCHOR)
            print(
                f"Added per-request cost over the bare app: {ours:.2f}x the access log's; "
                f"with an SDK tracer provider: {traced:.2f}x\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
