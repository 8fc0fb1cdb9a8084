"""The structlog processor that hands every line to the OpenTelemetry collector, when asked.

``asgikit.logging.configure`` puts :func:`to_collector` in every chain (structlog's
events and ``logging``'s records alike), after the processors that add the context and
before rendering. It does nothing (one check) until ``asgikit.telemetry.configure(logs=
...)`` installs a sink with :func:`set_sink`; then each line also goes to the sink (an
OpenTelemetry log record, see ``asgikit.telemetry.logs``). A chain built by hand can
include it too. A sink that fails drops the record, never the line: the failure is
reported on the ``asgikit.hooks`` logger at most once a minute (``asgikit.hooks.Hook``),
so a collector copy that stopped working does not go unnoticed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, MutableMapping
from typing import Any

from asgikit.hooks import Hook

__all__ = ["Sink", "installed_sink", "remove_sink", "set_sink", "to_collector"]

Sink = Callable[[str, MutableMapping[str, Any]], None]
"""Takes the method name (the level) and the event dict, before it is rendered."""

# The one installed, if any, and its contained form: a list, read without a global.
_sink: list[tuple[Sink, Hook[None]]] = []
_lock = threading.Lock()  # compare-then-clear (remove_sink) from any thread


def set_sink(sink: Sink | None) -> None:
    """Install *sink* (None: remove the one installed)."""
    with _lock:
        _sink[:] = [] if sink is None else [(sink, Hook(sink, "asgikit.logging.collector sink"))]


def installed_sink() -> Sink | None:
    """The sink installed, if any."""
    held = _sink[:1]
    return held[0][0] if held else None


def remove_sink(sink: Sink) -> bool:
    """Remove *sink* if it is the one installed (another is left alone).

    Returns:
        Whether it was installed.
    """
    with _lock:
        if _sink and _sink[0][0] is sink:
            _sink.clear()
            return True
        return False


def to_collector(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: hand the line to the installed sink, if any; the line
    itself goes on unchanged."""
    held = _sink[:1]  # one read: set_sink(None) from another thread cannot race it
    if held:
        held[0][1](method_name, event_dict)  # contained: the line matters more
    return event_dict
