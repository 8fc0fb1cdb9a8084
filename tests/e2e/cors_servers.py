"""Helpers for the CORS browser test: uvicorn in a thread, Chromium by PID over CDP.

Everything listens on 127.0.0.1 only, every wait is bounded, and whatever is started is
stopped in a ``finally`` (the server by its thread, the browser by its process id).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import uvicorn

from asgikit.types import ASGIApp
from tests._processes import stop

__all__ = ["CHROMIUM_FLAGS", "chromium", "loopback_socket", "serve"]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def loopback_socket() -> socket.socket:
    """A listening-ready TCP socket bound to a free port of 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def port_of(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def serve(app: ASGIApp, sockets: Sequence[socket.socket], timeout: float = 10.0) -> Iterator[None]:
    """Serve ``app`` with uvicorn on ``sockets`` in a thread for the block's duration."""
    config = uvicorn.Config(
        app,
        http="h11",
        ws="websockets-sansio",
        loop="asyncio",
        lifespan="off",
        log_level="warning",
        access_log=False,
        log_config=None,  # the test process's logging stays as the other tests left it
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": list(sockets)}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within the timeout")
            time.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def chromium(executable: str, timeout: float = 15.0) -> Iterator[str]:
    """Run headless Chromium; yield its DevTools endpoint URL; stop it by PID."""
    with (
        tempfile.TemporaryDirectory(prefix="asgikit-chromium-") as profile,
        Path(profile, "chromium.log").open("wb") as log,
    ):
        process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            active = Path(profile, "DevToolsActivePort")
            deadline = time.monotonic() + timeout
            while not active.exists() or not active.read_text().strip():
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    output = Path(profile, "chromium.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"Chromium did not start its DevTools server:\n{output}")
                time.sleep(0.05)
            port = int(active.read_text().split()[0])
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(process, 5, group=True)  # the browser's whole process group
