"""Logs to the collector: every structlog line as an OpenTelemetry log record.

``configure(logs="otlp")`` builds a ``LoggerProvider`` from the SDK's logs pipeline (a
``BatchLogRecordProcessor`` feeding the OTLP log exporter, over the same protocol and
endpoint settings as spans) and installs :class:`StructlogSink` in
``asgikit.logging.collector``: each line (the access line, the app's own structlog
lines, ``logging`` records routed through asgikit's logging) becomes a record whose
body is the event, whose attributes are the line's fields, and whose trace and span ids
are the line's ``trace_id`` and ``span_id`` (else the current span's), so a trace view
shows the request's logs beside its spans.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, Literal, get_args

from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    ConsoleLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    get_current_span,
    set_span_in_context,
)

from asgikit.logging.collector import installed_sink, set_sink
from asgikit.telemetry.exporters import (
    OtlpProtocol,
    exporters_for,
    missing_otlp,
    otlp_protocol,
    otlp_timeout,
)

__all__ = [
    "LOGS_CHOICES",
    "LogsExporter",
    "StructlogSink",
    "install_sink",
    "log_processor",
    "logs_exporters",
]

LogsExporter = Literal["console", "otlp", "none"]
LOGS_CHOICES: Final = frozenset(get_args(LogsExporter))

# structlog's level names, and what OpenTelemetry's severity numbers call them.
_SEVERITY: Final = {
    "debug": (SeverityNumber.DEBUG, "DEBUG"),
    "info": (SeverityNumber.INFO, "INFO"),
    "warning": (SeverityNumber.WARN, "WARN"),
    "warn": (SeverityNumber.WARN, "WARN"),
    "error": (SeverityNumber.ERROR, "ERROR"),
    "exception": (SeverityNumber.ERROR, "ERROR"),
    "critical": (SeverityNumber.FATAL, "FATAL"),
    "fatal": (SeverityNumber.FATAL, "FATAL"),
}
# Fields the record carries elsewhere (body, severity, ids, time), or structlog's own.
_NOT_ATTRIBUTES: Final = frozenset(
    {"event", "level", "log_level", "timestamp", "exc_info", "trace_id", "span_id"}
)


def logs_exporters(value: object) -> tuple[str, ...]:
    """The log exporters to set up: ``logs``, else ``OTEL_LOGS_EXPORTER``; none by default."""
    return exporters_for("logs", value, LOGS_CHOICES, "OTEL_LOGS_EXPORTER")


def log_processor(
    name: str, protocol: OtlpProtocol | None = None, export_timeout: float = 10.0
) -> LogRecordProcessor:
    """The processor exporting log records to *name*: ``console`` at once, ``otlp`` in
    batches (over *protocol*, else the one the variables name)."""
    if name == "console":
        return SimpleLogRecordProcessor(ConsoleLogRecordExporter(out=sys.stdout))
    chosen = otlp_protocol("logs", protocol)
    timeout = otlp_timeout("logs", export_timeout)
    try:
        if chosen == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
                OTLPLogExporter as GrpcLogExporter,
            )

            return BatchLogRecordProcessor(GrpcLogExporter(timeout=timeout))
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    except ImportError as exc:
        raise missing_otlp("logs", chosen) from exc
    return BatchLogRecordProcessor(OTLPLogExporter(timeout=timeout))


def provider_for(resource: Resource, processors: list[LogRecordProcessor]) -> LoggerProvider:
    """A ``LoggerProvider`` with *resource* and *processors*."""
    provider = LoggerProvider(resource=resource)
    for processor in processors:
        provider.add_log_record_processor(processor)
    return provider


def _value(value: Any) -> Any:
    """An attribute value OpenTelemetry takes: str, bool, int, float, or its text."""
    if isinstance(value, str | bool | int | float):
        return value
    return str(value)


def _context(fields: Mapping[str, Any]) -> Context | None:
    """The context naming the line's span (its ``trace_id`` and ``span_id``), or None
    (the current one) when the line names none."""
    trace_id, span_id = fields.get("trace_id"), fields.get("span_id")
    if not (isinstance(trace_id, str) and isinstance(span_id, str)):
        return None
    try:
        trace, span = int(trace_id, 16), int(span_id, 16)
    except ValueError:
        return None
    span_context = SpanContext(trace, span, is_remote=False, trace_flags=_flags_of(trace, span))
    if not span_context.is_valid:
        return None
    return set_span_in_context(NonRecordingSpan(span_context))


def _flags_of(trace_id: int, span_id: int) -> TraceFlags:
    """The current span's flags (sampled or not) when it is the line's span, else none
    set: a line's ids alone do not say whether its trace was sampled."""
    current = get_current_span().get_span_context()
    if current.trace_id == trace_id and current.span_id == span_id:
        return current.trace_flags
    return TraceFlags(TraceFlags.DEFAULT)


def _exception(value: object) -> BaseException | None:
    if isinstance(value, BaseException):
        return value
    if value is True:
        return sys.exc_info()[1]
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return value[1]
    return None


class StructlogSink:
    """Turn each structlog event dict into a log record of *provider*'s logger.

    Args:
        provider: The SDK ``LoggerProvider``.
    """

    __slots__ = ("_logger",)

    def __init__(self, provider: LoggerProvider) -> None:
        self._logger = provider.get_logger("asgikit.logging")

    def __call__(self, method_name: str, fields: MutableMapping[str, Any]) -> None:
        level = fields.get("level") or fields.get("log_level") or method_name
        number, text = _SEVERITY.get(str(level).lower(), _SEVERITY["info"])
        attributes = {
            key: _value(value)
            for key, value in fields.items()
            if key not in _NOT_ATTRIBUTES and not key.startswith("_") and value is not None
        }
        record = _record_logger(fields)
        if record is not None:
            attributes.setdefault("logger.name", record)
        self._logger.emit(
            context=_context(fields),
            severity_number=number,
            severity_text=text,
            body=_value(fields.get("event", "")),
            attributes=attributes,
            exception=_exception(fields.get("exc_info")),
        )


def install_sink(provider: LoggerProvider) -> StructlogSink:
    """Send every line to *provider* from now on: a :class:`StructlogSink` installed in
    ``asgikit.logging.collector`` (one per process), which it returns.

    A sink already installed (another live ``Telemetry``'s) is replaced, with a
    ``RuntimeWarning``: its provider receives no more lines.
    """
    if installed_sink() is not None:
        warnings.warn(
            "logs: another collector sink is installed (a Telemetry configured with logs "
            "and not shut down): log lines go to this one's processors from now on, no "
            "longer to the earlier one's",
            RuntimeWarning,
            stacklevel=3,
        )
    sink = StructlogSink(provider)
    set_sink(sink)
    return sink


def _record_logger(fields: Mapping[str, Any]) -> str | None:
    """The ``logging`` logger a routed record came from, if it is one."""
    record = fields.get("_record")
    name = getattr(record, "name", None)
    return name if isinstance(name, str) else None
