"""RedisStore: GCRA rate-limit state shared across processes and hosts through Redis.

One ``acquire`` is one round trip: ``EVALSHA`` of ``SCRIPT`` with every key of the
request. The script reads Redis's own clock (``TIME``), so servers with skewed clocks
share limits correctly; decides every check; stores the new TATs only when all checks
allow (all-or-nothing, atomic because Redis runs a script alone); sets each key's TTL to
the time until its bucket is full again; and returns every decision. When Redis has
forgotten the script (restart, ``SCRIPT FLUSH``) the ``NOSCRIPT`` error costs one more
round trip: ``EVAL`` with the source, which also caches it again.

Failure handling:

* the ``timeout`` budget covers the command alone, from sending it to reading the
  reply: getting a connection (waiting for a free one, or opening one: TCP, TLS, AUTH)
  has a budget of its own, ``connect_timeout``, so that a burst of first requests on a
  cold pool does not fail open only because connections were being opened;
* ``open()`` (at lifespan start-up) connects, and loads the script, before the first
  request: a server that starts cold does not pay for either on its first burst;
* exceeding a budget or any Redis error raises ``StoreError`` chained to the cause,
  nothing else; a connection whose reply was not read to the end is closed, never
  reused;
* after a connection failure, or a second timeout in a row, the client (and its
  connection pool) is dropped and rebuilt on next use, so a broken connection never
  sticks; for ``cooldown`` seconds ``acquire`` then fails fast without calling Redis,
  then one call probes it again, so a dead Redis does not cost the whole budget on
  every request, while one slow reply does not lift the limit for a whole cool-down;
* redis-py's asyncio client runs on asyncio only: under trio ``acquire`` raises
  ``StoreError`` saying so.

Connections: a blocking pool of at most 50 per process (``?max_connections=N`` in the
URL changes it).

Redis Cluster is ``ClusterStore`` (``cluster_store``): this store's client is a plain
(non-cluster) client. ``ClusterStore`` keeps neither the cool-down nor the client
replacement: both would stop the live masters' slots for one dead master.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Sequence
from typing import Any, Final

import redis.asyncio
from redis.exceptions import NoScriptError, ResponseError

from asgikit.options import mask_passwords, number

from .store import MICROSECONDS, Check, Decision, StoreError, weigh

__all__ = ["SCRIPT", "RedisStore"]

SCRIPT: Final = """
-- GCRA with n cells for every KEYS[i]; ARGV[4i-3..4i] = interval (T) and tolerance (tau)
-- in microseconds, need and take in cells (need < 0: always allowed, a charge).
-- Returns four integers per key: allowed (1/0), remaining, reset and retry-after
-- (microseconds). New TATs are stored only when all allow; one at or before now is
-- dropped (a refund down to a full bucket).
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local pending = {}
local result = {}
local allowed_all = true
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[4 * i - 3])
  local tolerance = tonumber(ARGV[4 * i - 2])
  local need = tonumber(ARGV[4 * i - 1])
  local take = tonumber(ARGV[4 * i])
  local tat = pending[key]
  if tat == nil then
    tat = tonumber(redis.call('GET', key))
  end
  if tat == nil or tat < now then
    tat = now
  end
  local wait = tat + need * interval - now
  local at = 4 * i - 3
  if need < 0 or wait <= tolerance then
    local new_tat = tat + take * interval
    if take ~= 0 then
      pending[key] = new_tat
    end
    local held = math.max(0, new_tat - now)
    result[at] = 1
    result[at + 1] = math.max(0, math.floor((tolerance - held) / interval))
    result[at + 2] = held
    result[at + 3] = 0
  else
    allowed_all = false
    result[at] = 0
    result[at + 1] = 0
    result[at + 2] = tat - now
    result[at + 3] = wait - tolerance
  end
end
if allowed_all then
  for key, tat in pairs(pending) do
    if tat > now then
      -- %.0f: tostring() keeps only 14 digits, a microsecond timestamp has 16.
      redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
    else
      redis.call('DEL', key)
    end
  end
end
return result
"""

SCRIPT_SHA: Final = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()

_TRIO_MESSAGE: Final = (
    "RedisStore needs asyncio: redis-py's asyncio client does not run under trio "
    "(run the server on asyncio, or use memory:// storage)"
)


class RedisStore:
    """GCRA state in Redis, one round trip per ``acquire`` (see the module docstring).

    Constructing it does no I/O: the client is created by ``open()`` or on first use.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL, as redis-py reads it.
        timeout: seconds one ``acquire``'s command may take, from sending it to reading
            the reply.
        prefix: put before every key.
        cooldown: seconds to fail fast after a connection failure, or after a second
            timeout in a row.
        connect_timeout: seconds to get a connection: to wait for a free one in the
            pool, or to open one.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.1,
        prefix: str = "asgikit:rl:",
        cooldown: float = 1.0,
        connect_timeout: float = 1.0,
    ) -> None:
        number(timeout, "timeout", above=0)
        number(cooldown, "cooldown", minimum=0)
        number(connect_timeout, "connect_timeout", above=0)
        if not isinstance(prefix, str):
            raise TypeError(f"prefix: expected a string, got {prefix!r}")
        self.prefix = prefix
        self._check_url(url)
        self.url = url
        self.timeout = float(timeout)
        self.cooldown = float(cooldown)
        self.connect_timeout = float(connect_timeout)
        self.round_trips = 0
        self.failures = 0
        self._client: Any = None  # redis.asyncio.Redis, or RedisCluster (ClusterStore)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry_at = 0.0
        self._timed_out = False  # the last call ran out of its budget
        self._disposing: set[asyncio.Task[None]] = set()

    def _check_url(self, url: str) -> None:
        try:
            redis.asyncio.connection.parse_url(url)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"bad Redis URL {mask_passwords(url)!r}: {exc}") from None

    async def open(self) -> None:
        """Create the client, connect and load the script, so that the first requests
        pay for neither. Redis being down is no error here: the first call reports it."""
        client = self._client_for(_running_loop())
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.connect_timeout):
                await client.script_load(SCRIPT)

    async def close(self) -> None:
        """Close the client and its connection pool; a later call opens a new one."""
        loop = _current_loop()
        client, made_on = self._client, self._loop
        self._client = self._loop = None
        if client is not None and made_on is loop:  # another loop's client cannot be closed
            await _dispose(client)
        disposing = [task for task in self._disposing if task.get_loop() is loop]
        if disposing:
            await asyncio.gather(*disposing)

    async def acquire(self, checks: Sequence[Check]) -> list[Decision]:
        """One decision per check, all-or-nothing, in one round trip.

        Raises:
            StoreError: Redis failed, did not answer within the budgets, failed less
                than ``cooldown`` seconds ago, or this is not an asyncio event loop.
        """
        if not checks:
            return []
        loop = _running_loop()
        if self._retry_at:
            now = time.monotonic()
            if now < self._retry_at:
                raise StoreError(f"Redis failed less than {self.cooldown:g}s ago; not retrying yet")
            self._retry_at = now + self.cooldown  # this call probes; the others fail fast
        client = self._client_for(loop)
        try:
            reply = await self._run(client, len(checks), self._script_args(checks))
        except ResponseError as exc:
            self._retry_at = 0.0  # Redis answered: it is up
            raise StoreError(f"Redis refused the rate-limit script: {exc}") from exc
        except Exception as exc:
            self._fail(client, loop, exc)
            raise StoreError(_failure(exc, self)) from exc
        self._retry_at = 0.0
        self._timed_out = False
        return [
            Decision(
                reply[at] == 1,
                reply[at + 1],
                reply[at + 2] / MICROSECONDS,
                reply[at + 3] / MICROSECONDS,
            )
            for at in range(0, len(reply), 4)
        ]

    def _script_args(self, checks: Sequence[Check]) -> list[str | int]:
        weighed = [weigh(check) for check in checks]
        stored_key = self._stored_key
        args: list[str | int] = [stored_key(key) for key, _, _, _ in weighed]
        for _, quota, need, take in weighed:
            args += (quota.interval_us, quota.tolerance_us, need, take)
        return args

    def _stored_key(self, key: str) -> str:
        return self.prefix + key

    async def _run(self, client: Any, count: int, args: list[str | int]) -> Any:
        pool = client.connection_pool
        try:
            async with asyncio.timeout(self.connect_timeout):
                connection = await pool.get_connection()
        except TimeoutError as exc:
            raise _ConnectTimeout from exc
        try:
            async with asyncio.timeout(self.timeout):  # the command alone
                return await self._call(connection, count, args)
        except BaseException:
            # A reply that was not read to the end would be read by the next command.
            with contextlib.suppress(Exception):
                await connection.disconnect()
            raise
        finally:
            await pool.release(connection)

    async def _call(self, connection: Any, count: int, args: list[str | int]) -> Any:
        self.round_trips += 1
        try:
            await connection.send_command("EVALSHA", SCRIPT_SHA, count, *args)
            return await connection.read_response()
        except NoScriptError:
            self.round_trips += 1
            await connection.send_command("EVAL", SCRIPT, count, *args)
            return await connection.read_response()

    def _client_for(self, loop: asyncio.AbstractEventLoop) -> Any:
        # A client belongs to the loop it was made on (tests run one loop per test).
        if self._client is None or self._loop is not loop:
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.url,
                # The wait for a free connection is bounded by connect_timeout around it
                # (_run): the pool's own bound would raise a ConnectionError, taken for a
                # Redis that is down.
                timeout=None,
                socket_connect_timeout=self.connect_timeout,
            )
            self._client = redis.asyncio.Redis.from_pool(pool)
            self._loop = loop
        return self._client

    def _fail(self, client: Any, loop: asyncio.AbstractEventLoop, exc: Exception) -> None:
        self.failures += 1
        timed_out = isinstance(exc, TimeoutError) and not isinstance(exc, _ConnectTimeout)
        if timed_out and not self._timed_out:
            # One slow reply: its connection is closed, the pool and the limit stay.
            self._timed_out = True
            self._retry_at = 0.0
            return
        self._timed_out = False
        self._retry_at = time.monotonic() + self.cooldown
        if self._client is client:
            # Its pool may hold half-read connections: start over with a new client.
            self._client = self._loop = None
            task = loop.create_task(_dispose(client))
            self._disposing.add(task)
            task.add_done_callback(self._disposing.discard)


class _ConnectTimeout(TimeoutError):
    """No connection within ``connect_timeout``."""


def _failure(exc: Exception, store: RedisStore) -> str:
    if isinstance(exc, _ConnectTimeout):
        return f"no connection to Redis within {store.connect_timeout:g}s"
    if isinstance(exc, TimeoutError):
        return f"Redis did not answer within {store.timeout:g}s"
    return f"Redis call failed: {exc!r}"


def _running_loop() -> asyncio.AbstractEventLoop:
    loop = _current_loop()
    if loop is None:
        raise StoreError(_TRIO_MESSAGE)
    return loop


def _current_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _dispose(client: Any) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await client.aclose()
