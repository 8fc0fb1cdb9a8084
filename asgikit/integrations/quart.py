"""Quart: the matched URL rule where asgikit's middleware look for the route.

``record_routes(app)`` registers a ``before_request`` function that writes the matched
rule (``/items/<item_id>``) to ``scope["path_template"]``, so the access log line, the
span name and the inspector show it.
"""

from __future__ import annotations

from typing import Any, cast

from quart import Quart, request

__all__ = ["record_routes"]


async def _note_route() -> None:
    rule = request.url_rule
    if rule is not None:
        scope = cast("dict[str, Any]", request.scope)  # the ASGI scope dict itself
        scope["path_template"] = rule.rule


def record_routes(app: Quart) -> Quart:
    """Have *app* write each request's matched rule to the scope; returns *app*."""
    app.before_request(_note_route)
    return app
