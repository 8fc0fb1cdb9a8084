"""Which exporters and sampler asgikit.telemetry sets up: options first, then OTEL_* variables.

Only the choices are read here (which exporter, which OTLP protocol, which sampler, which
Prometheus port); everything else an exporter or the SDK reads from the environment
(endpoints, headers, batch sizes, export intervals) they keep reading themselves.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, get_args

from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import sampling as _sampling
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from asgikit.telemetry.prometheus import OTLP_GRPC_INSTALL, OTLP_INSTALL, MissingExtraError

__all__ = [
    "MetricsExporter",
    "OtlpProtocol",
    "SamplerName",
    "TracesExporter",
    "check_protocol",
    "metric_reader",
    "metrics_exporters",
    "otlp_protocol",
    "prometheus_port_from_env",
    "sampler_from",
    "span_processor",
    "traces_exporters",
]

TracesExporter = Literal["console", "otlp", "none"]
OtlpProtocol = Literal["grpc", "http/protobuf"]
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
PROTOCOL_CHOICES: Final = get_args(OtlpProtocol)
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
    "logs": ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
}
# The variables that set an OTLP exporter's own per-request timeout.
_OTLP_TIMEOUT_VARS: Final = {
    "traces": ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"),
    "metrics": ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"),
    "logs": ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"),
}
_OTLP_PACKAGES: Final = {
    "grpc": ("opentelemetry-exporter-otlp-proto-grpc", OTLP_GRPC_INSTALL),
    "http/protobuf": ("opentelemetry-exporter-otlp-proto-http", OTLP_INSTALL),
}


def _choices(values: frozenset[str]) -> str:
    return ", ".join(repr(value) for value in sorted(values))


def exporters_for(
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
    return tuple(dict.fromkeys(name for name in names if name and name != "none"))


def check_protocol(value: object) -> OtlpProtocol | None:
    """The ``protocol`` option, checked (None: the variables decide)."""
    if value is None:
        return None
    if value == "grpc":
        return "grpc"
    if value == "http/protobuf":
        return "http/protobuf"
    raise ValueError(
        f"protocol: expected one of {', '.join(map(repr, PROTOCOL_CHOICES))}, not {value!r}"
    )


def otlp_protocol(signal: str, protocol: OtlpProtocol | None) -> OtlpProtocol:
    """The protocol *signal*'s OTLP exporter speaks: the ``protocol`` option, else the
    signal's own variable, else ``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``http/protobuf``.
    """
    if protocol is not None:
        return protocol
    for variable in _OTLP_PROTOCOL_VARS[signal]:
        raw = os.environ.get(variable, "").strip()
        if raw:
            checked = raw.lower()
            if checked not in PROTOCOL_CHOICES:
                raise ValueError(
                    f"{signal}: {variable}={raw!r}: asgikit exports OTLP over "
                    f"{' or '.join(map(repr, PROTOCOL_CHOICES))} (set it to one of them, or "
                    "unset it for 'http/protobuf')"
                )
            return "grpc" if checked == "grpc" else "http/protobuf"
    return "http/protobuf"


def otlp_timeout(signal: str, export_timeout: float) -> float | None:
    """The exporter's per-request timeout: *export_timeout*, unless a variable sets it
    (None: the exporter reads the variable)."""
    if any(os.environ.get(variable, "").strip() for variable in _OTLP_TIMEOUT_VARS[signal]):
        return None
    return export_timeout


def missing_otlp(signal: str, protocol: str) -> MissingExtraError:
    package, install = _OTLP_PACKAGES[protocol]
    over = " over gRPC" if protocol == "grpc" else ""
    return MissingExtraError(f"{signal}: 'otlp'{over} needs {package}: {install}")


def traces_exporters(value: object) -> tuple[str, ...]:
    """The span exporters to set up: ``traces``, else ``OTEL_TRACES_EXPORTER``."""
    return exporters_for("traces", value, TRACES_CHOICES, "OTEL_TRACES_EXPORTER")


def metrics_exporters(value: object) -> tuple[str, ...]:
    """The metric exporters to set up: ``metrics``, else ``OTEL_METRICS_EXPORTER``."""
    return exporters_for("metrics", value, METRICS_CHOICES, "OTEL_METRICS_EXPORTER")


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
    if name not in RATIO_SAMPLERS:
        return _FIXED_SAMPLERS[name]
    rate = _ratio_from_env() if ratio is None else float(ratio)
    if name == "traceidratio":
        return _sampling.TraceIdRatioBased(rate)
    return _sampling.ParentBasedTraceIdRatio(rate)


def _ratio_from_env() -> float:
    """``OTEL_TRACES_SAMPLER_ARG`` for a ratio sampler named without a ratio, else 1."""
    raw = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if not raw:
        return 1.0
    try:
        ratio = float(raw)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(
            f"sampler_ratio: OTEL_TRACES_SAMPLER_ARG={raw!r} is not a number from 0 to 1"
        )
    return ratio


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


def span_processor(
    name: str, protocol: OtlpProtocol | None = None, export_timeout: float = 10.0
) -> SpanProcessor:
    """The processor exporting spans to *name*: ``console`` at once, ``otlp`` in batches
    (over *protocol*, else the one the variables name)."""
    if name == "console":
        # Bound now, not at import time: sys.stdout may have been replaced since.
        return SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout))
    chosen = otlp_protocol("traces", protocol)
    return BatchSpanProcessor(_otlp_span_exporter(chosen, otlp_timeout("traces", export_timeout)))


def _otlp_span_exporter(protocol: OtlpProtocol, timeout: float | None) -> SpanExporter:
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )

            return GrpcSpanExporter(timeout=timeout)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise missing_otlp("traces", protocol) from exc
    return OTLPSpanExporter(timeout=timeout)


def metric_reader(
    name: str,
    registry: Any,
    protocol: OtlpProtocol | None = None,
    export_timeout: float = 10.0,
) -> MetricReader:
    """The reader for metric exporter *name* (``prometheus`` registers in *registry*;
    ``otlp`` exports over *protocol*, else the one the variables name)."""
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
    chosen = otlp_protocol("metrics", protocol)
    exporter = _otlp_metric_exporter(chosen, otlp_timeout("metrics", export_timeout))
    return PeriodicExportingMetricReader(exporter)


def _otlp_metric_exporter(protocol: OtlpProtocol, timeout: float | None) -> MetricExporter:
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcMetricExporter,
            )

            return GrpcMetricExporter(timeout=timeout)
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    except ImportError as exc:
        raise missing_otlp("metrics", protocol) from exc
    return OTLPMetricExporter(timeout=timeout)


def check_instances(option: str, values: object, kind: type, what: str) -> list[Any]:
    """*values* as a list, every item an instance of *kind*."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise TypeError(f"{option}: expected a sequence of {what}, not {values!r}")
    for index, value in enumerate(values):
        if not isinstance(value, kind):
            raise TypeError(f"{option}[{index}]: expected a {what}, not {value!r}")
    return list(values)
