"""Small pieces for frameworks: the matched route, and middleware outside the error page.

Starlette, FastAPI and Litestar leave the route template in the ASGI scope, where the
access log, tracing and the inspector read it. Django and Quart match the URL inside
their own request objects and leave nothing in the scope; the helpers here write the
template to ``scope["path_template"]``, which asgikit reads like Litestar's:

- ``asgikit.integrations.django.RouteTemplateMiddleware``: a Django middleware;
- ``asgikit.integrations.quart.record_routes(app)``: a Quart ``before_request`` hook.

And one for Starlette and FastAPI, whose ``add_middleware`` puts every middleware inside
their own error handling (so their 500 page carries no request id and no CORS headers):

- ``asgikit.integrations.starlette.add_outermost_middleware(app, cls, **options)``: the
  middleware outside the app's whole stack, with ``add_middleware``'s arguments.

Each module imports its framework, so import only the one you use.
"""
