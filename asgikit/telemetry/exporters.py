"""Which exporters and sampler asgikit.telemetry sets up: options first, then OTEL_* variables.

Only the choices are read here (which exporter, which sampler, which Prometheus port);
everything else an exporter or the SDK reads from the environment (endpoints, headers,
timeouts, batch sizes, export intervals) they keep reading themselves.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, get_args

from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import sampling as _sampling
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)

from asgikit.telemetry.prometheus import OTLP_INSTALL, MissingExtraError

__all__ = [
    "MetricsExporter",
    "SamplerName",
    "TracesExporter",
    "metric_reader",
    "metrics_exporters",
    "prometheus_port_from_env",
    "sampler_from",
    "span_processor",
    "traces_exporters",
]

TracesExporter = Literal["console", "otlp", "none"]
MetricsExporter = Literal["console", "otlp", "prometheus", "none"]
SamplerName = Literal[
    "always_on",
    "always_off",
    "parentbased_always_on",
    "parentbased_always_off",
    "traceidratio",
    "parentbased_traceidratio",
]

TRACES_CHOICES: Final = frozenset(get_args(TracesExporter))
METRICS_CHOICES: Final = frozenset(get_args(MetricsExporter))
SAMPLER_CHOICES: Final = get_args(SamplerName)
RATIO_SAMPLERS: Final = ("traceidratio", "parentbased_traceidratio")
_FIXED_SAMPLERS: Final[Mapping[str, _sampling.Sampler]] = {
    "always_on": _sampling.ALWAYS_ON,
    "always_off": _sampling.ALWAYS_OFF,
    "parentbased_always_on": _sampling.DEFAULT_ON,
    "parentbased_always_off": _sampling.DEFAULT_OFF,
}

# The Python SDK's own names for the OTLP exporter (opentelemetry.sdk._configuration).
_OTLP_ALIASES: Final = {"otlp": "otlp", "otlp_proto_http": "otlp"}
_OTLP_PROTOCOL_VARS: Final = {
    "traces": ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
    "metrics": ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
}


def _choices(values: frozenset[str]) -> str:
    return ", ".join(repr(value) for value in sorted(values))


def _exporters(
    option: str, value: object, choices: frozenset[str], variable: str
) -> tuple[str, ...]:
    """The exporters for one signal: the option, else the variable, else none at all.

    An unset variable means no exporter, as in the SDK's own configurator; the variable
    may list several (``console,otlp``), ``none`` means none.
    """
    if value is not None:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"{option}: expected one of {_choices(choices)}, not {value!r}")
        names: list[str] = [value]
    else:
        names = []
        for raw in os.environ.get(variable, "").split(","):
            name = raw.strip().lower()
            name = _OTLP_ALIASES.get(name, name)
            if name and name not in choices:
                raise ValueError(
                    f"{option}: {variable}={os.environ[variable]!r} names {raw.strip()!r}; "
                    f"asgikit.telemetry sets up {_choices(choices)}"
                )
            names.append(name)
    exporters = tuple(dict.fromkeys(name for name in names if name and name != "none"))
    if "otlp" in exporters:
        _check_otlp_protocol(option)
    return exporters


def _check_otlp_protocol(option: str) -> None:
    for variable in _OTLP_PROTOCOL_VARS[option]:
        protocol = os.environ.get(variable, "").strip()
        if protocol:
            if protocol != "http/protobuf":
                raise ValueError(
                    f"{option}: {variable}={protocol!r}, but asgikit exports OTLP over "
                    "HTTP with protobuf (opentelemetry-exporter-otlp-proto-http): set it to "
                    "'http/protobuf' or unset it (collectors take both on ports 4317/4318)"
                )
            return


def traces_exporters(value: object) -> tuple[str, ...]:
    """The span exporters to set up: ``traces``, else ``OTEL_TRACES_EXPORTER``."""
    return _exporters("traces", value, TRACES_CHOICES, "OTEL_TRACES_EXPORTER")


def metrics_exporters(value: object) -> tuple[str, ...]:
    """The metric exporters to set up: ``metrics``, else ``OTEL_METRICS_EXPORTER``."""
    return _exporters("metrics", value, METRICS_CHOICES, "OTEL_METRICS_EXPORTER")


def sampler_from(name: object, ratio: object) -> _sampling.Sampler | None:
    """The sampler the options ask for, or None to let the SDK read OTEL_TRACES_SAMPLER."""
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, int | float):
            raise TypeError(f"sampler_ratio: expected a number from 0 to 1, not {ratio!r}")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"sampler_ratio: {ratio} is not from 0 to 1")
        if name is None:
            name = "parentbased_traceidratio"
        elif name not in RATIO_SAMPLERS:
            raise ValueError(
                f"sampler_ratio: only the {' and '.join(map(repr, RATIO_SAMPLERS))} samplers "
                f"take a ratio, not sampler={name!r}"
            )
    if name is None:
        return None
    if not isinstance(name, str) or name not in SAMPLER_CHOICES:
        raise ValueError(
            f"sampler: expected one of {', '.join(map(repr, SAMPLER_CHOICES))}, not {name!r}"
        )
    rate = 1.0 if ratio is None else float(ratio)
    if name == "traceidratio":
        return _sampling.TraceIdRatioBased(rate)
    if name == "parentbased_traceidratio":
        return _sampling.ParentBasedTraceIdRatio(rate)
    return _FIXED_SAMPLERS[name]


def prometheus_port_from_env() -> int | None:
    """``OTEL_EXPORTER_PROMETHEUS_PORT``, or None when it is not set."""
    raw = os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "").strip()
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"prometheus_port: OTEL_EXPORTER_PROMETHEUS_PORT={raw!r} is not a port")
    return port


def span_processor(name: str) -> SpanProcessor:
    """The processor exporting spans to *name*: ``console`` at once, ``otlp`` in batches."""
    if name == "console":
        # Bound now, not at import time: sys.stdout may have been replaced since.
        return SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout))
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise MissingExtraError(
            f"traces: 'otlp' needs opentelemetry-exporter-otlp-proto-http: {OTLP_INSTALL}"
        ) from exc
    return BatchSpanProcessor(OTLPSpanExporter())


def metric_reader(name: str, registry: Any) -> MetricReader:
    """The reader for metric exporter *name* (``prometheus`` registers in *registry*)."""
    if name == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stdout))
    if name == "prometheus":
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
        except ImportError as exc:
            raise MissingExtraError(
                "metrics: 'prometheus' needs opentelemetry-exporter-prometheus: "
                "pip install 'asgikit[prometheus]'"
            ) from exc
        if registry is None:
            return PrometheusMetricReader()
        return PrometheusMetricReader(registry=registry)
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    except ImportError as exc:
        raise MissingExtraError(
            f"metrics: 'otlp' needs opentelemetry-exporter-otlp-proto-http: {OTLP_INSTALL}"
        ) from exc
    return PeriodicExportingMetricReader(OTLPMetricExporter())


def check_instances(option: str, values: object, kind: type, what: str) -> list[Any]:
    """*values* as a list, every item an instance of *kind*."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise TypeError(f"{option}: expected a sequence of {what}, not {values!r}")
    for index, value in enumerate(values):
        if not isinstance(value, kind):
            raise TypeError(f"{option}[{index}]: expected a {what}, not {value!r}")
    return list(values)
