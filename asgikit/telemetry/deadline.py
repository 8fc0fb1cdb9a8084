"""Telemetry's flush and shutdown, bounded: a collector that is down cannot hold a worker.

The SDK's batch span processor does not bound its shutdown and ignores ``force_flush``'s
timeout, and an exporter waits for a collector that does not answer until its own
timeout, once per batch. So each call runs in a daemon thread of its own, all of them
at once, and the caller waits until they are done or the time is up. A call still
running then is left to finish in the background: a daemon thread does not keep the
process from exiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = ["Outcome", "run_within"]

_log: Final = logging.getLogger("asgikit.telemetry")


@dataclass
class Outcome:
    """What the calls run by ``run_within`` did, by name."""

    results: dict[str, object] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    late: list[str] = field(default_factory=list)
    """The calls still running when the time was up."""

    def raise_first(self) -> None:
        """Raise the first call's exception, if one raised."""
        for error in self.errors.values():
            raise error


def run_within(what: str, seconds: float, calls: Mapping[str, Callable[[], object]]) -> Outcome:
    """Run *calls* at once, each in a daemon thread, and wait for them at most *seconds*.

    A call not done by then is logged (``asgikit.telemetry``, a warning naming *what*)
    and left running.
    """
    started = []
    for name, call in calls.items():
        done: list[tuple[bool, object]] = []  # (raised, result or exception), when done

        def run(call: Callable[[], object] = call, done: list[tuple[bool, object]] = done) -> None:
            try:
                done.append((False, call()))
            except BaseException as exc:  # handed to the caller by raise_first
                done.append((True, exc))

        thread = threading.Thread(target=run, name=f"asgikit-telemetry-{what}-{name}", daemon=True)
        thread.start()
        started.append((name, thread, done))
    deadline = time.monotonic() + seconds
    outcome = Outcome()
    for name, thread, done in started:
        thread.join(max(0.0, deadline - time.monotonic()))
        if not done:  # read once: a late thread writes into its own list only
            outcome.late.append(name)
            continue
        raised, value = done[0]
        if raised:
            assert isinstance(value, BaseException)
            outcome.errors[name] = value
        else:
            outcome.results[name] = value
    if outcome.late:
        _log.warning(
            "telemetry.%s: %s not done after export_timeout=%gs; left to finish in the "
            "background (is the collector reachable?)",
            what,
            " and ".join(outcome.late),
            seconds,
        )
    return outcome
