"""Prometheus scraping for asgikit.telemetry: a port of its own, or a path of the app.

Both read a ``prometheus_client`` registry, into which the OpenTelemetry SDK's
``PrometheusMetricReader`` registers itself. ``prometheus_client`` comes with
opentelemetry-exporter-prometheus, the ``prometheus`` extra; it is imported when one of
these is created, never per request.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from typing import Any, Final

import anyio.to_thread

from asgikit.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "MetricsEndpoint",
    "MissingExtraError",
    "PrometheusServer",
    "check_port",
    "import_prometheus_client",
    "start_prometheus_server",
]

PROMETHEUS_INSTALL: Final = "pip install 'asgikit[prometheus]'"
OTLP_INSTALL: Final = "pip install 'asgikit[otlp]'"
OTLP_GRPC_INSTALL: Final = "pip install 'asgikit[otlp-grpc]'"

_ALLOW: Final = b"GET, HEAD"
_NOT_ALLOWED_BODY: Final = b"405 Method Not Allowed: use GET or HEAD\n"
_NOT_ALLOWED_HEADERS: Final = [
    (b"allow", _ALLOW),
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(_NOT_ALLOWED_BODY)).encode("ascii")),
]


class MissingExtraError(ImportError):
    """An optional dependency (an asgikit extra) is not installed; the message says how."""


def import_prometheus_client(option: str) -> Any:
    """``prometheus_client.exposition``, or a ``MissingExtraError`` naming *option*."""
    try:
        import opentelemetry.exporter.prometheus  # noqa: F401 - what the extra installs
        from prometheus_client import exposition
    except ImportError as exc:
        raise MissingExtraError(
            f"{option} needs opentelemetry-exporter-prometheus: {PROMETHEUS_INSTALL}"
        ) from exc
    return exposition


class PrometheusServer:
    """A running Prometheus scrape endpoint: prometheus_client's server, in a thread.

    Every path answers ``GET`` with the registry's metrics (prometheus_client's own
    behaviour); ``/metrics`` is the conventional one. ``stop()`` closes the socket and
    ends the thread; calling it again does nothing.
    """

    __slots__ = ("_lock", "_server", "_stopped", "_thread", "host", "port")

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._lock = threading.Lock()
        self._stopped = False
        address = server.server_address
        self.host: str = address[0]
        """The address the server listens on."""
        self.port: int = address[1]
        """The port it listens on (the one the OS picked, when asked for port 0)."""

    @property
    def url(self) -> str:
        """``http://host:port/metrics``, with an IPv6 host in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    @property
    def running(self) -> bool:
        """Whether ``stop()`` has not been called yet."""
        return not self._stopped

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close the socket and wait up to *timeout* seconds for the thread."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)


def start_prometheus_server(
    *, port: int = 9464, host: str = "127.0.0.1", registry: Any = None
) -> PrometheusServer:
    """Serve *registry* for Prometheus on *host*:*port* from a daemon thread.

    Args:
        port: The TCP port; 0 lets the OS pick a free one (see ``PrometheusServer.port``).
        host: The address to listen on: loopback by default, so that metrics are not
            published to the network by accident. ``"0.0.0.0"`` or ``"::"`` for all.
        registry: A ``prometheus_client.CollectorRegistry``; prometheus_client's global
            ``REGISTRY`` by default.

    Raises:
        MissingExtraError: opentelemetry-exporter-prometheus is not installed.
        OSError: The address cannot be listened on (in use, not local, ...).
    """
    check_port(port, "port")
    if not isinstance(host, str) or not host:
        raise TypeError(f"host: expected a non-empty str, not {host!r}")
    exposition = import_prometheus_client("start_prometheus_server")
    if registry is None:
        registry = exposition.REGISTRY
    server, thread = exposition.start_http_server(port, addr=host, registry=registry)
    return PrometheusServer(server, thread)


def check_port(port: object, option: str) -> int:
    """*port*, if it is a TCP port; else TypeError / ValueError starting with *option*."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{option}: expected an int, not {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"{option}: {port} is not a TCP port (0-65535)")
    return port


class MetricsEndpoint:
    """Answer Prometheus scrapes on one path of the app; every other request passes through.

    ``GET`` (and ``HEAD``) on *path* return the registry in the text exposition format,
    or OpenMetrics when the scraper asks for it, gzipped when it accepts gzip; other
    methods on *path* get ``405``. The metrics are rendered in a worker thread, so a
    large registry does not stall the event loop.

    Args:
        app: The ASGI app to wrap.
        path: The path that serves the metrics, matched exactly.
        registry: A ``prometheus_client.CollectorRegistry``; prometheus_client's global
            ``REGISTRY`` (where ``asgikit.telemetry.configure`` puts the metrics by
            default) when None.
    """

    __slots__ = ("_choose_encoder", "_gzip_accepted", "app", "path", "registry")

    def __init__(self, app: ASGIApp, *, path: str = "/metrics", registry: Any = None) -> None:
        if not isinstance(path, str):
            raise TypeError(f"path: expected a str, not {path!r}")
        if not path.startswith("/") or any(c in path for c in "?# \t\r\n"):
            raise ValueError(f"path: {path!r} is not a path (it starts with '/', no query)")
        if registry is not None and not callable(getattr(registry, "collect", None)):
            raise TypeError(f"registry: expected a prometheus_client registry, not {registry!r}")
        exposition = import_prometheus_client("MetricsEndpoint")
        self.app = app
        self.path = path
        self.registry: Any = exposition.REGISTRY if registry is None else registry
        self._choose_encoder: Callable[[str], tuple[Callable[[Any], bytes], str]] = (
            exposition.choose_encoder
        )
        self._gzip_accepted: Callable[[str], bool] = exposition.gzip_accepted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            # A fresh list: what is sent may be changed by the middleware outside.
            headers = list(_NOT_ALLOWED_HEADERS)
            await send({"type": "http.response.start", "status": 405, "headers": headers})
            await send({"type": "http.response.body", "body": _NOT_ALLOWED_BODY})
            return
        accept = accept_encoding = ""
        for name, value in scope.get("headers", ()):
            if name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"accept-encoding":
                accept_encoding = value.decode("latin-1")
        body, headers = await anyio.to_thread.run_sync(self._render, accept, accept_encoding)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    def _render(self, accept: str, accept_encoding: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        encoder, content_type = self._choose_encoder(accept)
        body = encoder(self.registry)
        headers = [(b"content-type", content_type.encode("latin-1"))]
        if self._gzip_accepted(accept_encoding):
            body = gzip.compress(body)
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(body)).encode("ascii")))
        headers.append((b"vary", b"accept, accept-encoding"))
        return body, headers
