"""DevInspectorMiddleware's own endpoints: the page, the JSON API, the live event stream,
and who may see them (loopback only, unless forced)."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Final

import anyio

from asgikit.scopes import PEER_KEY
from asgikit.types import Message, Receive, Scope, Send

from .page import CONTENT_SECURITY_POLICY, page
from .records import Record, Renderer, encode
from .shared import SharedStore
from .store import RingBuffer, SpanStore

__all__ = ["Endpoints", "is_loopback", "local_client", "local_server"]

# Headers a proxy adds: the request came through one, so its real client may be anyone.
_FORWARDING: Final = frozenset({b"forwarded", b"x-forwarded-for", b"x-real-ip"})
_COMMON: Final = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
_JSON: Final = b"application/json"
_EVENT_PREFIX: Final = b"event: request\ndata: "
_KEEPALIVE: Final = b": keep-alive\n\n"
# The page sends it with its clear request: a header no form can send, and that a script
# on another origin cannot send without a CORS preflight, which is never answered.
_CLEAR_HEADER: Final = (b"x-asgikit-inspector", b"clear")


@functools.lru_cache(maxsize=64)
def is_loopback(host: str) -> bool:
    """Whether *host* (an address or a name, as in a scope or a Host header) is this machine.

    ``localhost`` and ``*.localhost`` count (RFC 6761 reserves them for loopback); any
    other name does not, since it may resolve anywhere.
    """
    host = host.strip().lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def local_server(scope: Scope) -> bool:
    """Whether the connection arrived on a loopback address (or a Unix socket)."""
    server = scope.get("server")
    if server is None or server[1] is None:  # a Unix socket: only local processes reach it
        return True
    return is_loopback(server[0])


def _host_of(header: bytes) -> str:
    text = header.decode("latin-1")
    if text.startswith("["):
        return text.partition("]")[0] + "]"
    return text.rpartition(":")[0] if text.count(":") == 1 else text


def local_client(scope: Scope) -> bool:
    """Whether a request for the inspector's pages may be answered.

    The client and the peer are loopback addresses, no proxy forwarded the request, and
    the ``Host`` names this machine: a page on another site that rebinds its own name to
    127.0.0.1 (DNS rebinding) sends its own name, and is refused.
    """
    for address in (scope.get("client"), scope.get(PEER_KEY)):
        if address is not None and not is_loopback(address[0]):
            return False
    for name, value in scope.get("headers", ()):
        if name in _FORWARDING:
            return False
        if name == b"host" and not is_loopback(_host_of(value)):
            return False
    return True


def _start(status: int, content_type: bytes, length: int | None) -> Message:
    headers = [(b"content-type", content_type), *_COMMON]
    if length is not None:
        headers.append((b"content-length", b"%d" % length))
    return {"type": "http.response.start", "status": status, "headers": headers}


def _last_seen(scope: Scope) -> int:
    """The newest record the client has: ``?after=N`` or ``Last-Event-ID`` (a reconnect)."""
    seen = 0
    for part in scope.get("query_string", b"").split(b"&"):
        name, _, value = part.partition(b"=")
        if name == b"after" and value.isdigit():
            seen = max(seen, int(value))
    for name, value in scope.get("headers", ()):
        if name == b"last-event-id" and value.strip().isdigit():
            seen = max(seen, int(value))
    return seen


class Endpoints:
    """Answer the requests under the inspector's path.

    Args:
        ring: The kept requests.
        store: The kept spans.
        renderer: Turns them into JSON.
        tracing: Tells whether a span processor is attached (asked at each request).
        max_rows: How many rows the page keeps.
        notice: Plain text the page shows under its heading (empty: none).
        shared: The store every worker writes to: the page shows it instead of the ring
            (and ``shared = None`` once it is closed).
    """

    keepalive: float = 15.0
    """Seconds of quiet after which the event stream sends a comment, to keep it open."""
    stream_seconds: float = 300.0
    """Seconds after which the event stream ends; the browser reconnects where it was,
    and a server shutting down never waits longer for it."""
    poll_seconds: float = 0.5
    """How often the event stream looks at the shared store (the other workers' requests
    wake nothing here)."""

    def __init__(
        self,
        *,
        ring: RingBuffer[Record],
        store: SpanStore,
        renderer: Renderer,
        tracing: Callable[[], bool],
        max_rows: int,
        notice: str = "",
        shared: SharedStore | None = None,
    ) -> None:
        self._ring = ring
        self._store = store
        self._renderer = renderer
        self._tracing = tracing
        self._max_rows = max_rows
        self.share(shared, notice)
        self._waiters: set[anyio.Event] = set()

    def share(self, shared: SharedStore | None, notice: str) -> None:
        """Show *shared* (None: the ring), with *notice* under the page's heading."""
        self.shared = shared
        self._page = page(self._max_rows, notice)
        self._page_start = _start(200, b"text/html; charset=utf-8", len(self._page))
        self._page_start["headers"].append((b"content-security-policy", CONTENT_SECURITY_POLICY))

    def notify(self) -> None:
        """A request was recorded: wake the event streams."""
        waiters = self._waiters
        if waiters:
            self._waiters = set()
            for event in waiters:
                event.set()

    async def clear(self, scope: Scope, send: Send, clear: Callable[[], None]) -> None:
        """``POST api/clear`` from the page: forget every kept request."""
        if scope["method"] != "POST":
            await self._respond(send, 405, b"text/plain", b"POST only\n", [(b"allow", b"POST")])
            return
        if _CLEAR_HEADER not in scope.get("headers", ()):
            await self._respond(send, 403, b"text/plain", b"the page's own request only\n")
            return
        clear()
        await self._respond(send, 204, b"text/plain", b"")

    async def serve(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        """Answer *route*, the path below the inspector's (``""`` is the page)."""
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            await self._respond(send, 405, b"text/plain", b"GET only\n", [(b"allow", b"GET")])
            return
        head = method == "HEAD"
        if route == "":
            await send(self._page_start)
            await send({"type": "http.response.body", "body": b"" if head else self._page})
        elif route == "api/requests":
            body = self._listing()
            await self._respond(send, 200, _JSON, b"" if head else body, length=len(body))
        elif route.startswith("api/requests/") and route[13:].isdigit():
            found = self._detail(int(route[13:]))
            if found is None:
                await self._respond(send, 404, _JSON, b'{"error":"not kept"}')
                return
            await self._respond(send, 200, _JSON, b"" if head else found, length=len(found))
        elif route == "api/events" and not head:
            await self._events(scope, receive, send)
        else:
            await self._respond(send, 404, b"text/plain", b"Not Found\n")

    def _listing(self) -> bytes:
        shared = self.shared
        if shared is not None:
            return shared.listing()
        return encode([self._renderer.summary(n, r) for n, r in self._ring.newest_first()])

    def _detail(self, number: int) -> bytes | None:
        shared = self.shared
        if shared is not None:
            return shared.detail(number)
        record = self._ring.get(number)
        if record is None:
            return None
        spans = self._store.spans(record.trace_id) if record.trace_id else []
        return encode(self._renderer.detail(number, record, spans, self._tracing()))

    @staticmethod
    async def _respond(
        send: Send,
        status: int,
        content_type: bytes,
        body: bytes,
        extra: list[tuple[bytes, bytes]] | None = None,
        length: int | None = None,
    ) -> None:
        start = _start(status, content_type, len(body) if length is None else length)
        if extra:
            start["headers"].extend(extra)
        await send(start)
        await send({"type": "http.response.body", "body": body})

    async def _events(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Server-sent events: each new request's summary, as it is recorded."""
        last = _last_seen(scope)
        await send(_start(200, b"text/event-stream", None))
        gone = False

        async def watch(cancel: anyio.CancelScope) -> None:
            nonlocal gone
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    cancel.cancel()
                    return

        error: Exception | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(watch, group.cancel_scope)
            try:
                await self._stream(send, last)
            except OSError:
                gone = True  # the client went away as we sent: nothing more to say (H7)
            except Exception as exc:  # re-raised below as it is, not in a group (E1)
                error = exc
            group.cancel_scope.cancel()
        if error is not None:
            try:
                raise error
            finally:
                del error
        if not gone:
            await send({"type": "http.response.body", "body": b""})

    async def _stream(self, send: Send, last: int) -> None:
        """Send new records as they come, and keep-alive comments, for ``stream_seconds``."""
        await send({"type": "http.response.body", "body": b"retry: 1000\n\n", "more_body": True})
        quiet_since = anyio.current_time()
        with anyio.move_on_after(self.stream_seconds):
            while True:
                newest = await self._send_new(send, last)
                if newest != last:
                    last, quiet_since = newest, anyio.current_time()
                event = anyio.Event()
                self._waiters.add(event)
                wait = self.keepalive if self.shared is None else self.poll_seconds
                try:
                    with anyio.move_on_after(wait):
                        await event.wait()
                finally:  # cancelled too (a disconnect): never leave it behind
                    self._waiters.discard(event)
                if anyio.current_time() - quiet_since >= self.keepalive:
                    quiet_since = anyio.current_time()
                    await send(
                        {"type": "http.response.body", "body": _KEEPALIVE, "more_body": True}
                    )

    def _since(self, last: int) -> list[tuple[int, bytes]]:
        shared = self.shared
        if shared is not None:
            return shared.since(last)
        summary = self._renderer.summary
        return [(n, encode(summary(n, record))) for n, record in self._ring.since(last)]

    async def _send_new(self, send: Send, last: int) -> int:
        new = self._since(last)
        if not new:
            return last
        chunks = []
        for number, row in new:
            chunks.append(b"id: %d\n%s%s\n\n" % (number, _EVENT_PREFIX, row))
        await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
        return new[-1][0]
