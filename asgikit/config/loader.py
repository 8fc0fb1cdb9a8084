"""A parsed, substituted config document checked key by key and built into a ``Config``.

Every ``use`` is resolved through the registry, each table is checked against the typed
signature it is for (``asgikit.config.option_check``), and each middleware is instantiated
once around a placeholder app so that its own ``__init__`` checks run. Problems are
collected in the ``Source``, not raised: ``asgikit.config.load_config`` raises them all
at once.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from asgikit import servers
from asgikit.config.model import (
    TOP_KEYS,
    AppKeys,
    Config,
    MiddlewareEntry,
    ServerConfig,
    canonical_name,
    server_table_options,
)
from asgikit.config.observability import logging_options, telemetry_options
from asgikit.config.option_check import OptionChecker, kind_of, suggestion
from asgikit.config.source import ConfigPath, Source, by_position
from asgikit.pipeline import order_problems
from asgikit.registry import Registry, RegistryError, Resolved
from asgikit.signature import Options, options_of
from asgikit.types import Receive, Scope, Send

__all__ = ["Loader"]

_EXPORTER_EXTRAS: Final = {
    "otlp": ("opentelemetry.exporter.otlp.proto.http", "otlp"),
    "otlp-grpc": ("opentelemetry.exporter.otlp.proto.grpc", "otlp-grpc"),
    "prometheus": ("opentelemetry.exporter.prometheus", "prometheus"),
}
"""The module each exporter needs, and the extra that installs it ("otlp" over gRPC
needs "otlp-grpc")."""

_APP_KEYS: Final = ("app", "factory", "app_dir", "wsgi")


async def _placeholder_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("asgikit: the placeholder app only stands in while options are checked")


class Loader:
    """Builds the ``Config`` of one document, reporting every problem to ``source``.

    Args:
        source: The file being loaded.
        base: The directory ``app_dir`` is relative to.
        registry: Where ``use`` names are looked up.
    """

    def __init__(self, source: Source, base: Path, registry: Registry) -> None:
        self.source = source
        self.base = base
        self.registry = registry
        self.check = OptionChecker(source)

    def document(self, data: Any) -> Config | None:
        """The ``Config`` of ``data``, or None when anything in it is wrong."""
        source = self.source
        if not isinstance(data, dict):
            source.error((), f"expected a table of keys at the top level, got {kind_of(data)}")
            return None
        for key in data:
            if key not in TOP_KEYS:
                source.error((key,), f"unknown key {key!r}" + suggestion(str(key), TOP_KEYS))
        scalars = {key: data[key] for key in _APP_KEYS if key in data}
        app = self.check.arguments((), scalars, options_of(AppKeys, takes_app=False), "the config")
        server = self.server(data)
        logging_arguments = self.logging(data)
        telemetry_arguments = self.telemetry(data)
        entries = self.middleware(data.get("middleware", []))
        self.logs_unrouted(logging_arguments, telemetry_arguments)
        if source.issues or app is None or server is None or logging_arguments is None:
            return None
        app_dir = app.get("app_dir")
        return Config(
            path=Path(source.name),
            app=app["app"],
            factory=app.get("factory", False),
            app_dir=None if app_dir is None else (self.base / app_dir).resolve(),
            wsgi=app.get("wsgi", False),
            server=server,
            middleware=tuple(entries),
            logging=logging_arguments,
            telemetry=telemetry_arguments,
            warnings=tuple(sorted(source.warnings, key=by_position)),
            _source=source,
        )

    def table(self, key: str, data: Mapping[str, Any]) -> Mapping[str, Any] | None:
        value = data.get(key, {})
        if isinstance(value, dict):
            return value
        self.source.error((key,), f"expected a table, got {kind_of(value)}")
        return None

    def server(self, data: Mapping[str, Any]) -> ServerConfig | None:
        table = self.table("server", data)
        if table is None:
            return None
        spec = server_table_options()
        common = {key: value for key, value in table.items() if key in spec.options}
        arguments = self.check.arguments(("server",), common, spec, "[server]")
        if arguments is None:
            return None
        own = {key: value for key, value in table.items() if key not in spec.options}
        if own and not self.server_options(arguments.get("server", "uvicorn"), own, spec):
            return None
        return ServerConfig(**arguments, options=own)

    def server_options(self, server: str, own: Mapping[str, Any], spec: Options) -> bool:
        """Whether the keys of ``[server]`` beyond the common ones are *server*'s own."""
        try:
            names = servers.own_options(server)
        except servers.ServerError as exc:
            self.source.error(("server", "server"), f"{exc}: it is needed to check {sorted(own)}")
            return False
        ok = True
        for key in own:
            if key not in names:
                self.source.error(("server", key), _not_a_server_option(key, server, spec))
                ok = False
        return ok

    def telemetry(self, data: Mapping[str, Any]) -> dict[str, Any] | None:
        if "telemetry" not in data:
            return None
        table = self.table("telemetry", data)
        if table is None:
            return None
        arguments = self.check.arguments(("telemetry",), table, telemetry_options(), "[telemetry]")
        if arguments is None:
            return None
        if arguments.get("set_global") is False:
            self.source.error(
                ("telemetry", "set_global"),
                "set_global = false leaves the providers to code: the middleware of a "
                "config file use the global ones, so they would make no spans or metrics",
            )
        for key in ("traces", "metrics", "logs"):
            exporter = arguments.get(key, "")
            if exporter == "otlp":
                from asgikit.telemetry.exporters import otlp_protocol  # the SDK, on use

                try:
                    protocol = otlp_protocol(key, arguments.get("protocol"))
                except ValueError as exc:
                    self.source.error(("telemetry", key), str(exc))
                    continue
                exporter = "otlp-grpc" if protocol == "grpc" else "otlp"
            extra = _EXPORTER_EXTRAS.get(exporter)
            if extra is not None and importlib.util.find_spec(extra[0]) is None:
                self.source.error(
                    ("telemetry", key),
                    f"{key} = {arguments[key]!r} needs the {extra[1]} extra: "
                    f"pip install 'asgikit[{extra[1]}]'",
                )
        return arguments

    def logging(self, data: Mapping[str, Any]) -> dict[str, Any] | None:
        if "logging" not in data:
            return {}
        table = self.table("logging", data)
        if table is None:
            return None
        spec = logging_options()
        if spec is None:
            self.source.error(
                ("logging",),
                "[logging] configures asgikit.logging, which is not available in this "
                "version of asgikit",
            )
            return None
        return self.check.arguments(("logging",), table, spec, "[logging]")

    def logs_unrouted(
        self, logging_arguments: Mapping[str, Any] | None, telemetry: Mapping[str, Any] | None
    ) -> None:
        """Warn when ``[telemetry] logs`` is set but ``[logging] configure = false``: the
        lines reach the collector only through asgikit.logging's processor chain."""
        if not logging_arguments or logging_arguments.get("configure", True) is not False:
            return
        exporter = (telemetry or {}).get("logs")
        if exporter in (None, "none"):
            return
        self.source.warn(
            ("telemetry", "logs"),
            f"logs = {exporter!r} exports the lines asgikit.logging's processors see, and "
            "[logging] configure = false leaves the app's own set-up: nothing is exported "
            "unless its structlog chain includes asgikit.logging.collector.to_collector",
        )

    def middleware(self, value: Any) -> list[MiddlewareEntry]:
        if not isinstance(value, list):
            self.source.error(
                ("middleware",),
                f"expected an array of tables ([[middleware]] entries), got {kind_of(value)}",
            )
            return []
        entries = []
        for index, raw in enumerate(value):
            entry = self.entry(("middleware", index), raw)
            if entry is not None:
                entries.append(entry)
        if len(entries) == len(value):
            self.order(entries)
        return entries

    def entry(self, path: ConfigPath, raw: Any) -> MiddlewareEntry | None:
        """One ``[[middleware]]`` entry resolved, checked and tried, or None."""
        source = self.source
        if not isinstance(raw, dict):
            source.error(path, f"expected a table with 'use' and options, got {kind_of(raw)}")
            return None
        use = self.use(path, raw.get("use"))
        found = None if use is None else self.resolve(path, use)
        if use is None or found is None:
            return None
        resolved, spec = found
        options = {key: value for key, value in raw.items() if key != "use"}
        arguments = self.check.arguments(path, options, spec, resolved.name)
        if arguments is None or not self.accepted(path, resolved, arguments):
            return None
        return MiddlewareEntry(
            use=use,
            resolved=resolved,
            arguments=arguments,
            written={key: source.written(value, (*path, key)) for key, value in options.items()},
            from_env=frozenset(key for key in options if source.from_env((*path, key))),
            spec=spec,
            line=source.where(path)[0],
        )

    def use(self, path: ConfigPath, use: Any) -> str | None:
        """The entry's ``use`` value, or None (reported) when it is not a string."""
        source = self.source
        if source.broken((*path, "use")):
            return None
        if isinstance(use, str):
            return use
        if use is None:
            source.error(
                path,
                "missing 'use': a built-in name such as 'request_id', a plug-in's name "
                "or an import string 'package.module:Class'",
            )
        else:
            source.error((*path, "use"), f"expected a name or import string, got {kind_of(use)}")
        return None

    def resolve(self, path: ConfigPath, use: str) -> tuple[Resolved, Options] | None:
        """What ``use`` names and the options it takes, or None (reported)."""
        try:
            resolved = self.registry.resolve(use)
            spec = options_of(resolved.factory)
        except RegistryError as exc:
            self.source.error((*path, "use"), str(exc))
            return None
        if resolved.origin == "built-in":
            shadowing = self.registry.shadowing(use)
            if shadowing is not None:
                self.source.warn((*path, "use"), shadowing)
        return resolved, spec

    def accepted(self, path: ConfigPath, resolved: Resolved, arguments: Mapping[str, Any]) -> bool:
        """Whether the factory accepts ``arguments`` (tried around a placeholder app).

        A ``DeprecationWarning`` it raises (an option under its old name) becomes a
        warning at that option's line.
        """
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", DeprecationWarning)
                resolved.factory(_placeholder_app, **arguments)
        except Exception as exc:
            text = str(exc) or type(exc).__name__
            kind = "" if isinstance(exc, ValueError | TypeError) else f"{type(exc).__name__}: "
            self.source.error(
                _option_at(path, arguments, text),
                f"{resolved.name} rejects its options: {kind}{text}",
            )
            return False
        for warning in caught:
            text = str(warning.message)
            if issubclass(warning.category, DeprecationWarning):
                self.source.warn(_option_at(path, arguments, text), f"{resolved.name}: {text}")
            else:
                warnings.warn_explicit(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
        return True

    def order(self, entries: Sequence[MiddlewareEntry]) -> None:
        names = [canonical_name(entry.resolved) for entry in entries]
        for problem in order_problems(names):
            if problem.outer is None:
                advice = "list it first"
            else:
                advice = (
                    f"list it after {names[problem.outer]} (middleware[{problem.outer}]), "
                    "as in the canonical order"
                )
            self.source.warn(("middleware", problem.inner), f"{problem.message}; {advice}")


def _option_at(path: ConfigPath, arguments: Mapping[str, Any], text: str) -> ConfigPath:
    """The path of the option a message starts with (``"exempt is ..."``), else *path*."""
    for key in arguments:
        if re.match(rf"{re.escape(key)}\b", text):
            return (*path, key)
    return path


def _not_a_server_option(key: str, server: str, spec: Options) -> str:
    """Why *key* is refused in ``[server]``, with the closest name *server* knows."""
    renamed = servers.renamed(server)  # the server's names for the common settings
    known = sorted({*spec.options, *servers.own_options(server), *renamed})
    if key in renamed:
        return f"{server}'s {key!r} is set through [server]'s {renamed[key]!r}"
    message = f"[server] has no option {key!r}, and neither has {server}"
    close = difflib.get_close_matches(key, known, n=1)
    if close and close[0] in renamed:
        return f"{message}; did you mean {close[0]!r}? [server] sets it as {renamed[close[0]]!r}"
    return message + suggestion(key, known)
