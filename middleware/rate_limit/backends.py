"""Which store a storage URL names: memory in this process, or Redis (loaded on use)."""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl, urlsplit

from asgikit.options import mask_passwords

from .store import MemoryStore, Store

__all__ = ["open_store"]

_REDIS_SCHEMES: Final = frozenset({"redis", "rediss", "unix"})
_CLUSTER_SCHEMES: Final = frozenset({"redis+cluster", "rediss+cluster"})


def open_store(
    url: str,
    *,
    max_keys: int = 100_000,
    timeout: float = 0.1,
    prefix: str = "asgikit:rl:",
    connect_timeout: float = 1.0,
) -> Store:
    """The store a storage URL names, without any I/O (connections are made lazily).

    ``memory://`` (optionally ``memory://?max_keys=N``) gives a ``MemoryStore``;
    ``redis://``, ``rediss://`` and ``unix://`` give a ``RedisStore`` (the ``redis``
    extra), ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` with TLS)
    a ``ClusterStore`` on Redis Cluster; their commands take at most *timeout* seconds,
    their connections at most *connect_timeout*, and their keys start with *prefix*.

    Raises:
        ValueError: unknown scheme, or a bad ``memory://`` URL or option.
        ImportError: a Redis URL without redis-py installed.
    """
    scheme = url.partition("://")[0].lower() if isinstance(url, str) and "://" in url else ""
    if scheme == "memory":
        parts = urlsplit(url)
        if parts.netloc or parts.path or parts.fragment:
            raise ValueError(
                f"expected 'memory://' or 'memory://?max_keys=N', got {mask_passwords(url)!r}"
            )
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name != "max_keys":
                raise ValueError(f"unknown memory:// option {name!r} (expected max_keys)")
            if not value.isdigit():
                raise ValueError(f"max_keys: expected an integer, got {value!r}")
            max_keys = int(value)
        return MemoryStore(max_keys=max_keys)
    if scheme in _REDIS_SCHEMES or scheme in _CLUSTER_SCHEMES:
        try:
            from asgikit.middleware.rate_limit.cluster_store import ClusterStore
            from asgikit.middleware.rate_limit.redis_store import RedisStore
        except ImportError as exc:
            raise ImportError(
                f"storage {scheme}:// needs redis-py: pip install 'asgikit[redis]'"
            ) from exc
        kind = ClusterStore if scheme in _CLUSTER_SCHEMES else RedisStore
        return kind(url, timeout=timeout, prefix=prefix, connect_timeout=connect_timeout)
    raise ValueError(
        f"unsupported storage URL {mask_passwords(url)!r}: expected memory://, redis://, "
        "rediss://, unix://, redis+cluster:// or rediss+cluster://"
    )
