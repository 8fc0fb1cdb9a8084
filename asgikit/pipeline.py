"""A list of middleware, outermost first, wrapped around an app; and the ordering rules.

``Pipeline([...]).wrap(app)`` builds the onion: the first middleware listed is the
outermost, the one the server calls. ``ORDER_RULES`` says, as data, which pairs lose
something when the inner one ends up outside the other, and what they lose; both the
code path (``Pipeline.wrap`` warns) and ``asgikit check`` read it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from asgikit.registry import Registry, import_object
from asgikit.types import ASGIApp

__all__ = [
    "CANONICAL_ORDER",
    "ORDER_RULES",
    "OUTERMOST_RULES",
    "Layer",
    "OrderProblem",
    "Pipeline",
    "PipelineWarning",
    "Spec",
    "order_problems",
]

_TIMED: Final = "asgikit.middleware.server_timing:timed"

CANONICAL_ORDER: Final = (
    "server_timing",
    "proxy_headers",
    "trusted_host",
    "https_redirect",
    "request_id",
    "inspector",
    "access_log",
    "tracing",
    "cors",
    "concurrency_limit",
    "rate_limit",
    "body_limit",
    "timeout",
    "compression",
)
"""The built-ins, outermost first, as docs/architecture.md orders them."""

ORDER_RULES: Final[tuple[tuple[str, str, str], ...]] = (
    # (belongs outside, belongs inside, what is lost when the second is outside the first)
    ("proxy_headers", "access_log", "access logs show the proxy's address, not the client's"),
    ("proxy_headers", "tracing", "spans record the proxy's address and scheme, not the client's"),
    ("proxy_headers", "rate_limit", "every client behind the proxy shares the proxy's limit"),
    (
        "proxy_headers",
        "trusted_host",
        "hosts are checked against the proxy's Host, not the client's",
    ),
    (
        "proxy_headers",
        "https_redirect",
        "requests through a TLS-terminating proxy look like plain http: every one is redirected",
    ),
    (
        "trusted_host",
        "https_redirect",
        "plain-http requests are redirected to whatever host they name, before it is checked",
    ),
    ("request_id", "access_log", "access log lines carry no request id"),
    ("request_id", "tracing", "spans carry no request id"),
    ("request_id", "inspector", "the inspector's rows carry no request id"),
    ("inspector", "rate_limit", "429 responses do not show in the inspector"),
    ("inspector", "timeout", "504 responses do not show in the inspector"),
    ("inspector", "concurrency_limit", "503 answers to shed requests do not show in the inspector"),
    ("inspector", "body_limit", "413 responses do not show in the inspector"),
    ("access_log", "cors", "CORS rejections and preflight answers are not logged"),
    ("access_log", "rate_limit", "429 responses are not logged"),
    ("access_log", "timeout", "504 responses are not logged, and the time limit covers logging"),
    ("access_log", "compression", "the bytes logged are not the bytes sent"),
    ("access_log", "concurrency_limit", "503 answers to shed requests are not logged"),
    ("access_log", "body_limit", "413 responses are not logged"),
    ("tracing", "cors", "CORS rejections and preflight answers get no span"),
    ("tracing", "rate_limit", "429 responses get no span"),
    ("tracing", "timeout", "504 responses get no span, and the time limit covers tracing"),
    ("tracing", "compression", "the body sizes traced are not the bytes sent"),
    ("tracing", "concurrency_limit", "shed requests get no span"),
    ("tracing", "body_limit", "413 responses get no span"),
    ("cors", "rate_limit", "429 responses carry no CORS headers: browsers cannot read them"),
    ("cors", "timeout", "504 responses carry no CORS headers: browsers cannot read them"),
    ("cors", "concurrency_limit", "503 answers carry no CORS headers: browsers cannot read them"),
    ("cors", "body_limit", "413 responses carry no CORS headers: browsers cannot read them"),
    (
        "concurrency_limit",
        "rate_limit",
        "requests that are then shed still cost a rate-limit check (a store round trip)",
    ),
    ("rate_limit", "compression", "requests over the limit still cost compression work"),
)
"""Departures from ``CANONICAL_ORDER`` that lose something, and what they lose."""

OUTERMOST_RULES: Final[Mapping[str, str]] = {
    # Only as the first layer does it build the stack with a timer between every two.
    "server_timing": "it times only the total, not each layer and the app",
}
"""Middleware that do their work only as the outermost layer, and what they lose elsewhere."""


class PipelineWarning(UserWarning):
    """A pipeline that works but loses something: see the message."""


@dataclass(frozen=True, slots=True)
class OrderProblem:
    """``inner`` (an index) is listed outside ``outer``, losing what ``message`` says;
    ``outer`` is None when ``inner`` works only as the first layer (``OUTERMOST_RULES``)."""

    inner: int
    outer: int | None
    message: str


def order_problems(names: Sequence[str | None]) -> list[OrderProblem]:
    """The departures from the canonical order in ``names`` (outermost first).

    Args:
        names: The built-in name of each middleware, or None for others.
    """
    problems = []
    for outer_name, inner_name, loss in ORDER_RULES:
        for inner, name in enumerate(names):
            if name != inner_name:
                continue
            outer = next((i for i in range(inner + 1, len(names)) if names[i] == outer_name), None)
            if outer is not None:
                problems.append(
                    OrderProblem(inner, outer, f"{inner_name} is outside {outer_name}: {loss}")
                )
    for inner, name in enumerate(names[1:], start=1):
        only_first = OUTERMOST_RULES.get(name or "")
        if only_first is not None:
            problems.append(OrderProblem(inner, None, f"{name} is not first: {only_first}"))
    problems.sort(
        key=lambda problem: (problem.inner, -1 if problem.outer is None else problem.outer)
    )
    return problems


Factory = Callable[..., Any]
Spec = Factory | str | tuple[Factory | str, Mapping[str, Any]]
"""A middleware in a pipeline: a factory or a name, alone or with its options."""


@dataclass(frozen=True, slots=True)
class Layer:
    """One middleware of a pipeline.

    Attributes:
        factory: Called as ``factory(app, **options)``.
        options: The keyword arguments.
        name: The built-in or plug-in name, if it has one.
    """

    factory: Factory
    options: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        return getattr(self.factory, "__qualname__", None) or repr(self.factory)


class Pipeline:
    """Middleware, outermost first, to wrap around an ASGI app.

    Args:
        middleware: Each a middleware class or factory (``RequestIDMiddleware``), a
            registered name (``"cors"``), or either with its options
            (``(CORSMiddleware, {"allow_origins": ["https://example.com"]})``).
        registry: Where names are looked up; the built-ins and installed plug-ins by
            default.

    Raises:
        asgikit.registry.RegistryError: A name is unknown or cannot be imported.
        TypeError: An entry is none of the above.
    """

    __slots__ = ("layers",)

    def __init__(
        self, middleware: Iterable[Spec] = (), *, registry: Registry | None = None
    ) -> None:
        lookup = registry if registry is not None else Registry()
        layers = []
        for spec in middleware:
            options: Mapping[str, Any] = {}
            target: object = spec
            if isinstance(spec, tuple):
                if len(spec) != 2 or not isinstance(spec[1], Mapping):
                    raise TypeError(f"expected (middleware, {{options}}), got {spec!r}")
                target, options = spec
            if isinstance(target, str):
                resolved = lookup.resolve(target)
                layers.append(Layer(resolved.factory, dict(options), resolved.name))
            elif callable(target):
                layers.append(Layer(target, dict(options), lookup.name_of(target)))
            else:
                raise TypeError(f"a middleware is a class, a factory or a name, not {target!r}")
        self.layers: tuple[Layer, ...] = tuple(layers)

    @classmethod
    def from_layers(cls, layers: Iterable[Layer]) -> Pipeline:
        """A pipeline of ready ``Layer`` objects (no name lookup)."""
        pipeline = cls()
        pipeline.layers = tuple(layers)
        return pipeline

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"Pipeline([{', '.join(layer.label for layer in self.layers)}])"

    @property
    def warnings(self) -> list[str]:
        """What this order loses, one message per departure from the canonical order."""
        labels = [layer.label for layer in self.layers]
        messages = []
        for problem in order_problems([layer.name for layer in self.layers]):
            where = f"layer {problem.inner + 1} of {len(labels)}"
            if problem.outer is not None:
                where += f", {labels[problem.outer]} is layer {problem.outer + 1}"
            messages.append(f"{problem.message} ({where})")
        return messages

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """Wrap ``app``: the first middleware is the outermost.

        Emits a ``PipelineWarning`` for each departure from the canonical order that
        loses something.
        """
        for message in self.warnings:
            warnings.warn(message, PipelineWarning, stacklevel=2)
        return self._apply(app)

    def _apply(self, app: ASGIApp) -> ASGIApp:
        layers = self.layers
        if layers and layers[0].name == "server_timing":
            # Outermost, it times each layer below: a timer goes between every two.
            # Named, not imported: the kit never imports a middleware.
            timed = import_object(_TIMED)
            inner = Pipeline.from_layers(layers[1:])
            result: ASGIApp = timed(inner, app, **layers[0].options)
            return result
        wrapped: Any = app
        for layer in reversed(self.layers):
            wrapped = layer.factory(wrapped, **layer.options)
        built: ASGIApp = wrapped
        return built
