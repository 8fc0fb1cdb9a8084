"""The example Django project's ASGI app, behind asgikit's middleware two ways.

With the config file (the same file serves every framework example)::

    ASGIKIT_APP=examples.django_app.asgi:app asgikit serve examples/frameworks.toml

Or in code. Django has no hook for ASGI middleware (its ``MIDDLEWARE`` setting takes
Django middleware, which see an ``HttpRequest``, not ASGI messages): wrap the app that
``get_asgi_application()`` returns, as ``wrapped`` does. Django's ``MIDDLEWARE`` has
``asgikit.integrations.django.RouteTemplateMiddleware`` so the access log, the spans and
the inspector get the route template.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from django.core.asgi import get_asgi_application

from asgikit.pipeline import Layer, Pipeline
from asgikit.types import ASGIApp

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")

app = get_asgi_application()


def wrapped(layers: Iterable[Layer]) -> ASGIApp:
    """A new Django ASGI app wrapped in ``layers`` (outermost first)."""
    return Pipeline.from_layers(layers).wrap(get_asgi_application())
