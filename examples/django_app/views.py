"""The example project's views (async: Django runs them on the event loop)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

DOCUMENT = [{"id": n, "name": f"item {n}", "tags": ["a", "b"]} for n in range(100)]


async def home(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"hello": "world"})


async def item(request: HttpRequest, item_id: str) -> HttpResponse:
    return JsonResponse({"item_id": item_id})


async def echo(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponse(status=405, headers={"allow": "POST"})
    content_type = request.headers.get("content-type", "text/plain")
    return HttpResponse(request.body, content_type=content_type)


async def document(request: HttpRequest) -> HttpResponse:
    return JsonResponse(DOCUMENT, safe=False)


async def fail(request: HttpRequest) -> HttpResponse:
    """Raises: Django answers 500 and logs the traceback through ``django.request``."""
    raise RuntimeError("the example fails on purpose")
