"""Whole stacks for the load and soak benchmark (``benchmarks/soak.py``, ``benchmarks.e2e``).

Three apps around one Starlette endpoint that answers ``GET /items/{item_id}`` with about
2 KiB of JSON, so that compression, CORS, rate limits, tracing and the access log all
have work to do:

- ``bare``: the endpoint alone;
- ``asgikit_stack``: every asgikit middleware in the canonical order (docs/architecture.md), with
  production settings (JSON access log to a file, spans batched to an exporter, a
  memory rate limit high enough never to reject);
- ``anchor_stack``: what users assemble today for the same features: OpenTelemetry's
  contrib ASGI middleware, asgi-correlation-id, Starlette's CORS and GZip middleware
  and slowapi, with the same OpenTelemetry SDK set-up.

Both stacks export spans the same way: a ``BatchSpanProcessor`` into an exporter that
counts and drops them (no collector on a benchmark machine; serialising for OTLP would
cost both stacks the same). ``Counters`` counts, in the server process, the requests that
entered the stack and the spans started and ended; on lifespan shutdown it flushes the
providers and writes the counts as JSON to ``$ASGIKIT_SOAK_REPORT``, so the soak run can
check that no log line was lost and no span left unfinished. The access log goes to
``$ASGIKIT_SOAK_LOG`` (default: the null device).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import IO, Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgikit.logging import configure
from asgikit.pipeline import Pipeline
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ORIGIN", "Counters", "anchor_stack", "asgikit_stack", "bare"]

ORIGIN = "https://app.example.com"
REPORT_ENV = "ASGIKIT_SOAK_REPORT"
LOG_ENV = "ASGIKIT_SOAK_LOG"

_ITEM = {
    "name": "a widget",
    "tags": ["blue", "small", "sturdy"],
    "description": "A widget of the usual kind. " * 40,
    "price": {"amount": 1999, "currency": "EUR"},
}


async def _item(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["item_id"], **_ITEM})


def _starlette() -> Starlette:
    return Starlette(routes=[Route("/items/{item_id}", _item)])


class _CountingExporter(SpanExporter):
    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


class Counters(SpanProcessor):
    """Counts requests into the stack and spans started and ended, in the server process."""

    def __init__(self) -> None:
        self.requests = 0
        self.streams: list[IO[str]] = []
        self.started = 0
        self.ended = 0
        self.exporter = _CountingExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(self)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        self.started += 1

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` behind a layer that counts http requests and reports at shutdown."""

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                self.requests += 1
                await app(scope, receive, send)
                return
            if scope["type"] != "lifespan":
                await app(scope, receive, send)
                return

            async def on_send(message: Message) -> None:
                if message["type"] == "lifespan.shutdown.complete":
                    self.report()
                await send(message)

            await app(scope, receive, on_send)

        return counted

    def report(self) -> None:
        self.tracer_provider.force_flush()
        for stream in self.streams:
            stream.flush()
        path = os.environ.get(REPORT_ENV)
        if path:
            counts = {
                "requests": self.requests,
                "spans_started": self.started,
                "spans_ended": self.ended,
                "spans_exported": self.exporter.exported,
            }
            with open(path, "w", encoding="utf-8") as out:
                json.dump(counts, out)


def _asgikit_stack() -> ASGIApp:
    counters = Counters()
    log = open(os.environ.get(LOG_ENV, os.devnull), "a", encoding="utf-8")  # noqa: SIM115
    counters.streams.append(log)  # flushed at shutdown, before the report
    configure(format="json", stream=log)
    pipeline = Pipeline(
        [
            ("proxy_headers", {}),
            ("request_id", {}),
            ("access_log", {}),
            (
                "tracing",
                {
                    "tracer_provider": counters.tracer_provider,
                    "meter_provider": counters.meter_provider,
                },
            ),
            ("cors", {"allow_origins": [ORIGIN]}),
            ("rate_limit", {"rate": "1000000/second"}),
            ("timeout", {"total": 30.0}),
            ("compression", {}),
        ]
    )
    return counters.wrap(pipeline.wrap(_starlette()))


def _anchor_stack() -> ASGIApp:
    from asgi_correlation_id import CorrelationIdMiddleware
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from slowapi import Limiter
    from slowapi.middleware import SlowAPIASGIMiddleware
    from slowapi.util import get_remote_address
    from starlette.middleware.cors import CORSMiddleware
    from starlette.middleware.gzip import GZipMiddleware

    counters = Counters()
    app = _starlette()
    app.state.limiter = Limiter(key_func=get_remote_address, default_limits=["1000000/second"])
    app.add_middleware(GZipMiddleware)
    app.add_middleware(SlowAPIASGIMiddleware)
    app.add_middleware(CORSMiddleware, allow_origins=[ORIGIN])
    app.add_middleware(CorrelationIdMiddleware)
    traced = OpenTelemetryMiddleware(
        app,
        tracer_provider=counters.tracer_provider,
        meter_provider=counters.meter_provider,
    )
    return counters.wrap(traced)


class _Lazy:
    """Built on first call, in the server process (a module attribute uvicorn imports)."""

    def __init__(self, build: Any) -> None:
        self._build = build
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = self._build()
        await self._app(scope, receive, send)


bare: ASGIApp = _starlette()
asgikit_stack: ASGIApp = _Lazy(_asgikit_stack)
anchor_stack: ASGIApp = _Lazy(_anchor_stack)
