"""A real Redis Cluster for the tests: six redis-server processes on loopback.

Three masters and three replicas, created with ``redis-cli --cluster create
... --cluster-replicas 1``, in a temporary directory, on free loopback ports; stopped by
PID at the end of the session. Import the fixture under its ``_fixture`` name::

    from tests._redis_cluster import needs_cluster, redis_cluster_fixture  # noqa: F401

Fault tests may ``kill`` a master (SIGKILL, by PID), ``wait_for_failover`` until its
replica took over, and ``restart`` it: it rejoins as a replica, so the session's
cluster is whole again for the next test.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests._processes import free_port, needs_tool, stop, which

__all__ = ["RedisCluster", "needs_cluster", "redis_cluster_fixture"]

_MISSING = [tool for tool in ("redis-server", "redis-cli") if which(tool) is None]
needs_cluster = needs_tool(_MISSING[0] if _MISSING else "redis-cli", "apt-get install redis-server")
"""Mark for tests that need redis-server and redis-cli (skipped locally, failing in CI)."""

_TIMEOUT = 30.0
NODE_TIMEOUT_MS = 1000
"""cluster-node-timeout: how soon a dead master is noticed and its replica promoted."""


class RedisCluster:
    """Six redis-server processes forming one cluster on 127.0.0.1."""

    def __init__(self, server: str, cli: str, nodes: int = 6) -> None:
        self.server = server
        self.cli = cli
        self.ports = [free_port() for _ in range(nodes)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._dir = tempfile.TemporaryDirectory(prefix="asgikit-redis-cluster-")

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming every node (any live one will do)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5.0)

    def start_node(self, port: int) -> None:
        directory = Path(self._dir.name) / str(port)
        directory.mkdir(exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                self.server,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # A replica takes over however long ago it last heard from its master.
                "--cluster-replica-validity-factor", "0",
                "--logfile", str(directory / "redis.log"),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._until(lambda: self._pings(port), f"node {port} answering PING")

    def start(self) -> None:
        for index, port in enumerate(self.ports):
            for _attempt in range(3):  # another process may take the free port first
                try:
                    self.start_node(port)
                    break
                except (AssertionError, RuntimeError):
                    port = self.ports[index] = free_port()
            else:
                self.start_node(port)
        subprocess.run(
            [
                self.cli,
                "--cluster", "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas", "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=_TIMEOUT,
        )  # fmt: skip
        self.wait_until_ok()
        self._until(self._replicated, "every master with a replica in sync")

    def wait_until_ok(self) -> None:
        """Until every running node says ``cluster_state:ok`` with all slots served."""
        self._until(self._healthy, "cluster_state:ok on every node")

    def masters(self) -> list[int]:
        """The ports of the running masters, as the nodes see them."""
        port = next(p for p in self.ports if self.running(p))
        with contextlib.closing(self.client(port)) as client:
            nodes = client.execute_command("CLUSTER", "NODES").decode()
        masters = []
        for line in nodes.splitlines():
            fields = line.split()
            if "master" in fields[2] and "fail" not in fields[2]:
                masters.append(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        return sorted(masters)

    def master_of(self, key: str) -> int:
        """The port of the master serving *key*'s slot now."""
        port = next(p for p in self.ports if self.running(p))
        with contextlib.closing(self.client(port)) as client:
            slot = client.execute_command("CLUSTER", "KEYSLOT", key)
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise AssertionError(f"no master serves {key!r}")  # pragma: no cover

    def running(self, port: int) -> bool:
        process = self.processes.get(port)
        return process is not None and process.poll() is None

    def kill(self, port: int) -> None:
        """SIGKILL one node by PID, as a crash would, and reap it."""
        process = self.processes[port]
        process.kill()
        process.wait(timeout=10)

    def wait_for_failover(self, dead: int) -> None:
        """Until *dead* is no master any more and the cluster serves every slot."""
        self._until(lambda: dead not in self.masters() and self._healthy(), "failover")

    def restart(self, port: int) -> None:
        """Start a killed node again: it rejoins (as a replica, after a failover)."""
        if not self.running(port):
            self.start_node(port)
        self.wait_until_ok()
        self._until(self._replicated, "every master with a replica in sync")

    def flush(self) -> None:
        for port in self.masters():
            with contextlib.closing(self.client(port)) as client:
                client.flushall()
                client.script_flush()

    def stop(self) -> None:
        for process in self.processes.values():
            stop(process)
        self._dir.cleanup()

    def _pings(self, port: int) -> bool:
        assert self.running(port), f"redis-server on {port} exited"
        with (
            contextlib.closing(self.client(port)) as client,
            contextlib.suppress(redis.ConnectionError),
        ):
            return bool(client.ping())
        return False

    def _healthy(self) -> bool:
        for port in self.ports:
            if not self.running(port):
                continue
            with contextlib.closing(self.client(port)) as client:
                try:
                    info = client.execute_command("CLUSTER", "INFO").decode()
                except redis.RedisError:
                    return False
            if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                return False
        return True

    def _replicated(self) -> bool:
        for port in self.masters():
            with contextlib.closing(self.client(port)) as client:
                info = client.info("replication")
            if info.get("connected_slaves", 0) < 1 or info["slave0"]["state"] != "online":
                return False
        return True

    @staticmethod
    def _until(check: object, what: str) -> None:
        deadline = time.monotonic() + _TIMEOUT
        while not check():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster: no {what} within {_TIMEOUT:g}s")
            time.sleep(0.05)


@pytest.fixture(scope="session", name="redis_cluster")
def redis_cluster_fixture() -> Iterator[RedisCluster]:
    """Six redis-server processes forming a cluster, for the session; stopped by PID."""
    server, cli = which("redis-server"), which("redis-cli")
    if server is None or cli is None:
        pytest.skip("redis-server and redis-cli are needed (apt-get install redis-server)")
    cluster = RedisCluster(server, cli)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
