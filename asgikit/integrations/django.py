"""Django: the matched URL pattern where asgikit's middleware look for the route.

Add ``"asgikit.integrations.django.RouteTemplateMiddleware"`` to ``MIDDLEWARE``. Under
ASGI, each request's route (``items/<str:item_id>`` as ``/items/<str:item_id>``) is then
written to ``scope["path_template"]`` once Django has resolved the URL, and the access
log line, the span name and the inspector show it. Under WSGI it does nothing. A
``re_path`` route is its regular expression, as Django keeps it
(``/^items/(?P<pk>[0-9]+)/$``): one value per route all the same, never the raw path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils.deprecation import MiddlewareMixin  # type: ignore[import-untyped]

__all__ = ["RouteTemplateMiddleware"]


class RouteTemplateMiddleware(MiddlewareMixin):  # type: ignore[misc]  # Django is untyped
    """Copy ``request.resolver_match.route`` to the ASGI scope (sync and async views)."""

    def process_view(
        self,
        request: Any,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> None:
        scope = getattr(request, "scope", None)  # ASGIRequest only: WSGI has no scope
        match = request.resolver_match
        if isinstance(scope, dict) and match is not None and match.route:
            scope["path_template"] = "/" + match.route
