"""Middleware names to factories.

A name in a config file (``use = "cors"``) is a built-in, a plug-in registered under the
entry-point group ``asgikit.middleware``, or an import string ``"package.module:Class"``.
Built-ins are import strings too, imported only when used: a middleware whose module is
not in this version of asgikit is reported as such, and is picked up as soon as it is.

The options each factory takes are read from its signature by ``asgikit.signature``;
its names are re-exported here, where they were first defined.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Final

from asgikit._import_string import (
    IMPORT_STRING_PATTERN,
    ImportString,
    RegistryError,
    did_you_mean,
    import_object,
    target_of,
)
from asgikit.signature import (
    REQUIRED,
    UNREPRESENTABLE,
    Option,
    Options,
    config_value,
    options_of,
    subscript,
)

__all__ = [
    "BUILTINS",
    "ENTRY_POINT_GROUP",
    "IMPORT_STRING_PATTERN",
    "REQUIRED",
    "UNREPRESENTABLE",
    "ImportString",
    "Option",
    "Options",
    "Registry",
    "RegistryError",
    "Resolved",
    "config_value",
    "import_object",
    "options_of",
    "subscript",
    "target_of",
]

ENTRY_POINT_GROUP: Final = "asgikit.middleware"
"""The entry-point group third-party middleware register under."""

BUILTINS: Final[Mapping[str, str]] = {
    "server_timing": "asgikit.middleware.server_timing:ServerTimingMiddleware",
    "proxy_headers": "asgikit.middleware.proxy_headers:ProxyHeadersMiddleware",
    "trusted_host": "asgikit.middleware.trusted_host:TrustedHostMiddleware",
    "https_redirect": "asgikit.middleware.https_redirect:HTTPSRedirectMiddleware",
    "request_id": "asgikit.middleware.request_id:RequestIDMiddleware",
    "inspector": "asgikit.middleware.inspector:DevInspectorMiddleware",
    "access_log": "asgikit.middleware.access_log:AccessLogMiddleware",
    "tracing": "asgikit.middleware.tracing:TracingMiddleware",
    "cors": "asgikit.middleware.cors:CORSMiddleware",
    "concurrency_limit": "asgikit.middleware.concurrency_limit:ConcurrencyLimitMiddleware",
    "rate_limit": "asgikit.middleware.rate_limit:RateLimitMiddleware",
    "body_limit": "asgikit.middleware.body_limit:BodyLimitMiddleware",
    "timeout": "asgikit.middleware.timeout:TimeoutMiddleware",
    "compression": "asgikit.middleware.compression:CompressionMiddleware",
    "contract": "asgikit.contract:enforce",
}
"""Built-in names and the import strings they stand for (canonical order, then the rest)."""

# Modules of optional dependencies, and the extra that installs each.
_EXTRAS: Final = {
    "redis": "redis",
    "zstandard": "zstd",
    "opentelemetry.exporter.otlp": "otlp",
    "opentelemetry.exporter.prometheus": "prometheus",
    "uvicorn": "server",
    "yaml": "yaml",
}


def _missing_module_hint(exc: ModuleNotFoundError) -> str:
    name = exc.name or ""
    for module, extra in _EXTRAS.items():
        if name == module or name.startswith(module + "."):
            return f" (pip install 'asgikit[{extra}]')"
    return ""


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a ``use`` value stands for.

    Attributes:
        name: The registered name (built-in or plug-in), or the import string.
        target: The import string of the factory.
        origin: ``"built-in"``, ``"plug-in <distribution> <version>"`` or ``"import string"``.
        factory: The middleware class or factory function.
    """

    name: str
    target: str
    origin: str
    factory: Callable[..., Any]


@dataclass(frozen=True, slots=True)
class _Plugin:
    name: str
    target: str
    distribution: str
    entry_point: EntryPoint

    @property
    def origin(self) -> str:
        dist = self.entry_point.dist
        version = f" {dist.version}" if dist is not None else ""
        return f"plug-in {self.distribution}{version}"


class Registry:
    """Built-in names, installed plug-ins and import strings, resolved to factories.

    Plug-ins are discovered once per registry, when first needed.

    Args:
        builtins: Built-in names and their import strings.
        group: The entry-point group to read plug-ins from, or None for no plug-ins.
    """

    def __init__(
        self,
        builtins: Mapping[str, str] = BUILTINS,
        *,
        group: str | None = ENTRY_POINT_GROUP,
    ) -> None:
        self.builtins: Mapping[str, str] = dict(builtins)
        self._group = group
        self._plugins: dict[str, _Plugin] | None = None
        self._conflicts: dict[str, list[_Plugin]] = {}
        self._shadowing: dict[str, _Plugin] = {}

    def _discover(self) -> dict[str, _Plugin]:
        if self._plugins is not None:
            return self._plugins
        found: dict[str, list[_Plugin]] = {}
        if self._group is not None:
            for ep in entry_points(group=self._group):
                dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
                # entry_points() lists each distribution once, however often it is
                # on sys.path: two candidates are two distributions.
                found.setdefault(ep.name, []).append(_Plugin(ep.name, ep.value, dist, ep))
        plugins: dict[str, _Plugin] = {}
        for name, candidates in found.items():
            if name in self.builtins:
                self._shadowing[name] = candidates[0]
            elif len(candidates) > 1:
                self._conflicts[name] = candidates
            else:
                plugins[name] = candidates[0]
        self._plugins = plugins
        return plugins

    @property
    def plugins(self) -> Mapping[str, str]:
        """Installed plug-in names and their import strings (without conflicting names)."""
        return {name: plugin.target for name, plugin in self._discover().items()}

    def names(self) -> list[str]:
        """Every name ``use`` can take: built-ins, then plug-ins, in order."""
        return [*self.builtins, *sorted(self._discover())]

    def problems(self) -> list[str]:
        """What is wrong with the installed plug-ins: names claimed twice, built-in names."""
        self._discover()
        notes = [self._conflict_message(name) for name in sorted(self._conflicts)]
        notes += [self.shadowing(name) or "" for name in sorted(self._shadowing)]
        return notes

    def shadowing(self, name: str) -> str | None:
        """A note when a plug-in also registers the built-in ``name`` (the built-in wins)."""
        self._discover()
        plugin = self._shadowing.get(name)
        if plugin is None:
            return None
        return (
            f"the {plugin.origin} also registers the built-in name {name!r} "
            f"({plugin.target}); the built-in is used: to use the plug-in, "
            f"write its import string {plugin.target!r}"
        )

    def _conflict_message(self, name: str) -> str:
        first, second, *_ = self._conflicts[name]
        return (
            f"middleware name {name!r} is registered by two distributions: "
            f"{first.distribution!r} ({first.target}) and {second.distribution!r} "
            f"({second.target}); use the import string of the one you mean"
        )

    def resolve(self, use: str) -> Resolved:
        """The factory ``use`` stands for.

        Raises:
            RegistryError: Unknown, unavailable, ambiguous or not importable.
        """
        if ":" in use or "." in use:
            factory = import_object(use)
            if not callable(factory):
                raise RegistryError(f"{use!r} is not a middleware class or factory")
            return Resolved(self.name_of(factory) or use, use, "import string", factory)
        if use in self.builtins:
            return self._resolve_builtin(use)
        plugins = self._discover()
        if use in self._conflicts:
            raise RegistryError(self._conflict_message(use))
        plugin = plugins.get(use)
        if plugin is None:
            hint = did_you_mean(use, self.names()) or (
                f"; use one of {', '.join(self.names())} or an import string 'package.module:Class'"
            )
            raise RegistryError(f"unknown middleware {use!r}{hint}")
        try:
            factory = plugin.entry_point.load()
        except Exception as exc:
            raise RegistryError(
                f"the {plugin.origin} registers {use!r} as {plugin.target}, which cannot "
                f"be loaded: {type(exc).__name__}: {exc}"
            ) from None
        if not callable(factory):
            raise RegistryError(f"the {plugin.origin} registers {use!r} as a non-callable")
        return Resolved(use, plugin.target, plugin.origin, factory)

    def _resolve_builtin(self, name: str) -> Resolved:
        target = self.builtins[name]
        module = target.partition(":")[0]
        try:
            factory = import_object(target)
        except RegistryError:
            if module not in sys.modules:
                raise RegistryError(
                    f"middleware {name!r} is not available in this version of asgikit"
                ) from None
            raise  # pragma: no cover - a built-in module without its class
        except ModuleNotFoundError as exc:
            raise RegistryError(
                f"middleware {name!r} needs {exc.name!r}, which is not installed"
                + _missing_module_hint(exc)
            ) from None
        return Resolved(name, target, "built-in", factory)

    def name_of(self, factory: object) -> str | None:
        """The built-in or plug-in name ``factory`` is registered under, if any."""
        target = target_of(factory)
        if target is None:
            return None
        for name, builtin in self.builtins.items():
            if builtin == target:
                return name
        for name, plugin in self._discover().items():
            if plugin.target == target:
                return name
        return None
