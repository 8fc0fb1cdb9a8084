"""Small pieces for frameworks that keep the matched route to themselves.

Starlette, FastAPI and Litestar leave the route template in the ASGI scope, where the
access log, tracing and the inspector read it. Django and Quart match the URL inside
their own request objects and leave nothing in the scope; the helpers here write the
template to ``scope["path_template"]``, which asgikit reads like Litestar's:

- ``asgikit.integrations.django.RouteTemplateMiddleware``: a Django middleware;
- ``asgikit.integrations.quart.record_routes(app)``: a Quart ``before_request`` hook.

Each module imports its framework, so import only the one you use.
"""
