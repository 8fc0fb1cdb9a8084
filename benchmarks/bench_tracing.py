"""TracingMiddleware beside opentelemetry-instrumentation-asgi and the SDK floor, in one run.

python -m benchmarks.bench_tracing [--rounds 15] [--min-time 0.05]

Every traced case uses the same SDK set-up: a ``TracerProvider`` whose
``SimpleSpanProcessor`` hands spans to an exporter that drops them, and a
``MeterProvider`` read by an ``InMemoryMetricReader``. Cases:

- the bare app;
- the *SDK floor*: a hand-written ASGI wrapper making only the calls any tracing
  middleware must make: start a span, end it, record one histogram value;
- the SDK floor again with the sampler ``ALWAYS_OFF``, with and without metrics: what
  an unsampled request costs in the SDK's own calls (the span is still started, as
  sampling is the SDK's, and the histogram still recorded: metrics are not sampled);
- the *conventions floor*: the same calls with what the issue's conventions require
  of them, written as plainly as possible: the context extracted from the headers by
  the global propagator, the span made current while the app runs, the span's request
  attributes (method, path, scheme, protocol version, server address and port, client
  address, user agent), the status code and route after the app, and the histogram
  with its attributes (method, scheme, status, route);
- opentelemetry-instrumentation-asgi's ``OpenTelemetryMiddleware``, by default (three
  spans per request: the server span and internal ``send``/``receive`` spans) and with
  ``exclude_spans=["receive", "send"]``;
- asgikit's ``TracingMiddleware`` (traces and metrics), on a sampled request, on an
  unsampled one (sampler ``ALWAYS_OFF``; and, in the second table, ``ParentBased`` with
  a non-sampled ``traceparent``), unsampled with a no-op ``MeterProvider`` (what the
  tracing side alone costs), and on an excluded path.

Added cost = case - bare app. Goals (issue 7): ours <= 1/4 of the contrib middleware's,
<= 1.3x the SDK floor's (reported against both floors); unsampled and excluded within
3 µs of the bare app.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any, cast

from opentelemetry.context import attach, detach
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.propagate import extract
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, set_span_in_context

from asgikit.middleware.tracing import TracingMiddleware
from asgikit.types import ASGIApp, Message, Receive, Scope, Send
from benchmarks.harness import Request, Result, added_cost, bare_app, report, run_asgi

__all__ = ["ConventionsFloor", "DroppingExporter", "SDKFloor", "main"]

BARE = "bare app"
FLOOR = "SDK floor (start span, end span, one histogram)"
CONVENTIONS_FLOOR = "conventions floor (the same calls, with the attributes and context)"
FLOOR_UNSAMPLED = "SDK floor, unsampled (ALWAYS_OFF)"
FLOOR_UNSAMPLED_NO_METRICS = "SDK floor, unsampled, no-op MeterProvider"
CONTRIB = "opentelemetry-instrumentation-asgi"
CONTRIB_LEAN = 'opentelemetry-instrumentation-asgi, exclude_spans=["receive","send"]'
OURS = "asgikit TracingMiddleware"
OURS_UNSAMPLED = "asgikit TracingMiddleware, unsampled (ALWAYS_OFF)"
OURS_UNSAMPLED_NO_METRICS = "asgikit TracingMiddleware, unsampled, no-op MeterProvider"
OURS_EXCLUDED = "asgikit TracingMiddleware, excluded path"
OURS_PARENT = "asgikit TracingMiddleware, unsampled (non-sampled traceparent)"

_HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"asgikit-benchmarks/1"),
    (b"accept", b"*/*"),
]
PLAIN = Request(path="/items/42", headers=_HEADERS)
UNSAMPLED_PARENT = Request(
    path="/items/42",
    headers=[
        *_HEADERS,
        (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
    ],
)


class DroppingExporter(SpanExporter):
    """An exporter that accepts every span and keeps nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _providers(sampler: Any = None) -> tuple[TracerProvider, MeterProvider]:
    tracer_provider = TracerProvider() if sampler is None else TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(SimpleSpanProcessor(DroppingExporter()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return tracer_provider, meter_provider


class SDKFloor:
    """The calls a tracing middleware makes anyway: start a span, end it, one histogram."""

    def __init__(self, app: ASGIApp, tracer_provider: Any, meter_provider: Any) -> None:
        self.app = app
        self.tracer = tracer_provider.get_tracer("floor")
        self.histogram = meter_provider.get_meter("floor").create_histogram(
            "http.server.request.duration", unit="s"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.time_ns()
        span = self.tracer.start_span(scope["method"], kind=SpanKind.SERVER, start_time=start)
        await self.app(scope, receive, send)
        end = time.time_ns()
        span.end(end_time=end)
        self.histogram.record((end - start) / 1e9, {"http.request.method": scope["method"]})


class ConventionsFloor(SDKFloor):
    """The floor's calls with the attributes, context extraction and current span the
    HTTP conventions ask of a server span, and nothing else (no exclusions, no
    disconnect or error handling, no header capture, no log binding)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.time_ns()
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        parent = extract(headers)
        method = scope["method"]
        client = scope.get("client")
        server = scope.get("server")
        span = self.tracer.start_span(
            method,
            parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "url.scheme": scope["scheme"],
                "network.protocol.version": scope["http_version"],
                "server.address": headers.get("host", ""),
                "server.port": server[1] if server else 80,
                "client.address": client[0] if client else "",
                "user_agent.original": headers.get("user-agent", ""),
            },
            start_time=start,
        )
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = attach(set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, send_status)
        finally:
            detach(token)
        route = scope["path"]
        span.set_attributes({"http.response.status_code": status, "http.route": route})
        span.update_name(f"{method} {route}")
        end = time.time_ns()
        span.end(end_time=end)
        self.histogram.record(
            (end - start) / 1e9,
            {
                "http.request.method": method,
                "url.scheme": scope["scheme"],
                "http.response.status_code": status,
                "http.route": route,
            },
        )


def _contrib(app: ASGIApp, **options: Any) -> ASGIApp:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    tracer_provider, meter_provider = _providers()
    return cast(
        ASGIApp,
        OpenTelemetryMiddleware(
            app, tracer_provider=tracer_provider, meter_provider=meter_provider, **options
        ),
    )


def _ours(app: ASGIApp, sampler: Any = None, **options: Any) -> ASGIApp:
    tracer_provider, meter_provider = _providers(sampler)
    options.setdefault("meter_provider", meter_provider)
    return TracingMiddleware(app, tracer_provider=tracer_provider, **options)


def added(results: Sequence[Result], case: str, versus: str | None = None) -> float:
    """*case*'s added per-request cost over the bare app (µs), or its ratio to *versus*'s."""
    return added_cost(results, case, BARE, versus)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_tracing")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.05)
    args = parser.parse_args(argv)
    floor_providers = _providers()
    apps: dict[str, ASGIApp] = {
        BARE: bare_app,
        FLOOR: SDKFloor(bare_app, *floor_providers),
        CONVENTIONS_FLOOR: ConventionsFloor(bare_app, *_providers()),
        FLOOR_UNSAMPLED: SDKFloor(bare_app, *_providers(ALWAYS_OFF)),
        FLOOR_UNSAMPLED_NO_METRICS: SDKFloor(
            bare_app, _providers(ALWAYS_OFF)[0], NoOpMeterProvider()
        ),
        CONTRIB: _contrib(bare_app),
        CONTRIB_LEAN: _contrib(bare_app, exclude_spans=["receive", "send"]),
        OURS: _ours(bare_app),
        OURS_UNSAMPLED: _ours(bare_app, ALWAYS_OFF),
        OURS_UNSAMPLED_NO_METRICS: _ours(bare_app, ALWAYS_OFF, meter_provider=NoOpMeterProvider()),
        OURS_EXCLUDED: _ours(bare_app, exclude_paths=["/items/*"]),
    }
    results = run_asgi(
        apps, baseline=BARE, request=PLAIN, rounds=args.rounds, min_time=args.min_time
    )
    print(report(results, "Tracing, GET /items/42 (traces + metrics)"))
    print(
        f"Added per-request cost: ours {added(results, OURS):.2f} µs; "
        f"{added(results, OURS, CONTRIB):.2f}x the contrib middleware's (goal <= 0.25x), "
        f"{added(results, OURS, CONTRIB_LEAN):.2f}x its lean mode's, "
        f"{added(results, OURS, FLOOR):.2f}x the SDK floor's (goal <= 1.3x), "
        f"{added(results, OURS, CONVENTIONS_FLOOR):.2f}x the conventions floor's; "
        f"unsampled +{added(results, OURS_UNSAMPLED):.2f} µs "
        f"(+{added(results, OURS_UNSAMPLED_NO_METRICS):.2f} µs without metrics; the SDK "
        f"floor's +{added(results, FLOOR_UNSAMPLED):.2f} µs and "
        f"+{added(results, FLOOR_UNSAMPLED_NO_METRICS):.2f} µs), "
        f"excluded +{added(results, OURS_EXCLUDED):.2f} µs (goal <= 3 µs)\n"
    )
    parent_apps: dict[str, ASGIApp] = {BARE: bare_app, OURS_PARENT: _ours(bare_app)}
    results = run_asgi(
        parent_apps,
        baseline=BARE,
        request=UNSAMPLED_PARENT,
        rounds=args.rounds,
        min_time=args.min_time,
    )
    print(report(results, "Tracing, a request with a non-sampled traceparent"))
    print(f"Added per-request cost: +{added(results, OURS_PARENT):.2f} µs (goal <= 3 µs)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
