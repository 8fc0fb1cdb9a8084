"""Server processes for the benchmarks that need one: a free loopback port, waiting until
it accepts connections, stopping it by its PID.

Every benchmark server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable

from benchmarks.harness import BenchmarkError

__all__ = ["HOST", "STARTUP_TIMEOUT", "STOP_TIMEOUT", "free_port", "stop", "wait_until_accepting"]

HOST = "127.0.0.1"  # the only host a benchmark ever starts or loads
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after ``STOP_TIMEOUT``; nothing if it already exited."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def wait_until_accepting(
    process: subprocess.Popen[bytes], port: int, output: Callable[[], str]
) -> None:
    """Return once *port* accepts connections.

    Raises:
        BenchmarkError: The process exited first, or ``STARTUP_TIMEOUT`` passed; the
            message ends with what *output* returns (the server's log).
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            raise BenchmarkError(
                f"the server exited with status {process.returncode} before accepting "
                f"connections; its output:\n{output()}"
            )
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchmarkError(
                    f"the server did not accept connections on {HOST}:{port} within "
                    f"{STARTUP_TIMEOUT:g} s; its output:\n{output()}"
                ) from None
            time.sleep(0.05)
