"""What ``configure()`` reads beside the exporters: the resource, the Prometheus address."""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from asgikit.telemetry.exporters import prometheus_port_from_env
from asgikit.telemetry.prometheus import check_port

__all__ = ["prometheus_address", "resource_from"]


def resource_from(service_name: object, attributes: object) -> Resource:
    given: dict[str, str] = {}
    if attributes is not None:
        if not isinstance(attributes, Mapping):
            raise TypeError(f"resource_attributes: expected a mapping, not {attributes!r}")
        for key, value in attributes.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"resource_attributes: keys are non-empty str, not {key!r}")
            if not isinstance(value, str):
                raise TypeError(f"resource_attributes[{key!r}]: expected a str, not {value!r}")
            given[key] = value
    if service_name is not None:
        if not isinstance(service_name, str):
            raise TypeError(f"service_name: expected a str, not {service_name!r}")
        if not service_name.strip():
            raise ValueError("service_name: expected a name, not an empty str")
        if given.get(SERVICE_NAME, service_name) != service_name:
            raise ValueError(
                f"service_name: {service_name!r} but resource_attributes names "
                f"{given[SERVICE_NAME]!r}; give it once"
            )
        given[SERVICE_NAME] = service_name
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME under these.
    return Resource.create(given)


def prometheus_address(
    port: object, host: object, exporters: tuple[str, ...]
) -> tuple[int | None, str]:
    """The port (None: no server) and host of the Prometheus server."""
    resolved = None if port is None else check_port(port, "prometheus_port")
    if resolved is not None and "prometheus" not in exporters:
        raise ValueError("prometheus_port: only used with metrics='prometheus'")
    if host is not None:
        if not isinstance(host, str):
            raise TypeError(f"prometheus_host: expected a str, not {host!r}")
        if not host.strip():
            raise ValueError("prometheus_host: expected an address, not an empty str")
        if "prometheus" not in exporters:
            raise ValueError("prometheus_host: only used with metrics='prometheus'")
    if "prometheus" not in exporters:
        return None, ""
    if resolved is None:
        resolved = prometheus_port_from_env()
        if resolved is None and host is not None:
            raise ValueError("prometheus_host: only used with a prometheus_port")
    if isinstance(host, str):
        return resolved, host
    return resolved, os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "").strip() or "127.0.0.1"
