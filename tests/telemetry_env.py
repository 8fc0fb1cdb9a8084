"""What the telemetry tests share: an environment without OpenTelemetry's variables, and
the ``Telemetry`` objects a test made, shut down after it. Import the fixture under its
``_fixture`` name (``from tests.telemetry_env import made_fixture  # noqa: F401``), so
that the tests' parameters named ``made`` do not shadow an import (ruff F811)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from asgikit.telemetry import Telemetry


def without_otel_variables(monkeypatch: pytest.MonkeyPatch, *also: str) -> None:
    """Unset every ``OTEL_*`` variable (and the names in *also*); keep loopback unproxied."""
    for name in list(os.environ):
        if name.startswith("OTEL_") or name in also:
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(name="made")
def made_fixture() -> Iterator[list[Telemetry]]:
    """Telemetry objects to shut down after the test, whatever it asserted."""
    created: list[Telemetry] = []
    yield created
    for item in created:
        item.shutdown()
