"""ServerTimingMiddleware: where a request's time went, in the ``Server-Timing`` header."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

from asgikit.options import bounded_int, string_list
from asgikit.scopes import derive_scope
from asgikit.timing import TIMING_KEY, LayerTimer, figures, layer_names
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ServerTimingMiddleware", "timed"]

_clock = time.perf_counter
_CROSS_SITES = (b"cross-site", b"same-site")


class ServerTimingMiddleware:
    """Add ``Server-Timing`` to every http response: the total, and per layer when the
    stack was built by :func:`timed` (each layer's own time and the app's).

    Figures are milliseconds from the request's arrival here to the response start
    (what a browser's network panel shows as waiting). A cross-origin request (an
    ``Origin`` that is not the request's own, or ``Sec-Fetch-Site: cross-site`` or
    ``same-site``) gets the header only when the response's ``Timing-Allow-Origin``
    allows that origin (``*`` or the origin itself): timings are not given to other
    sites unless the app says so.

    Args:
        app: The ASGI app to wrap.
        layers: The names of the timed layers, outermost first, as ``timed`` passes
            them. Empty: the total only.
        decimals: Digits after the point in each ``dur`` (0-6).
    """

    __slots__ = ("_decimals", "_layers", "app")

    def __init__(self, app: ASGIApp, *, layers: Sequence[str] = (), decimals: int = 2) -> None:
        self.app = app
        self._layers = string_list(layers, "layers")
        for name in self._layers:
            if not name or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
                raise ValueError(f"layers: {name!r} is not a token")
        self._decimals = bounded_int(decimals, "decimals", 0, 6)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = _clock()
        marks: dict[int, list[float | None]] = {}
        origin = _cross_origin(scope)

        def send_timed(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                if origin is None or _allowed(headers, origin):
                    value = self._value(marks, _clock() - start)
                    message = {**message, "headers": [*headers, (b"server-timing", value)]}
            return send(message)

        await self.app(derive_scope(scope, {TIMING_KEY: marks}), receive, send_timed)

    def _value(self, marks: dict[int, list[float | None]], total: float) -> bytes:
        parts = [
            f"{name};dur={seconds * 1000:.{self._decimals}f}"
            for name, seconds in figures(self._layers, marks, total)
        ]
        return ", ".join(parts).encode("ascii")


def _cross_origin(scope: Scope) -> bytes | None:
    """The request's origin when it is cross-origin (b"" when unknown), else None."""
    origin: bytes | None = None
    site: bytes | None = None
    host: bytes | None = None
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            origin = value
        elif name == b"sec-fetch-site":
            site = value
        elif name == b"host":
            host = value
    if origin is not None:
        own = b"%s://%s" % (scope.get("scheme", "http").encode("ascii"), host or b"")
        if origin.lower() != own.lower():
            return origin
    if site in _CROSS_SITES:
        return origin or b""
    return None


def _allowed(headers: Iterable[tuple[bytes, bytes]], origin: bytes) -> bool:
    """Whether a ``Timing-Allow-Origin`` of the response allows *origin*."""
    for name, value in headers:
        if name == b"timing-allow-origin":
            for entry in value.split(b","):
                allowed = entry.strip()
                if allowed == b"*" or (origin and allowed == origin):
                    return True
    return False


def timed(pipeline: Any, app: ASGIApp, **options: Any) -> ASGIApp:
    """*pipeline* (an ``asgikit.pipeline.Pipeline``) around *app*, with a timer between
    every two layers, inside ``ServerTimingMiddleware(**options)``.

    Order warnings are not repeated here: ``Pipeline.warnings`` has them.
    """
    layers = list(pipeline.layers)
    if not layers:
        return ServerTimingMiddleware(app, **options)
    names = layer_names(layers)
    wrapped: ASGIApp = LayerTimer(app, len(layers) - 1)
    for index in reversed(range(len(layers))):
        layer = layers[index]
        wrapped = layer.factory(wrapped, **layer.options)
        if index > 0:
            wrapped = LayerTimer(wrapped, index - 1)
    return ServerTimingMiddleware(wrapped, layers=names, **options)
