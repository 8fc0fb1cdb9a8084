"""The full stack around each framework's app, wrapped both ways, in-process and under uvicorn.

For Starlette, FastAPI, Litestar, Django, Quart and a raw ASGI callable:

- (hook) the framework's own way to add ASGI middleware: ``add_middleware``
  (Starlette, FastAPI), ``middleware=[DefineMiddleware(...)]`` (Litestar), wrapping
  ``app.asgi_app`` (Quart); Django has no ASGI middleware hook, so its
  ``get_asgi_application()`` is wrapped in code, as is the raw callable;
- (config) a config file with the stack of tests/e2e/stack.py, through ``asgikit.build``;
- (uvicorn) that config file served by a real uvicorn process (``asgikit:app_from_env``),
  JSON logs read back from its output, websockets included.

Each framework's known gaps (``Framework.limitations``) run as strict xfails with their
reason, which docs/compatibility.md shows.

In-process runs drive the apps with ``asgikit.testing`` behind ``asgikit.enforce``, on
asyncio and trio where the framework runs on trio (Django and Quart are asyncio-only).
"""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from asgikit.config import build
from asgikit.contract import enforce
from asgikit.pipeline import Layer, Pipeline
from asgikit.testing import Response, lifespan, request
from asgikit.types import ASGIApp
from tests.e2e import stack
from tests.e2e.conftest import Lines, access_line, expect_limitation, note
from tests.e2e.servers import Running, ServerSpec, start_all, uvicorn_command

pytest.importorskip("fastapi", reason="fastapi is not installed")
pytest.importorskip("litestar", reason="litestar is not installed")
pytest.importorskip("django", reason="django is not installed")
pytest.importorskip("quart", reason="quart is not installed")

from examples import fastapi_app, litestar_app, quart_app
from examples.django_app import asgi as django_asgi

websockets_client = pytest.importorskip(
    "websockets.sync.client", reason="the websockets package is not installed"
)


def _starlette_hook(layers: Sequence[Layer]) -> ASGIApp:
    app = stack.create_starlette_app()
    for layer in reversed(layers):
        app.add_middleware(layer.factory, **layer.options)
    return app


def _raw_hook(layers: Sequence[Layer]) -> ASGIApp:
    return Pipeline.from_layers(layers).wrap(stack.raw_app)  # a callable: plain wrapping


@dataclass(frozen=True)
class Framework:
    """A framework's example app: where it is, how its hook wraps it, what it reports."""

    name: str
    app: str  # import string, for the config file
    hook: Callable[[Sequence[Layer]], ASGIApp]
    route: str | None  # the route template of /items/42 in the access log
    no_route: str = ""  # why there is none
    trio: bool = True
    lifespan: bool = True
    hook_note: str = ""
    route_note: str = ""
    limitations: Mapping[str, str] = field(default_factory=dict)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` behind the contract checker, unless the framework is known to break it."""
        return app if "contract" in self.limitations else enforce(app)


FRAMEWORKS = (
    Framework("starlette", "tests.e2e.stack:starlette_app", _starlette_hook, "/items/{item_id}"),
    Framework(
        "fastapi",
        "examples.fastapi_app:app",
        lambda layers: fastapi_app.add_middleware(fastapi_app.create_app(), layers),
        "/items/{item_id}",
    ),
    Framework(
        "litestar",
        "examples.litestar_app:app",
        lambda layers: cast(ASGIApp, litestar_app.create_app(layers)),
        "/items/{item_id}",
        limitations={
            "not_found": (
                "Litestar runs its middleware=[...] after routing: a request that matches "
                "no route is answered 404 without them (no log line, no request id, no "
                "CORS headers); wrap the whole app (config file) to cover it"
            ),
        },
    ),
    Framework(
        "django",
        "examples.django_app.asgi:app",
        django_asgi.wrapped,
        "/items/<str:item_id>",
        trio=False,
        lifespan=False,
        limitations={
            "websocket": "Django serves websockets only with Channels (not in the example)",
        },
        hook_note=(
            "Django has no ASGI middleware hook (MIDDLEWARE takes Django middleware): "
            "get_asgi_application() is wrapped in code; in-process on asyncio only (asgiref)"
        ),
        route_note=(
            "with asgikit.integrations.django.RouteTemplateMiddleware (a Django "
            "middleware): Django keeps the match on the HttpRequest (resolver_match), "
            "nothing in the ASGI scope"
        ),
    ),
    Framework(
        "quart",
        "examples.quart_app:app",
        lambda layers: cast(ASGIApp, quart_app.add_middleware(quart_app.create_app(), layers)),
        "/items/<item_id>",
        trio=False,
        hook_note="the hook is wrapping app.asgi_app; in-process on asyncio only",
        route_note=(
            "with asgikit.integrations.quart.record_routes (a before_request function): "
            "Quart keeps the matched rule on its request (url_rule), nothing in the ASGI "
            "scope"
        ),
    ),
    Framework(
        "raw",
        "tests.e2e.stack:raw_app",
        _raw_hook,
        None,
        no_route="a plain ASGI callable has no router: there is no route template to log",
        hook_note="no hook: plain wrapping",
        limitations={"websocket": "the raw example app serves http only"},
    ),
)
BY_NAME = {framework.name: framework for framework in FRAMEWORKS}


def cases() -> list[Any]:
    return [
        pytest.param(framework.name, backend, id=f"{framework.name}-{backend}")
        for framework in FRAMEWORKS
        for backend in (("asyncio", "trio") if framework.trio else ("asyncio",))
    ]


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


def config_file(directory: Path, framework: Framework) -> Path:
    path = directory / f"{framework.name}.toml"
    path.write_text(stack.config_toml(framework.app), encoding="utf-8")
    return path


def maybe_lifespan(
    app: ASGIApp, framework: Framework, state: dict[str, Any]
) -> AbstractAsyncContextManager[object]:
    """The app's lifespan around the block, or nothing for apps without one (Django)."""
    return lifespan(app, state=state) if framework.lifespan else contextlib.nullcontext()


async def exercise(app: ASGIApp, framework: Framework, lines: Lines) -> None:
    """Every request the frameworks answer, through the whole stack; each one logged once."""
    state: dict[str, Any] = {}
    async with maybe_lifespan(app, framework, state):
        got = await request(
            app, "GET", "/items/42", headers={"origin": stack.ALLOWED_ORIGIN}, state=state
        )
        assert got.status == 200 and got.json() == {"item_id": "42"}
        assert got.header("access-control-allow-origin") == stack.ALLOWED_ORIGIN
        assert got.header("x-request-id")

        body = bytes(range(256)) * 40
        echoed = await request(
            app,
            "POST",
            "/echo",
            body=[body[:5000], body[5000:]],
            headers={"content-type": "application/octet-stream"},
            state=state,
        )
        assert echoed.status == 200 and echoed.body == body

    first = access_line(lines, got.header("x-request-id"))
    assert first["url.path"] == "/items/42" and first["http.response.status_code"] == 200
    assert access_line(lines, echoed.header("x-request-id"))["http.request.body.size"] == len(body)


@pytest.mark.anyio
@pytest.mark.compat("frameworks", "hook")
@pytest.mark.parametrize(("framework", "anyio_backend"), cases(), indirect=["anyio_backend"])
async def test_wrapped_by_the_frameworks_own_hook(
    framework: str, lines: Lines, request: pytest.FixtureRequest
) -> None:
    spec = BY_NAME[framework]
    note(request, spec.hook_note)
    app = spec.wrap(spec.hook(stack.pipeline().layers))
    await exercise(app, spec, lines)


@pytest.mark.anyio
@pytest.mark.compat("frameworks", "config")
@pytest.mark.parametrize(("framework", "anyio_backend"), cases(), indirect=["anyio_backend"])
async def test_wrapped_by_a_config_file(framework: str, lines: Lines, tmp_path: Path) -> None:
    spec = BY_NAME[framework]
    app = spec.wrap(build(config_file(tmp_path, spec)))
    await exercise(app, spec, lines)


@pytest.mark.anyio
@pytest.mark.compat("frameworks", "route")
@pytest.mark.parametrize(("framework", "anyio_backend"), cases(), indirect=["anyio_backend"])
async def test_the_route_template_reaches_the_access_log(
    framework: str, lines: Lines, request: pytest.FixtureRequest
) -> None:
    spec = BY_NAME[framework]
    note(request, spec.route_note)
    if spec.route is None:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=spec.no_route))
    app = spec.wrap(spec.hook(stack.pipeline().layers))
    response = await request_items(app, spec, "/items/42")
    line = access_line(lines, response.header("x-request-id"))
    assert "http.route" in line, "a route template is logged"
    assert line["http.route"] == spec.route


@pytest.mark.anyio
@pytest.mark.compat("frameworks", "span")
@pytest.mark.parametrize(("framework", "anyio_backend"), cases(), indirect=["anyio_backend"])
async def test_the_route_template_names_the_span(
    framework: str, lines: Lines, request: pytest.FixtureRequest
) -> None:
    stack.needs("tracing")
    spec = BY_NAME[framework]
    note(request, spec.route_note)
    if spec.route is None:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=spec.no_route))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    layers = stack.pipeline({"tracing": {"tracer_provider": provider}}).layers
    response = await request_items(spec.wrap(spec.hook(layers)), spec, "/items/42")
    trace_id = access_line(lines, response.header("x-request-id"))["trace_id"]
    (span,) = [
        span
        for span in exporter.get_finished_spans()
        if span.kind == SpanKind.SERVER
        and span.context
        and f"{span.context.trace_id:032x}" == trace_id
    ]
    assert span.attributes is not None
    assert span.attributes.get("http.route") == spec.route
    assert span.name == f"GET {spec.route}"


async def request_items(app: ASGIApp, spec: Framework, path: str, **options: Any) -> Response:
    state: dict[str, Any] = {}
    async with maybe_lifespan(app, spec, state):
        return await request(app, "GET", path, state=state, **options)


@pytest.mark.anyio
@pytest.mark.compat("frameworks", "not_found")
@pytest.mark.parametrize(("framework", "anyio_backend"), cases(), indirect=["anyio_backend"])
async def test_a_request_matching_no_route_goes_through_the_stack(
    framework: str, lines: Lines, request: pytest.FixtureRequest
) -> None:
    spec = BY_NAME[framework]
    expect_limitation(request, spec, "not_found", prefix=False)
    app = spec.wrap(spec.hook(stack.pipeline().layers))
    origin = {"origin": stack.ALLOWED_ORIGIN}
    missing = await request_items(app, spec, "/no-such-page", headers=origin)
    assert missing.status == 404
    assert missing.header("access-control-allow-origin") == stack.ALLOWED_ORIGIN
    line = access_line(lines, missing.header("x-request-id"))
    assert line["http.response.status_code"] == 404 and "http.route" not in line


@pytest.mark.anyio
@pytest.mark.compat("frameworks", "contract")
@pytest.mark.parametrize(("framework", "anyio_backend"), cases(), indirect=["anyio_backend"])
async def test_the_wrapped_app_follows_the_asgi_contract(
    framework: str, lines: Lines, request: pytest.FixtureRequest
) -> None:
    spec = BY_NAME[framework]
    expect_limitation(request, spec, "contract", prefix=False)
    await exercise(enforce(spec.hook(stack.pipeline().layers)), spec, lines)


@pytest.mark.anyio
@pytest.mark.compat("frameworks", "compression")
@pytest.mark.parametrize(("framework", "anyio_backend"), cases(), indirect=["anyio_backend"])
async def test_responses_are_compressed(
    framework: str, lines: Lines, request: pytest.FixtureRequest
) -> None:
    spec = BY_NAME[framework]
    expect_limitation(request, spec, "compression", prefix=False)
    app = spec.wrap(spec.hook(stack.pipeline().layers))
    document = await request_items(app, spec, "/document", headers={"accept-encoding": "gzip"})
    assert document.status == 200
    assert document.header("content-encoding") == "gzip"
    assert json.loads(gzip.decompress(document.body))[0]["name"] == "item 0"
    assert access_line(lines, document.header("x-request-id"))["http.response.body.size"] == len(
        document.body
    )


# ---- under uvicorn ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def framework_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Running]]:
    """A uvicorn process per framework, all started at once, stopped by PID at the end."""
    directory = tmp_path_factory.mktemp("frameworks")
    # lifespan "auto": Django's handler refuses the lifespan scope, uvicorn then goes on.
    command = uvicorn_command("h11", "asyncio", lifespan="auto")
    specs = [ServerSpec(framework.name, "uvicorn", command) for framework in FRAMEWORKS]

    def env(spec: ServerSpec) -> dict[str, str]:
        return {"ASGIKIT_CONFIG": str(config_file(directory, BY_NAME[spec.name]))}

    with start_all(specs, env, directory) as running:
        yield running


@pytest.mark.compat("frameworks", "uvicorn")
@pytest.mark.parametrize("framework", [framework.name for framework in FRAMEWORKS])
def test_served_by_uvicorn_through_the_config_file(
    framework: str, framework_servers: dict[str, Running]
) -> None:
    spec = BY_NAME[framework]
    server = framework_servers[framework]
    with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as client:
        got = client.get("/items/42", headers={"origin": stack.ALLOWED_ORIGIN})
        assert got.status_code == 200 and got.json() == {"item_id": "42"}
        assert got.headers["access-control-allow-origin"] == stack.ALLOWED_ORIGIN
        document = client.get("/document", headers={"accept-encoding": "br"})
        assert document.json()[0]["id"] == 0  # compressed or not: see the compression column
        echoed = client.post("/echo", content=b"x" * 3000, headers={"content-type": "text/plain"})
        assert echoed.content == b"x" * 3000
    line = server.access_line(got.headers["x-request-id"])
    assert line["url.path"] == "/items/42" and line.get("http.route") == spec.route
    assert server.access_line(echoed.headers["x-request-id"])["http.request.body.size"] == 3000


@pytest.mark.compat("frameworks", "websocket")
@pytest.mark.parametrize("framework", [framework.name for framework in FRAMEWORKS])
def test_websocket_echo_under_uvicorn(
    framework: str, framework_servers: dict[str, Running], request: pytest.FixtureRequest
) -> None:
    spec = BY_NAME[framework]
    expect_limitation(request, spec, "websocket", prefix=False)
    server = framework_servers[framework]
    request_id = f"ws-{framework}-echo"
    with websockets_client.connect(
        f"{server.ws_url}/ws",
        additional_headers={"x-request-id": request_id},
        open_timeout=10,
        close_timeout=10,
    ) as socket:
        for text in ("ping", "pong"):
            socket.send(text)
            assert socket.recv(timeout=10) == text
    line = server.access_line(request_id)
    assert line["event"] == "websocket.connection" and line["url.path"] == "/ws"
