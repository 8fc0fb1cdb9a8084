"""``asgikit serve``: build the app from the config file and serve it with uvicorn,
hypercorn or granian (``asgikit.servers``)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import ipaddress
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any, Final

import msgspec

from asgikit import WORKERS_ENV, servers
from asgikit.cli.env_file import read_env_file
from asgikit.cli.shared import CONFIG_HELP, UsageError, config_path, load, url
from asgikit.config import (
    CONFIG_ENV,
    RELOAD_ENV,
    Config,
    ServerConfig,
    configure_logging,
    import_app,
)
from asgikit.config.observability import logs_access

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Add ``serve`` to the subcommands (an ``add_subparsers`` action)."""
    serve = commands.add_parser(
        "serve",
        help="serve the app with uvicorn, hypercorn or granian",
        description="Build the app from the config file and serve it (with uvicorn unless "
        "the [server] table or --server says otherwise). Flags override the file's [server] "
        "table. SIGTERM or CTRL+C shut down gracefully: requests in flight finish, the "
        "app's lifespan shutdown runs, spans and metrics are exported, and the exit "
        "status is 0.",
    )
    serve.add_argument("config", nargs="?", metavar="CONFIG", help=CONFIG_HELP)
    serve.add_argument("--server", choices=servers.SERVERS, help="the ASGI server")
    serve.add_argument("--host", help="the address to listen on")
    serve.add_argument("--port", type=int, help="the TCP port (0: any free one)")
    serve.add_argument("--uds", metavar="PATH", help="listen on this Unix domain socket")
    serve.add_argument("--fd", type=int, help="listen on this inherited file descriptor")
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
    serve.add_argument("--root-path", help="the path prefix a proxy mounts the app under")
    serve.add_argument("--ssl-certfile", metavar="PATH", help="serve HTTPS with this certificate")
    serve.add_argument("--ssl-keyfile", metavar="PATH", help="the certificate's private key")
    serve.add_argument(
        "--timeout-graceful-shutdown",
        type=float,
        metavar="SECONDS",
        help="how long requests in flight get to finish at shutdown",
    )
    serve.add_argument(
        "--timeout-keep-alive",
        type=float,
        metavar="SECONDS",
        help="how long an idle keep-alive connection stays open",
    )
    serve.add_argument(
        "--limit-concurrency", type=int, metavar="N", help="at most N at once per worker"
    )
    serve.add_argument(
        "--env-file",
        metavar="PATH",
        help="set the variables of this file (NAME=value lines) that are not set already",
    )
    serve.set_defaults(run=_serve)


_FLAGS: Final = tuple(
    field.name for field in dataclasses.fields(ServerConfig) if field.name != "options"
)


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


def _settings(args: argparse.Namespace, config: Config) -> ServerConfig:
    """The file's ``[server]`` table with the command line's flags over it.

    Raises:
        UsageError: A flag's value is out of its range (as the file's would be).
    """
    flags = {name: getattr(args, name) for name in _FLAGS if getattr(args, name) is not None}
    try:
        msgspec.convert(flags, ServerConfig)
    except msgspec.ValidationError as exc:
        message = str(exc)
        where = re.search(r"at `\$\.(\w+)`", message)
        flag = f"--{where.group(1).replace('_', '-')}: " if where else ""
        raise UsageError(flag + message.partition(" - at ")[0].lower()) from None
    return dataclasses.replace(config.server, **flags)


def _check(settings: ServerConfig, config: Config) -> None:
    """Refuse what cannot work, before anything is imported.

    Raises:
        UsageError: Said in the message.
    """
    if settings.uds is None and settings.fd is None:
        _inspector_stays_local(config, settings.host)
    if settings.workers > 1:
        _one_prometheus_port(config)
        _limits_are_shared(config, settings.workers)
    if settings.reload and settings.workers > 1:
        raise UsageError("--reload restarts one process: it cannot be combined with workers > 1")
    try:
        own = servers.own_options(settings.server)
    except servers.ServerError as exc:
        raise UsageError(str(exc)) from None
    foreign = sorted(set(settings.options) - own)
    if foreign:  # written for the file's server, and --server chose another
        raise UsageError(
            f"[server] has options {settings.server} does not take: {', '.join(foreign)}"
        )
    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        raise UsageError("HTTPS needs both ssl_certfile and ssl_keyfile")


def _env_file_named(config: Path) -> str | None:
    """The ``[server]`` table's ``env_file``, read from the file as written (its other
    values may need the very variables the env file sets)."""
    try:
        text = config.read_text(encoding="utf-8")
        if config.suffix in (".yaml", ".yml"):
            yaml: Any = importlib.import_module("yaml")  # the yaml extra, untyped
            data = yaml.safe_load(text)
        else:
            data = tomllib.loads(text)
    except Exception:  # unreadable, not TOML or YAML, no PyYAML: loading reports it
        return None
    server = data.get("server") if isinstance(data, dict) else None
    named = server.get("env_file") if isinstance(server, dict) else None
    return named if isinstance(named, str) and "${" not in named else None


def _read_env_file(args: argparse.Namespace) -> None:
    """Set the variables of ``--env-file`` (or the file's ``[server] env_file``) that
    are not set already, before the file's ``${NAME}`` values are read."""
    if args.env_file is not None:
        path = Path(args.env_file)
    else:
        config = Path(config_path(args.config))
        named = _env_file_named(config)
        if named is None:
            return
        path = config.parent / named
    try:
        values = read_env_file(path)
    except OSError as exc:
        raise UsageError(f"env_file {str(path)!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for name, value in values.items():
        os.environ.setdefault(name, value)


def _serve(args: argparse.Namespace) -> int:
    _read_env_file(args)
    config = load(args.config)
    settings = _settings(args, config)
    _check(settings, config)
    import_app(config, call_factory=False)  # a broken app is one line here, before serving
    logs_configured = configure_logging(config)
    for issue in config.warnings:
        print(issue, file=sys.stderr)
    _announce(config, settings)
    # Each server process builds the app from the file: the environment says which, and
    # what per-process state must admit.
    os.environ[CONFIG_ENV] = str(config.path.resolve())
    os.environ[WORKERS_ENV] = str(settings.workers)
    if settings.reload:
        os.environ[RELOAD_ENV] = "1"  # a broken file or app is shown, not fatal
    watch = {os.getcwd(), str(config.path.resolve().parent)}
    if config.app_dir is not None:
        watch.add(str(config.app_dir))
    launch = servers.Launch(
        settings=settings,
        logs_configured=logs_configured,
        logs_access=logs_access(config),
        watch=tuple(sorted(watch)),
        watch_files=(str(config.path.resolve()),),
    )
    try:
        return servers.run(settings.server, launch)
    except servers.ServerError as exc:
        raise UsageError(str(exc)) from None


def _announce(config: Config, settings: ServerConfig) -> None:
    if settings.uds is not None:
        address = f"unix:{settings.uds} "
    elif settings.fd is not None:
        address = f"file descriptor {settings.fd} "
    else:
        address = url(settings.host, settings.port)
    print(
        f"asgikit: serving {config.app} through {len(config.middleware)} middleware with "
        f"{settings.server}: open {address}  (CTRL+C to stop)",
        file=sys.stderr,
        flush=True,
    )
    for entry in config.middleware:
        if entry.resolved.name == "inspector" and entry.arguments.get("enabled", True):
            path = str(entry.arguments.get("path", "/_asgikit/")).lstrip("/")
            print(f"asgikit: requests as they happen: {address}{path}", file=sys.stderr, flush=True)
