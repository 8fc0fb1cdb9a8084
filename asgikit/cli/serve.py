"""``asgikit serve``: build the app from the config file and serve it with uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from asgikit import WORKERS_ENV
from asgikit.cli.shared import CONFIG_HELP, UsageError, load, url
from asgikit.config import (
    CONFIG_ENV,
    Config,
    configure_logging,
    configure_telemetry,
    import_app,
    ready_app,
)
from asgikit.config.observability import logs_access, shut_down_after_lifespan

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Add ``serve`` to the subcommands (an ``add_subparsers`` action)."""
    serve = commands.add_parser(
        "serve",
        help="serve the app with uvicorn",
        description="Build the app from the config file and serve it with uvicorn. Flags "
        "override the file's [server] table. SIGTERM or CTRL+C shut down gracefully: "
        "requests in flight finish, then the app's lifespan shutdown runs.",
    )
    serve.add_argument("config", nargs="?", metavar="CONFIG", help=CONFIG_HELP)
    serve.add_argument("--host", help="the address to listen on")
    serve.add_argument("--port", type=int, help="the TCP port (0: any free one)")
    serve.add_argument("--workers", type=int, help="worker processes")
    serve.add_argument(
        "--reload",
        action=argparse.BooleanOptionalAction,
        help="restart when a Python file or the config changes (development)",
    )
    serve.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="the server's log level",
    )
    serve.set_defaults(run=_serve)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _one_prometheus_port(config: Config) -> None:
    """Several workers cannot share one Prometheus port: each would try to listen."""
    telemetry = config.telemetry
    if telemetry is None:
        return
    metrics = telemetry.get("metrics")
    if metrics is None:
        metrics = os.environ.get("OTEL_METRICS_EXPORTER", "")
    if "prometheus" in str(metrics) or telemetry.get("prometheus_port") is not None:
        raise UsageError(
            "Prometheus metrics are served by one process on one port: with workers > 1 "
            'each worker would try to listen on it. Use metrics = "otlp" (a collector '
            "sums the workers), or serve with one worker"
        )


_RATE_LIMIT = "asgikit.middleware.rate_limit.RateLimitMiddleware"  # by name: no import


def _limits_are_shared(config: Config, workers: int) -> None:
    """A rate limit kept in memory counts per worker: refused with several, unless said."""
    for entry in config.middleware:
        factory = entry.resolved.factory
        named = f"{getattr(factory, '__module__', '')}.{getattr(factory, '__qualname__', '')}"
        if named != _RATE_LIMIT or entry.arguments.get("per_worker"):
            continue
        storage = str(entry.arguments.get("storage", "memory://"))
        if storage.partition("://")[0].lower() == "memory":
            where = "" if entry.line is None else f" (line {entry.line})"
            raise UsageError(
                f"the rate limit{where} keeps its counts in memory: with "
                f"{workers} workers each allows the whole rate, so a client gets {workers} "
                "times the limit. Share the counts through Redis (storage = "
                '"redis://host:6379/0", the redis extra), serve with one worker, or set '
                "per_worker = true to accept a limit per worker"
            )


def _inspector_stays_local(config: Config, host: str) -> None:
    """The development inspector refuses to start on an address others can reach."""
    for entry in config.middleware:
        if entry.resolved.name != "inspector" or not entry.arguments.get("enabled", True):
            continue
        if not _loopback(host) and not entry.arguments.get("allow_non_loopback", False):
            raise UsageError(
                f"the development inspector (line {entry.line}) shows every request's "
                f"headers and tracebacks: it will not start on {host}, which other machines "
                "can reach; serve on 127.0.0.1, or set allow_non_loopback = true"
            )


@dataclass(frozen=True, slots=True)
class _Settings:
    """How to serve: the command line's flags over the file's ``[server]`` table."""

    host: str
    port: int
    workers: int
    reload: bool
    log_level: str

    @classmethod
    def of(cls, args: argparse.Namespace, config: Config) -> _Settings:
        server = config.server
        return cls(
            host=args.host if args.host is not None else server.host,
            port=args.port if args.port is not None else server.port,
            workers=args.workers if args.workers is not None else server.workers,
            reload=args.reload if args.reload is not None else server.reload,
            log_level=args.log_level or server.log_level,
        )

    def check(self, config: Config) -> None:
        """Refuse what cannot work, before anything is imported.

        Raises:
            UsageError: Said in the message.
        """
        _inspector_stays_local(config, self.host)
        if self.workers > 1:
            _one_prometheus_port(config)
            _limits_are_shared(config, self.workers)
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port {self.port} is not a TCP port (0-65535)")
        if self.workers < 1:
            raise UsageError(f"--workers {self.workers}: at least 1")
        if self.reload and self.workers > 1:
            raise UsageError(
                "--reload restarts one process: it cannot be combined with workers > 1"
            )


def _uvicorn() -> ModuleType:
    try:
        import uvicorn
    except ModuleNotFoundError:
        raise UsageError("serving needs uvicorn: pip install 'asgikit[server]'") from None
    return uvicorn


def _serve(args: argparse.Namespace) -> int:
    config = load(args.config)
    settings = _Settings.of(args, config)
    settings.check(config)
    uvicorn = _uvicorn()
    app = import_app(config, call_factory=False)
    logs_configured = configure_logging(config)
    for issue in config.warnings:
        print(issue, file=sys.stderr)
    options = _uvicorn_options(config, settings, logs_configured)
    _announce(config, settings)
    if settings.workers > 1 or settings.reload:
        _serve_from_env(uvicorn, config, settings, options)
    else:
        _serve_here(uvicorn, config, app, options)
    return 0


def _uvicorn_options(config: Config, settings: _Settings, logs_configured: bool) -> dict[str, Any]:
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # asgikit's proxy_headers middleware decides whom to trust, not uvicorn.
        "proxy_headers": False,
        "lifespan": "auto",
    }
    if logs_configured:
        options["log_config"] = None  # asgikit.logging already routes uvicorn's loggers
    if logs_access(config):
        options["access_log"] = False  # one access log line per request, not two
    return options


def _announce(config: Config, settings: _Settings) -> None:
    address = url(settings.host, settings.port)
    print(
        f"asgikit: serving {config.app} through {len(config.middleware)} middleware: "
        f"open {address}  (CTRL+C to stop)",
        file=sys.stderr,
        flush=True,
    )
    for entry in config.middleware:
        if entry.resolved.name == "inspector" and entry.arguments.get("enabled", True):
            path = str(entry.arguments.get("path", "/_asgikit/")).lstrip("/")
            print(f"asgikit: requests as they happen: {address}{path}", file=sys.stderr, flush=True)


def _serve_from_env(
    uvicorn: ModuleType, config: Config, settings: _Settings, options: dict[str, Any]
) -> None:
    """Several workers, or a reloading one: each process builds the app from the file."""
    os.environ[CONFIG_ENV] = str(config.path.resolve())
    os.environ[WORKERS_ENV] = str(settings.workers)  # what per-process state must admit
    directories = {os.getcwd(), str(config.path.resolve().parent)}
    if config.app_dir is not None:
        directories.add(str(config.app_dir))
    reload = settings.reload
    uvicorn.run(
        "asgikit.config:app_from_env",
        factory=True,
        workers=settings.workers,
        reload=reload,
        reload_dirs=sorted(directories) if reload else None,
        reload_includes=[config.path.name] if reload else None,
        **options,
    )


def _serve_here(uvicorn: ModuleType, config: Config, app: Any, options: dict[str, Any]) -> None:
    """One process: the app built here, telemetry set up here and shut down at the end."""
    telemetry = configure_telemetry(config)
    os.environ[WORKERS_ENV] = "1"  # not a value inherited from the shell
    try:
        served = config.pipeline._apply(ready_app(config, app))
        if telemetry is not None:
            served = shut_down_after_lifespan(served, telemetry.shutdown)
        uvicorn.run(served, **options)
    finally:
        if telemetry is not None:
            telemetry.shutdown()  # flush the last spans and metrics
