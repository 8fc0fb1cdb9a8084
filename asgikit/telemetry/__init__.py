"""OpenTelemetry SDK set-up: providers, exporters and resource, from options or ``OTEL_*``.

``configure()`` is called once at start-up (``asgikit serve`` calls it from the config
file's ``[telemetry]`` table). It builds a ``TracerProvider`` and a ``MeterProvider``
with the exporters asked for (console for development, OTLP over HTTP or gRPC for
production, Prometheus for scraping), installs them as the global providers, and
returns a ``Telemetry`` whose ``shutdown()`` flushes what is pending, within
``export_timeout``. ``TracingMiddleware`` then finds the providers through the
OpenTelemetry API. Options left at None fall back to the standard environment
variables; what the SDK and the exporters read themselves (endpoints, headers, the
sampler when no option names one, batch and interval settings) is left to them. See
``docs/telemetry.md``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from asgikit.logging.collector import remove_sink
from asgikit.options import positive_seconds
from asgikit.telemetry.deadline import run_within
from asgikit.telemetry.exporters import (
    MetricsExporter,
    OtlpProtocol,
    SamplerName,
    TracesExporter,
    check_instances,
    check_protocol,
    metric_reader,
    metrics_exporters,
    sampler_from,
    span_processor,
    traces_exporters,
)
from asgikit.telemetry.logs import LogsExporter, install_sink, log_processor, logs_exporters
from asgikit.telemetry.logs import provider_for as logger_provider_for
from asgikit.telemetry.prometheus import (
    MetricsEndpoint,
    MissingExtraError,
    PrometheusServer,
    import_prometheus_client,
    start_prometheus_server,
)
from asgikit.telemetry.settings import prometheus_address, resource_from

__all__ = [
    "LogsExporter",
    "MetricsEndpoint",
    "MetricsExporter",
    "MissingExtraError",
    "OtlpProtocol",
    "PrometheusServer",
    "SamplerName",
    "Telemetry",
    "TracesExporter",
    "configure",
    "global_providers_set",
    "start_prometheus_server",
]


class Telemetry:
    """What ``configure()`` set up, and the way to flush and shut it down.

    Usable as a context manager: leaving the ``with`` block calls ``shutdown()``.
    """

    __slots__ = (
        "_lock",
        "_shut_down",
        "_sink",
        "export_timeout",
        "is_global",
        "logger_provider",
        "logs",
        "meter_provider",
        "metrics",
        "prometheus_registry",
        "prometheus_server",
        "resource",
        "tracer_provider",
        "traces",
    )

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        resource: Resource,
        traces: tuple[str, ...],
        metrics: tuple[str, ...],
        prometheus_server: PrometheusServer | None,
        prometheus_registry: Any,
        is_global: bool,
        export_timeout: float = 10.0,
        logger_provider: Any = None,
        logs: tuple[str, ...] = (),
        sink: Any = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        """The SDK ``TracerProvider``: pass it to ``TracingMiddleware`` when not global."""
        self.meter_provider = meter_provider
        """The SDK ``MeterProvider``."""
        self.resource = resource
        """The resource every span and metric carries (``service.name`` and the rest)."""
        self.traces = traces
        """The span exporters set up, e.g. ``("otlp",)``; empty for none."""
        self.metrics = metrics
        """The metric exporters set up, e.g. ``("prometheus",)``; empty for none."""
        self.prometheus_server = prometheus_server
        """The Prometheus scrape server, when a port was asked for."""
        self.prometheus_registry = prometheus_registry
        """The prometheus_client registry the metrics are in (for ``MetricsEndpoint``)."""
        self.is_global = is_global
        """Whether the providers were installed as OpenTelemetry's global ones."""
        self.logger_provider = logger_provider
        """The SDK ``LoggerProvider`` the log lines go to (``logs``), else None."""
        self.logs = logs
        """The log exporters set up, e.g. ``("otlp",)``; empty for none."""
        self.export_timeout = export_timeout
        """Seconds ``force_flush()`` and ``shutdown()`` wait at most, in total."""
        self._lock = threading.Lock()
        self._shut_down = False
        self._sink = sink  # the collector sink this one installed, if any

    @property
    def shut_down(self) -> bool:
        """Whether ``shutdown()`` was called."""
        return self._shut_down

    def force_flush(self, timeout_millis: float | None = None) -> bool:
        """Export pending spans and collect and export metrics now.

        Spans and metrics are flushed at once, and the call returns within
        *timeout_millis* (default ``export_timeout``) even when a collector does not
        answer; what is not done by then goes on in the background.

        Returns:
            Whether both were flushed in time.
        """
        seconds = self.export_timeout if timeout_millis is None else timeout_millis / 1000
        millis = int(seconds * 1000)
        work = {
            "spans": lambda: self.tracer_provider.force_flush(millis),
            "metrics": lambda: self.meter_provider.force_flush(millis),
        }
        if self.logger_provider is not None:
            work["logs"] = lambda: self.logger_provider.force_flush(millis)
        outcome = run_within("force_flush", seconds, work)
        outcome.raise_first()
        return not outcome.late and False not in outcome.results.values()

    def shutdown(self) -> None:
        """Flush and shut down the providers, then stop the Prometheus server.

        Spans and metrics are flushed at once, and the call returns within
        ``export_timeout`` even when a collector does not answer: what is not done by
        then is left to a daemon thread, with a warning on the ``asgikit.telemetry``
        logger, so a collector that is down does not hold a worker's exit.

        Safe to call more than once and from several threads: the first call does the
        work, the others wait for it to finish and return. Global providers stay
        installed (OpenTelemetry cannot unset them) but record nothing more.
        """
        with self._lock:  # held throughout: a concurrent caller returns once it is done
            if self._shut_down:
                return
            self._shut_down = True
            millis = self.export_timeout * 1000
            try:
                # Both at once: a failing or slow span exporter does not keep metrics
                # unflushed, and both share the one bound.
                work = {
                    "spans": self.tracer_provider.shutdown,
                    "metrics": lambda: self.meter_provider.shutdown(timeout_millis=millis),
                }
                if self.logger_provider is not None:
                    # The lines go on, without their copy; a sink another Telemetry
                    # installed since is its own, left in place.
                    remove_sink(self._sink)
                    work["logs"] = self.logger_provider.shutdown
                outcome = run_within("shutdown", self.export_timeout, work)
                outcome.raise_first()
            finally:
                if self.prometheus_server is not None:
                    self.prometheus_server.stop()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        service = self.resource.attributes.get(SERVICE_NAME)
        return (
            f"<Telemetry service={service!r} traces={list(self.traces)} "
            f"metrics={list(self.metrics)} logs={list(self.logs)} global={self.is_global} "
            f"shut_down={self._shut_down}>"
        )


def global_providers_set() -> bool:
    """Whether a global tracer or meter provider is installed (they can be set only once)."""
    if not isinstance(trace_api.get_tracer_provider(), trace_api.ProxyTracerProvider):
        return True
    # The API hands out a proxy until a meter provider is set; it has no public name.
    return type(metrics_api.get_meter_provider()).__name__ != "_ProxyMeterProvider"


def configure(
    *,
    service_name: str | None = None,
    traces: TracesExporter | None = None,
    metrics: MetricsExporter | None = None,
    logs: LogsExporter | None = None,
    protocol: OtlpProtocol | None = None,
    sampler: SamplerName | None = None,
    sampler_ratio: float | None = None,
    prometheus_port: int | None = None,
    prometheus_host: str | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    export_timeout: float = 10.0,
    set_global: bool = True,
    span_processors: Sequence[Any] = (),
    metric_readers: Sequence[Any] = (),
    prometheus_registry: Any = None,
    log_processors: Sequence[Any] = (),
) -> Telemetry:
    """Set up the OpenTelemetry SDK: resource, tracer and meter providers, exporters.

    Call it once, at start-up, before the app handles requests.

    Args:
        service_name: The ``service.name`` resource attribute; else ``OTEL_SERVICE_NAME``,
            else ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``, else the SDK's
            ``unknown_service``.
        traces: Where spans go: ``"console"`` (printed at once, for development),
            ``"otlp"`` (batched, OTLP over HTTP or gRPC, see ``protocol``) or
            ``"none"``. Else ``OTEL_TRACES_EXPORTER`` (a comma-separated list); unset
            means none.
        metrics: Where metrics go: ``"console"``, ``"otlp"`` (both every
            ``OTEL_METRIC_EXPORT_INTERVAL`` ms, 60000 by default), ``"prometheus"``
            (scraped: the ``prometheus`` extra) or ``"none"``. Else
            ``OTEL_METRICS_EXPORTER``; unset means none.
        logs: Where log lines go besides their own output: ``"otlp"`` (batched, OTLP
            over ``protocol``, to the same endpoint settings as spans), ``"console"`` or
            ``"none"``. Every structlog line (the access line and the app's own, and
            ``logging`` records routed through ``asgikit.logging``) becomes an
            OpenTelemetry log record carrying its span's trace and span ids. Else
            ``OTEL_LOGS_EXPORTER``; unset means none (off by default). One
            ``Telemetry`` at a time gets the lines: a later one with logs takes them over
            (a ``RuntimeWarning``), and the earlier one's ``shutdown()`` leaves it so.
        protocol: How ``"otlp"`` exports: ``"http/protobuf"`` (the ``otlp`` extra) or
            ``"grpc"`` (the ``otlp-grpc`` extra), for spans and metrics. Else
            ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``..._METRICS_PROTOCOL``, else
            ``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``"http/protobuf"``.
        sampler: ``"always_on"``, ``"always_off"``, ``"traceidratio"`` or their
            ``"parentbased_..."`` forms. None lets the SDK read ``OTEL_TRACES_SAMPLER``
            and ``OTEL_TRACES_SAMPLER_ARG`` (default ``parentbased_always_on``).
        sampler_ratio: The ratio of traces a ``traceidratio`` sampler keeps, 0 to 1;
            else ``OTEL_TRACES_SAMPLER_ARG``, else 1. Given alone, it means
            ``parentbased_traceidratio``.
        prometheus_port: With ``metrics="prometheus"``, serve the metrics on this port
            from a thread of their own (0: any free port); else
            ``OTEL_EXPORTER_PROMETHEUS_PORT``; else no server (serve them on a path of
            the app with ``MetricsEndpoint``).
        prometheus_host: The address that port listens on; else
            ``OTEL_EXPORTER_PROMETHEUS_HOST``, else ``127.0.0.1`` (loopback only).
        resource_attributes: More resource attributes (``deployment.environment.name``,
            ``service.version``...), over those of ``OTEL_RESOURCE_ATTRIBUTES``.
        export_timeout: Seconds ``shutdown()`` and ``force_flush()`` wait at most, in
            total, so that a collector that is down cannot hold the process's exit;
            also each OTLP request's timeout, unless ``OTEL_EXPORTER_OTLP_TIMEOUT`` (or
            a signal's own) sets that.
        set_global: Install the providers as OpenTelemetry's global ones, which
            ``TracingMiddleware`` and other instrumentation use by default. The API allows
            that once per process: a second time raises ``RuntimeError``.
        span_processors: More span processors, added before the exporters' (in code
            only: ``InMemorySpanExporter`` in tests, a custom processor).
        metric_readers: More metric readers (in code only: ``InMemoryMetricReader``).
        prometheus_registry: The prometheus_client registry for ``"prometheus"``;
            prometheus_client's global ``REGISTRY`` by default.
        log_processors: More log record processors (in code only: an
            ``InMemoryLogRecordExporter`` behind a ``SimpleLogRecordProcessor``); with
            them, lines go to the collector even without ``logs``.

    Returns:
        The ``Telemetry``: the providers, and ``shutdown()`` for the end of the process.

    Raises:
        ValueError: An option (or the environment variable read in its place) is not
            one of the known values; the message starts with the option's name.
        TypeError: An option has the wrong type.
        MissingExtraError: ``otlp`` or ``prometheus`` is asked for but its extra is not
            installed (an ``ImportError``; the message gives the ``pip install``).
        RuntimeError: ``set_global`` and global providers are already installed.
        OSError: The Prometheus port cannot be listened on.
    """
    if not isinstance(set_global, bool):
        raise TypeError(f"set_global: expected a bool, not {set_global!r}")
    resource = resource_from(service_name, resource_attributes)
    span_exporters = traces_exporters(traces)
    metric_exporters = metrics_exporters(metrics)
    log_exporters = logs_exporters(logs)
    chosen_protocol = check_protocol(protocol)
    timeout = positive_seconds(export_timeout, "export_timeout")
    if timeout is None:
        raise TypeError("export_timeout: expected a number of seconds, not None")
    chosen_sampler = sampler_from(sampler, sampler_ratio)
    extra_processors = check_instances(
        "span_processors", span_processors, SpanProcessor, "SpanProcessor"
    )
    extra_readers = check_instances("metric_readers", metric_readers, MetricReader, "MetricReader")
    extra_log_processors = check_instances(
        "log_processors", log_processors, LogRecordProcessor, "LogRecordProcessor"
    )
    if prometheus_registry is not None and not callable(
        getattr(prometheus_registry, "register", None)
    ):
        raise TypeError(
            f"prometheus_registry: expected a prometheus_client CollectorRegistry, "
            f"not {prometheus_registry!r}"
        )
    port, host = prometheus_address(prometheus_port, prometheus_host, metric_exporters)
    if set_global and global_providers_set():
        raise RuntimeError(
            "set_global: global OpenTelemetry providers are already installed (by an "
            "earlier configure() or other code), and the API allows that once per "
            "process; call configure() once at start-up, or pass set_global=False and "
            "hand telemetry.tracer_provider and .meter_provider to what needs them"
        )

    # Build every exporter before anything is installed; if one fails (a missing
    # extra), shut down those already built: no thread or registration is left behind.
    processors, readers, built_logs = _build(
        (span_exporters, metric_exporters, log_exporters),
        (extra_processors, extra_readers),
        prometheus_registry,
        chosen_protocol,
        timeout,
    )
    tracer_provider = TracerProvider(sampler=chosen_sampler, resource=resource)
    for processor in processors:
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if "prometheus" in metric_exporters and prometheus_registry is None:
        prometheus_registry = import_prometheus_client("metrics").REGISTRY
    server = None
    if port is not None:
        try:
            server = start_prometheus_server(port=port, host=host, registry=prometheus_registry)
        except OSError as exc:
            tracer_provider.shutdown()
            meter_provider.shutdown()
            _shutdown_built([], [], [*extra_log_processors, *built_logs])
            raise OSError(
                f"prometheus_port: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from exc
    if set_global:
        trace_api.set_tracer_provider(tracer_provider)
        metrics_api.set_meter_provider(meter_provider)
    logger_provider = sink = None
    if extra_log_processors or built_logs:
        logger_provider = logger_provider_for(resource, [*extra_log_processors, *built_logs])
        sink = install_sink(logger_provider)
    return Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        resource=resource,
        traces=span_exporters,
        metrics=metric_exporters,
        prometheus_server=server,
        prometheus_registry=prometheus_registry,
        is_global=set_global,
        export_timeout=timeout,
        logger_provider=logger_provider,
        logs=log_exporters,
        sink=sink,
    )


def _build(
    exporters: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]],
    extra: tuple[list[SpanProcessor], list[MetricReader]],
    registry: Any,
    protocol: OtlpProtocol | None,
    timeout: float,
) -> tuple[list[SpanProcessor], list[MetricReader], list[LogRecordProcessor]]:
    """The span processors, metric readers and log processors of the exporters (after
    the *extra* ones given); if one fails (a missing extra), those already built are
    shut down: no thread or registration is left behind."""
    span_exporters, metric_exporters, log_exporters = exporters
    processors: list[SpanProcessor] = []
    readers: list[MetricReader] = []
    logs: list[LogRecordProcessor] = []
    try:
        # One at a time (not extend), so that those built before a failure are known.
        for name in span_exporters:
            processors.append(span_processor(name, protocol, timeout))  # noqa: PERF401
        for name in metric_exporters:
            readers.append(metric_reader(name, registry, protocol, timeout))  # noqa: PERF401
        for name in log_exporters:
            logs.append(log_processor(name, protocol, timeout))  # noqa: PERF401
    except BaseException:
        _shutdown_built(processors, readers, logs)
        raise
    return [*extra[0], *processors], [*extra[1], *readers], logs


def _shutdown_built(
    processors: list[SpanProcessor],
    readers: list[MetricReader],
    logs: list[LogRecordProcessor],
) -> None:
    for processor in processors:
        processor.shutdown()
    for reader in readers:
        reader.shutdown()
    for log in logs:
        log.shutdown()
