"""Shared fixtures: every async test runs on asyncio and on trio, and no test leaves
logging configured for the next one."""

import logging
from collections.abc import Iterator

import pytest
import structlog

from asgikit.logging.bridge import SERVER_LOGGERS, uninstall


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "missing_tool(reason): a tool CI must have is absent (tests/_processes.py)"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("missing_tool")
    if marker is not None:
        pytest.fail(f"ASGIKIT_REQUIRE_TOOLS=1 but {marker.args[0]}", pytrace=False)


@pytest.fixture(autouse=True)
def _global_logging_restored() -> Iterator[None]:
    """asgikit.logging.configure() (the soak stack, config files, the CLI) changes
    structlog's and the standard library's global set-up: put both back."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # Servers started in process (uvicorn.Config sets its loggers up) and asgikit's
    # routing change the servers' loggers too.
    servers = [logging.getLogger(name) for name in SERVER_LOGGERS]
    states = [
        (logger.handlers[:], logger.filters[:], logger.level, logger.propagate, logger.disabled)
        for logger in servers
    ]
    yield
    uninstall()  # asgikit's claim on the console handlers, before the root's are put back
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
    for logger, (kept, filters, old_level, propagate, disabled) in zip(
        servers, states, strict=True
    ):
        logger.handlers[:], logger.filters[:] = kept, filters
        logger.setLevel(old_level)
        logger.propagate, logger.disabled = propagate, disabled
