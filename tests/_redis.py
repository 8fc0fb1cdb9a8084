"""A real redis-server for the tests: started on a free loopback port, stopped by PID.

Use the fixtures by importing them into a test module, under their ``_fixture`` names so
that test parameters named after the fixtures do not shadow an import (ruff F811)::

    from tests._redis import needs_redis, redis_server_fixture, redis_url_fixture  # noqa: F401

``redis_server`` (session) runs one server for the whole session; ``redis_url``
(function) makes sure it runs, flushes it and gives its URL. Fault tests take
``private_redis`` (function): a server of their own they may kill, pause and restart on
the same port without disturbing the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis

from tests._processes import free_port, needs_tool, stop, which

__all__ = [
    "RedisServer",
    "needs_redis",
    "private_redis_fixture",
    "redis_server_fixture",
    "redis_url_fixture",
]

needs_redis = needs_tool("redis-server", "Debian: apt-get install redis-server")
"""Mark for tests that need redis-server: skipped locally without it, failing in CI."""

_START_TIMEOUT = 10.0


class RedisServer:
    """One redis-server process on 127.0.0.1, with the controls fault tests need."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="asgikit-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None, "redis-server is not running"
        return self.process.pid

    def client(self) -> redis.Redis:
        """A synchronous client for inspecting the server (INFO, TTL, GET...)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5.0)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server on ``self.port`` and wait until it answers PING."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                self._dir.name,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}")
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer PING on {self.port}")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGCONT (in case a test paused it), then stop it by PID."""
        if self.process is not None:
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signal.SIGCONT)
            stop(self.process)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Start again on the same port (after ``kill`` or ``stop``)."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections but answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        os.kill(self.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        self.stop()
        self._dir.cleanup()


def _start_server() -> RedisServer:
    binary = which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    server = RedisServer(binary)
    for _attempt in range(3):  # another process may take the free port first
        try:
            server.start()
        except RuntimeError:
            server.cleanup()
            server = RedisServer(binary)
        else:
            return server
    server.start()
    return server


@pytest.fixture(scope="session", name="redis_server")
def redis_server_fixture() -> Iterator[RedisServer]:
    """One redis-server for the session, stopped by PID at the end."""
    server = _start_server()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(name="redis_url")
def redis_url_fixture(redis_server: RedisServer) -> str:
    """The session server's URL, with an empty database for this test."""
    if not redis_server.running():
        redis_server.restart()
    client = redis_server.client()
    try:
        client.flushall()
        client.script_flush()
        client.config_resetstat()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture(name="private_redis")
def private_redis_fixture() -> Iterator[RedisServer]:
    """A redis-server for this test alone, to kill, pause and restart."""
    server = _start_server()
    try:
        yield server
    finally:
        server.cleanup()
