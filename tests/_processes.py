"""Processes the end-to-end tests start: a free loopback port, and stopping by PID."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import pytest

#: Set by .ci/run: a test whose tool is missing fails there instead of skipping.
REQUIRE_TOOLS = os.environ.get("ASGIKIT_REQUIRE_TOOLS") == "1"


def which(tool: str) -> str | None:
    """Path of *tool*, or ``None``; ``ASGIKIT_<TOOL>`` (dashes as underscores) overrides."""
    override = os.environ.get("ASGIKIT_" + tool.upper().replace("-", "_"))
    return override or shutil.which(tool)


def needs_tool(tool: str, install: str) -> pytest.MarkDecorator:
    """Mark a test that runs *tool*: skipped with *install* as the reason when it is absent.

    Under ``ASGIKIT_REQUIRE_TOOLS=1`` (CI) a missing tool is a failure, not a skip, so
    CI cannot pass by skipping what it was meant to run.
    """
    if which(tool) is not None:
        return pytest.mark.skipif(False, reason=f"{tool} is installed")
    reason = f"{tool} is not installed ({install})"
    if REQUIRE_TOOLS:
        return pytest.mark.missing_tool(reason)
    return pytest.mark.skip(reason=reason)


_PORTS: Final = range(20000, 32000)
"""Below Linux's ephemeral range (32768-60999): the port a test hands a server must not
also be the local port the kernel gives some client connection (the servers' own
probes, other tests' clients) before the server listens; a port from bind(0) can be."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, outside the ephemeral range."""
    for _ in range(200):
        port = random.choice(_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:  # all taken: any
        probe.bind(("127.0.0.1", 0))
        found: int = probe.getsockname()[1]
        return found


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0, *, group: bool = False) -> None:
    """SIGTERM *process* (or its whole process group), then SIGKILL after *timeout*."""
    if process.poll() is not None:
        return

    def signal_it(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)

    signal_it(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_it(signal.SIGKILL)
        process.wait(timeout=timeout)


def wait_until_answering(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0
) -> None:
    """Wait until *url* answers an HTTP GET (any status), or fail with the end of the
    process's *log* when it exits or the *timeout* passes."""
    import httpx  # the tests' client; this module is also used without it

    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"the server exited:\n{log.read_text()[-3000:]}"
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"no answer at {url}:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def reports_of_workers_started_together(
    script: str, url: str, calls: int, count: int, cwd: Path | None = None
) -> list[dict[str, Any]]:
    """Run *script* in *count* Python processes (argv: *url*, a start time two seconds
    from now, so that every one has imported what it needs first, and *calls*); each
    prints one JSON report. Their reports, once all have exited with status 0."""
    start_at = time.time() + 2.0
    argv = [sys.executable, "-c", script, url, str(start_at), str(calls)]
    workers = [
        subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(count)
    ]
    reports = []
    for worker in workers:
        try:
            out, err = worker.communicate(timeout=60)
        finally:
            if worker.poll() is None:  # pragma: no cover - only on a hung worker
                worker.kill()
                worker.wait()
        assert worker.returncode == 0, err.decode()
        reports.append(json.loads(out))
    return reports
