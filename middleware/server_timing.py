"""ServerTimingMiddleware: where a request's time went, in the ``Server-Timing`` header."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

from asgikit.headers import append_header, get_header, header_tokens
from asgikit.options import bounded_int
from asgikit.scopes import CHAIN_KEY, derive_scope, end_chain, innermost, start_chain
from asgikit.timing import TIMING_KEY, LayerTimer, figures, layer_names
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ServerTimingMiddleware", "timed"]

_clock = time.perf_counter
_NAME = b"server-timing"
_CROSS_SITES = (b"cross-site", b"same-site")
_SAME_SITES = (b"same-origin", b"none")


class ServerTimingMiddleware:
    """Add ``Server-Timing`` to every http response: the total, and per layer when the
    stack was built by :func:`timed` (each layer's own time and the app's).

    Figures are milliseconds from the request's arrival here to the response start
    (what a browser's network panel shows as waiting). A cross-origin request gets the
    header only when the response's ``Timing-Allow-Origin`` allows its origin (``*`` or
    the origin itself): timings are not given to other sites unless the app says so.
    ``Sec-Fetch-Site`` decides what is cross-origin when the browser sent it
    (``cross-site`` and ``same-site`` are, ``same-origin`` and ``none`` are not); else
    an ``Origin`` is compared at the response start with the request's own scheme and
    ``Host`` as the layers inside left them (after ProxyHeadersMiddleware, say).

    Args:
        app: The ASGI app to wrap.
        decimals: Digits after the point in each ``dur`` (0-6).
    """

    __slots__ = ("_decimals", "_layers", "app")

    def __init__(self, app: ASGIApp, *, decimals: int = 2) -> None:
        self.app = app
        self._layers: tuple[str, ...] = ()
        self._decimals = bounded_int(decimals, "decimals", 0, 6)

    @classmethod
    def _timing(
        cls, app: ASGIApp, layers: Sequence[str], options: dict[str, Any]
    ) -> ServerTimingMiddleware:
        """The middleware as :func:`timed` builds it: with the timed layers' names
        (tokens, from ``asgikit.timing.layer_names``), outermost first."""
        middleware = cls(app, **options)
        middleware._layers = tuple(layers)
        return middleware

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = _clock()
        marks: dict[int, list[float | None]] = {}
        origin, cross = _request_origin(scope)
        # Undecided: compared at the start with what the layers inside made of the
        # request, so the chain must record their copies.
        started = cross is None and CHAIN_KEY not in scope
        scope = (start_chain if cross is None else derive_scope)(scope, {TIMING_KEY: marks})

        def send_timed(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                foreign = _foreign(origin, innermost(scope)) if cross is None else cross
                if not foreign or _allowed(headers, origin):
                    value = self._value(marks, start, _clock())
                    message = {**message, "headers": append_header(headers, _NAME, value)}
            return send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            if started:
                end_chain(scope)

    def _value(self, marks: dict[int, list[float | None]], start: float, end: float) -> bytes:
        parts = [
            f"{name};dur={seconds * 1000:.{self._decimals}f}"
            for name, seconds in figures(self._layers, marks, start, end)
        ]
        return ", ".join(parts).encode("ascii")


def _request_origin(scope: Scope) -> tuple[bytes, bool | None]:
    """The request's ``Origin`` (b"" when none), and whether it is cross-origin: told
    by ``Sec-Fetch-Site`` when present, not when there is no ``Origin``, else None (to
    compare at the response start)."""
    origin: bytes | None = None
    site: bytes | None = None
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            origin = value
        elif name == b"sec-fetch-site":
            site = value
    if site in _CROSS_SITES or site in _SAME_SITES:
        return origin or b"", site in _CROSS_SITES
    return origin or b"", (None if origin is not None else False)


def _foreign(origin: bytes, scope: Scope) -> bool:
    """Whether *origin* is not *scope*'s own: its scheme and ``Host``."""
    host = get_header(scope.get("headers", ()), b"host", b"")
    own = b"%s://%s" % (scope.get("scheme", "http").encode("ascii"), host)
    return origin.lower() != own.lower()


def _allowed(headers: Iterable[tuple[bytes, bytes]], origin: bytes) -> bool:
    """Whether a ``Timing-Allow-Origin`` of the response allows *origin*."""
    return any(
        allowed == b"*" or (origin and allowed == origin)
        for allowed in header_tokens(headers, b"timing-allow-origin")
    )


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
    return ServerTimingMiddleware._timing(wrapped, names, options)
