"""The structlog processor that hands every line to the OpenTelemetry collector, when asked.

``asgikit.logging.configure`` puts :func:`to_collector` in every chain (structlog's
events and ``logging``'s records alike), after the processors that add the context and
before rendering. It does nothing (one check) until ``asgikit.telemetry.configure(logs=
...)`` installs a sink with :func:`set_sink`; then each line also goes to the sink (an
OpenTelemetry log record, see ``asgikit.telemetry.logs``). A chain built by hand can
include it too. A sink that fails drops the record, never the line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, MutableMapping
from typing import Any

__all__ = ["Sink", "set_sink", "to_collector"]

Sink = Callable[[str, MutableMapping[str, Any]], None]
"""Takes the method name (the level) and the event dict, before it is rendered."""

_sink: list[Sink] = []  # the one installed, if any: a list, read without a global


def set_sink(sink: Sink | None) -> None:
    """Install *sink* (None: remove the one installed)."""
    _sink[:] = [] if sink is None else [sink]


def to_collector(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: hand the line to the installed sink, if any; the line
    itself goes on unchanged."""
    if _sink:
        with contextlib.suppress(Exception):  # the line matters more than its copy
            _sink[0](method_name, event_dict)
    return event_dict
