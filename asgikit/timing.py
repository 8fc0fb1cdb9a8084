"""Where a request's time went, layer by layer, for the ``Server-Timing`` header.

``asgikit.middleware.server_timing.timed(pipeline, app)`` builds *pipeline* around
*app* as ``Pipeline.wrap`` does, with a :class:`LayerTimer` between every two layers
and above the app, and ``ServerTimingMiddleware`` outside them all. Each timer notes
when the request went down through it and when the response start came back up: the
time spent below it. A layer's own (exclusive) time is the time below the layer above
it less the time below itself; the app's is the time below the innermost timer. The
figures telescope: they add up to the total, the time from the outermost layer to the
response start.

Timers cost nothing to a request without ``ServerTimingMiddleware`` outside (one
lookup) and pass websockets and the lifespan straight through.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, Final, cast

from asgikit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TIMING_KEY", "LayerTimer", "figures", "layer_names"]

TIMING_KEY: Final = "asgikit.server_timing"
"""A dict ``ServerTimingMiddleware`` hands down: timer index -> ``[entered, started]``
(``time.perf_counter()``; ``started`` None until the response start came back)."""

_clock = time.perf_counter


class LayerTimer:
    """Note when a request goes down through here and its response start comes back.

    Args:
        app: What is below this point (a layer, or the app).
        index: This timer's place, 0 under the outermost layer.
    """

    __slots__ = ("app", "index")

    def __init__(self, app: ASGIApp, index: int) -> None:
        self.app = app
        self.index = index

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        marks = scope.get(TIMING_KEY)
        if marks is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry: list[float | None] = [_clock(), None]
        marks[self.index] = entry

        def timed_send(message: Message) -> Awaitable[None]:
            if entry[1] is None and message["type"] == "http.response.start":
                entry[1] = _clock()
            return send(message)

        await self.app(scope, receive, timed_send)


def figures(
    names: Sequence[str], marks: dict[int, list[float | None]], total: float
) -> list[tuple[str, float]]:
    """Each layer's own time (seconds) and the app's, outermost first, then the total.

    *names* are the layers' names (``len(names)`` timers: one under each layer, the
    last above the app). A layer the request never reached is left out.
    """
    below = [_below(marks.get(index)) for index in range(len(names))]
    result: list[tuple[str, float]] = []
    above = total
    for index, name in enumerate(names):
        if index > 0 and below[index - 1] is None:
            break  # the layer above answered: nothing below it ran
        inside = below[index] or 0.0
        result.append((name, max(above - inside, 0.0)))
        above = inside
    if names and below[-1] is not None:
        result.append(("app", below[-1]))
    result.append(("total", total))
    return result


def _below(entry: list[float | None] | None) -> float | None:
    """The time spent below a timer, or None when the request never went through it."""
    if entry is None:
        return None
    entered, started = entry
    return 0.0 if started is None else started - cast(float, entered)  # set on entry


def layer_names(layers: Iterable[Any]) -> list[str]:
    """The names layers report under: their registry name, else the factory's name
    (``CompressionMiddleware`` is ``compression``), made unique with ``-2``, ``-3``."""
    names: list[str] = []
    for layer in layers:
        name = getattr(layer, "name", None)
        if not isinstance(name, str) or not name:
            factory = getattr(layer, "factory", layer)
            name = getattr(factory, "__name__", "layer").removesuffix("Middleware").lower()
        base, count = name or "layer", 2
        while name in names or name in ("app", "total"):
            name = f"{base}-{count}"
            count += 1
        names.append(name)
    return names
