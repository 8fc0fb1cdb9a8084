"""Real OTLP receivers on loopback for the tests: HTTP (protobuf bodies) and gRPC.

Each decodes what exporters send with ``opentelemetry-proto`` and keeps it: the server
spans' names and attributes, and how many metric exports arrived with which metric
names. ``HTTPReceiver`` is a threading HTTP server answering ``POST /v1/traces`` and
``POST /v1/metrics`` (and ``POST /v1/logs``); ``GRPCReceiver`` serves OTLP's ``TraceService`` and
``MetricsService`` with grpcio. Both run until ``close()`` (or the ``with`` block ends).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

HOST = "127.0.0.1"


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


@dataclass
class Received:
    """What a receiver has decoded so far (read it under ``lock``)."""

    spans: list[dict[str, Any]] = field(default_factory=list)
    span_ids: list[dict[str, Any]] = field(default_factory=list)
    """Each span's ids (hex), name, kind and service, in the order they arrived."""
    logs: list[dict[str, Any]] = field(default_factory=list)
    """Each log record: body, severity, trace and span ids (hex), attributes, service."""
    metric_exports: int = 0
    metric_names: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_traces(self, request: ExportTraceServiceRequest) -> None:
        with self.lock:
            for resource_spans in request.resource_spans:
                service = self._service(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        attributes = {a.key: _value(a.value) for a in span.attributes}
                        server = span.kind == Span.SPAN_KIND_SERVER
                        self.spans.append({"name": span.name, "server": server, **attributes})
                        self.span_ids.append(
                            {
                                "name": span.name,
                                "kind": span.kind,
                                "service": service,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "attributes": attributes,
                            }
                        )

    def add_logs(self, request: ExportLogsServiceRequest) -> None:
        with self.lock:
            for resource_logs in request.resource_logs:
                service = self._service(resource_logs.resource.attributes)
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        self.logs.append(
                            {
                                "body": _value(record.body),
                                "severity": record.severity_text,
                                "severity_number": record.severity_number,
                                "trace_id": record.trace_id.hex(),
                                "span_id": record.span_id.hex(),
                                "attributes": {a.key: _value(a.value) for a in record.attributes},
                                "service": service,
                            }
                        )

    def add_metrics(self, request: ExportMetricsServiceRequest) -> None:
        with self.lock:
            self.metric_exports += 1
            for resource_metrics in request.resource_metrics:
                self._service(resource_metrics.resource.attributes)
                for scope_metrics in resource_metrics.scope_metrics:
                    self.metric_names.update(metric.name for metric in scope_metrics.metrics)

    def _service(self, attributes: Any) -> str | None:
        for attribute in attributes:
            if attribute.key == "service.name":
                name: str = _value(attribute.value)
                self.services.add(name)
                return name
        return None

    def server_spans(self) -> list[dict[str, Any]]:
        with self.lock:
            return [span for span in self.spans if span["server"]]


class HTTPReceiver:
    """OTLP/HTTP with protobuf bodies, on a free loopback port."""

    def __init__(self) -> None:
        self.received = Received()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path == "/v1/traces":
                    received.add_traces(ExportTraceServiceRequest.FromString(body))
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/logs":
                    received.add_logs(ExportLogsServiceRequest.FromString(body))
                    answer = ExportLogsServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    received.add_metrics(ExportMetricsServiceRequest.FromString(body))
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self.endpoint = f"http://{HOST}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> HTTPReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GRPCReceiver:
    """OTLP over gRPC (grpcio), insecure, on a free loopback port."""

    def __init__(self) -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self.received = received = Received()

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                received.add_traces(request)
                return ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                received.add_metrics(request)
                return ExportMetricsServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self._server)
        port = self._server.add_insecure_port(f"{HOST}:0")
        self.endpoint = f"http://{HOST}:{port}"
        self._server.start()

    def close(self) -> None:
        self._server.stop(grace=None).wait(5)

    def __enter__(self) -> GRPCReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
