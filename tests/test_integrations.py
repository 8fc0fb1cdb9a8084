"""The route helpers for frameworks that keep the route to themselves (Django, Quart).

Both are exercised end to end in tests/e2e/test_frameworks.py (the route shows in the
access log and the span); these check the edges on the objects the frameworks pass.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

django = pytest.importorskip("django", reason="Django is not installed")
pytest.importorskip("quart", reason="Quart is not installed")

from asgikit.integrations.django import RouteTemplateMiddleware  # noqa: E402


def view(*args: Any) -> None:
    return None


def process(request: Any) -> None:
    middleware = RouteTemplateMiddleware(lambda request: None)
    middleware.process_view(request, view, (), {})


def test_the_django_route_goes_to_the_asgi_scope() -> None:
    scope: dict[str, Any] = {"type": "http"}
    process(SimpleNamespace(scope=scope, resolver_match=SimpleNamespace(route="items/<int:pk>")))
    assert scope["path_template"] == "/items/<int:pk>"


@pytest.mark.parametrize(
    "request_",
    [
        SimpleNamespace(resolver_match=SimpleNamespace(route="items/<int:pk>")),  # WSGI
        SimpleNamespace(scope={"type": "http"}, resolver_match=None),
        SimpleNamespace(scope={"type": "http"}, resolver_match=SimpleNamespace(route="")),
    ],
    ids=["wsgi-request", "unresolved", "regex-pattern"],
)
def test_nothing_is_written_without_an_asgi_scope_or_a_route(request_: Any) -> None:
    process(request_)
    assert "path_template" not in getattr(request_, "scope", {})


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # Quart runs on asyncio
async def test_quart_rules_go_to_the_asgi_scope(anyio_backend: str) -> None:
    from quart import Quart

    from asgikit.integrations.quart import record_routes
    from asgikit.testing import request

    app = Quart(__name__)
    assert record_routes(app) is app

    @app.get("/items/<item_id>")
    async def item(item_id: str) -> str:
        return item_id

    seen: list[dict[str, Any]] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await app(scope, receive, send)

    response = await request(recording, "GET", "/items/7")
    missing = await request(recording, "GET", "/nowhere")
    assert response.body == b"7"
    assert seen[0]["path_template"] == "/items/<item_id>"
    assert missing.status == 404
    assert "path_template" not in seen[1]
