"""Two services, one trace and one request id: service A calls service B.

Each service runs behind RequestIDMiddleware, the access log and tracing. A calls B
with an ``httpx.AsyncClient`` whose request hook (``asgikit.propagation``) adds the
current request id and the W3C ``traceparent``: B's span is a child of A's, B's access
line has A's request id, and one trace id covers both. Run them (spans to an OTLP
collector on 4318; ``OTEL_TRACES_EXPORTER=console`` prints them instead)::

    export OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318
    export B_URL=http://127.0.0.1:8001
    uvicorn --factory --app-dir examples two_services:service_b --port 8001 &
    uvicorn --factory --app-dir examples two_services:service_a --port 8000 &
    curl -H 'x-request-id: order-42' http://127.0.0.1:8000/

The answer shows A's and B's request id and trace id: the same.
"""

from __future__ import annotations

import os

import httpx
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import asgikit.request_id
from asgikit.config import shut_down_after_lifespan
from asgikit.middleware import AccessLogMiddleware, RequestIDMiddleware, TracingMiddleware
from asgikit.propagation import httpx_async_request_hook
from asgikit.telemetry import configure
from asgikit.types import ASGIApp


def ids(service: str) -> dict[str, str | None]:
    """This service's name, and the request id and trace id it sees."""
    context = trace.get_current_span().get_span_context()
    return {
        "service": service,
        "request_id": asgikit.request_id.current(),
        "trace_id": f"{context.trace_id:032x}" if context.is_valid else None,
    }


async def front(request: Request) -> JSONResponse:
    """Service A: answers with its ids and B's, which it asks for."""
    b_url = os.environ.get("B_URL", "http://127.0.0.1:8001")
    async with httpx.AsyncClient(event_hooks={"request": [httpx_async_request_hook]}) as client:
        answer = await client.get(f"{b_url}/stock")
    return JSONResponse({**ids("a"), "b": answer.json()})


async def stock(request: Request) -> JSONResponse:
    """Service B: answers with its ids."""
    return JSONResponse(ids("b"))


def _service(name: str, routes: list[Route]) -> ASGIApp:
    # OTEL_TRACES_EXPORTER and OTEL_EXPORTER_OTLP_ENDPOINT say where spans go.
    telemetry = configure(service_name=f"shop-{name}")
    app: ASGIApp = Starlette(routes=routes)
    app = RequestIDMiddleware(AccessLogMiddleware(TracingMiddleware(app)))
    return shut_down_after_lifespan(app, telemetry.shutdown)  # spans flushed at exit


def service_a() -> ASGIApp:
    """Service A (``uvicorn --factory two_services:service_a``)."""
    return _service("a", [Route("/", front)])


def service_b() -> ASGIApp:
    """Service B (``uvicorn --factory two_services:service_b``)."""
    return _service("b", [Route("/stock", stock)])
