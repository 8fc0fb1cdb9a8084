"""A Django middleware that puts the matched URL pattern where ASGI middleware find it.

Django resolves the URL inside its handler and keeps the match on the request
(``request.resolver_match``); nothing reaches the ASGI scope. This writes the route
(``items/<str:item_id>`` as ``/items/<str:item_id>``) to ``scope["path_template"]``,
which asgikit's access log reads as the route template once the app returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin


class RouteTemplateMiddleware(MiddlewareMixin):  # type: ignore[misc]  # Django is untyped
    """Copy ``request.resolver_match.route`` to the ASGI scope (sync and async)."""

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., HttpResponseBase],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> None:
        scope = getattr(request, "scope", None)  # ASGIRequest only: WSGI has no scope
        match = request.resolver_match
        if isinstance(scope, dict) and match is not None and match.route:
            scope["path_template"] = "/" + match.route
