"""Where a request's time went, layer by layer, for the ``Server-Timing`` header.

``asgikit.middleware.server_timing.timed(pipeline, app)`` builds *pipeline* around
*app* as ``Pipeline.wrap`` does, with a :class:`LayerTimer` between every two layers
and above the app, and ``ServerTimingMiddleware`` outside them all. Each timer notes
when the request went down through it and when the response start came back up: the
time spent below it. A layer's own (exclusive) time is the time below the layer above
it less the time below itself; the app's is the time below the innermost timer. The
figures telescope: they add up to the total, the time from the outermost layer to the
response start. When a layer answers instead of waiting (a deadline fires), the timers
below it never see a response start: the time below each of them runs until that
answer, so it goes to what was running (the app), not to the layer that answered.

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
    names: Sequence[str], marks: dict[int, list[float | None]], start: float, end: float
) -> list[tuple[str, float]]:
    """Each layer's own time (seconds) and the app's, outermost first, then the total.

    *names* are the layers' names (``len(names)`` timers: one under each layer, the
    last above the app); *start* and *end* are when the request reached the outermost
    layer and when its response started (``time.perf_counter()``). A layer the request
    never reached is left out.
    """
    below = _below(len(names), marks, end)
    result: list[tuple[str, float]] = []
    above = end - start
    for index, name in enumerate(names):
        if index > 0 and below[index - 1] is None:
            break  # the layer above answered: nothing below it ran
        inside = below[index] or 0.0
        result.append((name, max(above - inside, 0.0)))
        above = inside
    if names and below[-1] is not None:
        result.append(("app", below[-1]))
    result.append(("total", end - start))
    return result


def _below(count: int, marks: dict[int, list[float | None]], end: float) -> list[float | None]:
    """The time spent below each timer, None where the request never went through it.

    A timer whose response start never came back (a layer above it answered instead:
    a deadline, an error page) counts until the answer the timer above it saw (the
    response start, for the outermost): that time went to what was running below it,
    most often the app, not to the layer that answered.
    """
    below: list[float | None] = []
    answered = end  # when the timer above saw the response start
    for index in range(count):
        entry = marks.get(index)
        if entry is None:
            below.append(None)
            continue
        entered, started = entry
        if started is not None:
            answered = started
        below.append(answered - cast(float, entered))  # set on entry
    return below


def layer_names(layers: Iterable[Any]) -> list[str]:
    """The names layers report under: their registry name, else the factory's name
    (``CompressionMiddleware`` is ``compression``), as tokens (``<lambda>`` is
    ``lambda``), made unique with ``-2``, ``-3``."""
    names: list[str] = []
    for layer in layers:
        name = getattr(layer, "name", None)
        if not isinstance(name, str) or not name:
            factory = getattr(layer, "factory", layer)
            name = getattr(factory, "__name__", "layer").removesuffix("Middleware").lower()
        # A Server-Timing metric name is a token: anything else is dropped.
        base = "".join(c for c in name if c.isascii() and (c.isalnum() or c in "_-."))
        name = base = base or "layer"
        count = 2
        while name in names or name in ("app", "total"):
            name = f"{base}-{count}"
            count += 1
        names.append(name)
    return names
