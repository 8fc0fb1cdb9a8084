"""The test service the W3C harness drives: asgikit's tracing around an app that calls
back every URL it is given, with the current context injected by the global propagator,
as an instrumented HTTP client would (the harness's README describes the protocol)."""

from __future__ import annotations

import httpx
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgikit.middleware.tracing import TracingMiddleware

provider = TracerProvider()
trace.set_tracer_provider(provider)
tracer = provider.get_tracer("w3c-service")


async def callbacks(request: Request) -> JSONResponse:
    calls = await request.json()
    async with httpx.AsyncClient(timeout=5.0) as client:
        for call in calls:
            with tracer.start_as_current_span("callback", kind=trace.SpanKind.CLIENT):
                headers: dict[str, str] = {}
                inject(headers)
                await client.post(call["url"], json=call["arguments"], headers=headers)
    return JSONResponse({})


app = TracingMiddleware(Starlette(routes=[Route("/test", callbacks, methods=["POST"])]))
