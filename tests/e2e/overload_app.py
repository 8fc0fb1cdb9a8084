"""An app whose latency grows with concurrency, for the overload runs.

It has ``KNEE`` workers (a semaphore) and each request holds one for ``SERVICE``
seconds: up to ``KNEE`` requests in flight it answers in ``SERVICE``; past that, the
excess queues inside the app, and latency grows with the queue (a server with ``KNEE``
threads or database connections behaves so). ``/health`` answers at once.

Served two ways, by import string:

- ``tests.e2e.overload_app:bare``: the app alone;
- ``tests.e2e.overload_app:limited``: under ConcurrencyLimitMiddleware with its
  defaults (the adaptive limit), ``/health`` excluded.

``/unlimited/...`` goes round the limiter in ``limited`` too (an excluded path), so one
server process serves both the unprotected and the protected run.
"""

from __future__ import annotations

from typing import Final

import anyio

from asgikit.middleware.concurrency_limit import ConcurrencyLimitMiddleware
from asgikit.types import Receive, Scope, Send

__all__ = ["KNEE", "SERVICE", "bare", "limited"]

KNEE: Final = 8
SERVICE: Final = 0.1

_workers: list[anyio.Semaphore] = []


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    """KNEE workers, SERVICE seconds each; /health at once."""
    if scope["type"] == "lifespan":  # nothing to set up
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] != "/health":
        if not _workers:  # made in the server's event loop, on first use
            _workers.append(anyio.Semaphore(KNEE))
        async with _workers[0]:
            await anyio.sleep(SERVICE)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


limited = ConcurrencyLimitMiddleware(bare, exclude_paths=["/health", "/unlimited"])
