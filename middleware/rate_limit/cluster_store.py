"""ClusterStore: the Redis store on Redis Cluster (``redis+cluster://`` URLs).

The same script and the same failure handling as ``RedisStore``, through redis-py's
``redis.asyncio.cluster.RedisCluster``, which follows ``MOVED`` and ``ASK`` redirections
and reloads the slot map after a failover by itself.

A script may only touch keys of one hash slot, so every key carries a hash tag: the
store key ``"<rule>:<kind>:<digest>"`` is stored as ``"<prefix>{<kind>:<digest>}:<rule>"``.
The rules of one request that key the same thing (say, all by client address) land in
one slot and take ONE round trip, all-or-nothing, as on a single Redis. Rules keyed by
different things (``client`` and ``header:x-api-key``, or ``route``) land in different
slots: the checks are then grouped per slot and each group is one script call, in order.
When a later group denies or fails, the groups already consumed are given back (one
refund call each): a request is never let through over a limit, but for the moment between the
two calls another request may see the cells it held and be refused. Round trips per
request: one per slot, plus one per refund on a rejection.

Unlike ``RedisStore``, a failure starts no cool-down: a dead master fails only the calls
for its slots (each within the budgets) until its replica is promoted; the live
masters' slots keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from asgikit.options import mask_passwords

from .redis_store import SCRIPT, SCRIPT_SHA, RedisStore, _ConnectTimeout
from .store import CHARGE, Check, Decision, StoreError, weigh

__all__ = ["ClusterStore", "parse_cluster_url"]

SCHEMES: Final = frozenset({"redis+cluster", "rediss+cluster"})
_UNCHECKED: Final = Decision(True, 0, 0.0, 0.0)


def parse_cluster_url(url: str) -> dict[str, Any]:
    """RedisCluster's arguments for ``redis+cluster://[user:password@]host:port[,host:port...]``
    (``rediss+cluster://`` for TLS; ``?max_connections=N`` per node).

    Raises:
        ValueError: not such a URL.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError(f"expected redis+cluster:// or rediss+cluster://, got {url!r}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    nodes = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port, got {item!r}")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    options: dict[str, Any] = {"startup_nodes": nodes}
    if userinfo:
        username, _, password = userinfo.partition(":")
        options["username"] = unquote(username) or None
        options["password"] = unquote(password) or None
    if parts.scheme.lower() == "rediss+cluster":
        options["ssl"] = True
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name != "max_connections" or not value.isdigit() or int(value) < 1:
            raise ValueError(f"unknown or bad option {name}={value!r} (max_connections=N)")
        options["max_connections"] = int(value)
    if parts.path not in ("", "/"):
        raise ValueError("a cluster has one database: leave the path out")
    return options


class ClusterStore(RedisStore):
    """GCRA state on Redis Cluster (see the module docstring).

    Args: those of ``RedisStore``; *url* is a ``redis+cluster://`` URL listing one or
    more nodes (the others are discovered).
    """

    def _fail(self, client: Any, loop: asyncio.AbstractEventLoop, exc: Exception) -> None:
        # No cool-down: one dead master says nothing of the others, whose slots keep
        # working (and a refund must still be attempted). Calls to the dead one's slots
        # fail until redis-py's reloaded slot map names its promoted replica. The client
        # stays: it reloads the slot map itself, and a new one would only know the
        # nodes of the URL, which may be the one that died.
        self.failures += 1

    _calls: asyncio.Semaphore

    def _check_url(self, url: str) -> None:
        try:
            parse_cluster_url(url)
        except ValueError as exc:
            raise ValueError(f"bad Redis Cluster URL {mask_passwords(url)!r}: {exc}") from None
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError("prefix: no braces on Redis Cluster (they would be the hash tag)")

    def _stored_key(self, key: str) -> str:
        name, colon, rest = key.partition(":")
        if not colon:
            return f"{self.prefix}{{{key}}}"
        return f"{self.prefix}{{{rest}}}:{name}"

    def _client_for(self, loop: asyncio.AbstractEventLoop) -> Any:
        if self._client is None or self._loop is not loop:
            options = parse_cluster_url(self.url)
            options.setdefault("max_connections", 50)
            self._client = RedisCluster(
                **options,
                socket_connect_timeout=self.connect_timeout,
                require_full_coverage=False,  # the live masters' slots keep working
            )
            # RedisCluster's pools raise when full instead of waiting: calls wait here,
            # as RedisStore's blocking pool makes them, within connect_timeout.
            self._calls = asyncio.Semaphore(options["max_connections"])
            self._loop = loop
        return self._client

    async def _run(self, client: Any, count: int, args: list[str | int]) -> Any:
        calls = self._calls
        try:
            async with asyncio.timeout(self.connect_timeout):
                await client.initialize()  # the slot map: at once when it has one
                await calls.acquire()
        except TimeoutError as exc:
            raise _ConnectTimeout from exc
        try:
            async with asyncio.timeout(self.timeout):
                self.round_trips += 1
                try:
                    return await client.execute_command("EVALSHA", SCRIPT_SHA, count, *args)
                except NoScriptError:  # a new master (after a failover) starts without it
                    self.round_trips += 1
                    return await client.execute_command("EVAL", SCRIPT, count, *args)
        finally:
            calls.release()

    async def acquire(self, checks: Sequence[Check]) -> list[Decision]:
        """One decision per check, all-or-nothing: one round trip per hash slot."""
        groups: dict[int, list[int]] = {}
        for index, check in enumerate(checks):
            groups.setdefault(key_slot(self._stored_key(check[0]).encode()), []).append(index)
        if len(groups) <= 1:
            return await super().acquire(checks)
        decisions: list[Decision] = [_UNCHECKED] * len(checks)
        consumed: list[Check] = []
        for indexes in groups.values():
            part = [checks[index] for index in indexes]
            try:
                answers = await super().acquire(part)
            except StoreError:
                await self._refund(consumed)
                raise
            for index, decision in zip(indexes, answers, strict=True):
                decisions[index] = decision
            if not all(decision.allowed for decision in answers):
                await self._refund(consumed)
                return decisions
            consumed += part
        return decisions

    async def _refund(self, consumed: Sequence[Check]) -> None:
        """Give back the cells of groups consumed before another group denied."""
        by_slot: dict[int, list[Check]] = {}
        for check in consumed:
            key, quota, _, take = weigh(check)
            if take:
                slot = key_slot(self._stored_key(key).encode())
                by_slot.setdefault(slot, []).append((key, quota, CHARGE, -take))
        for refunds in by_slot.values():
            with contextlib.suppress(StoreError):  # the cells then come back with time
                await super().acquire(refunds)
