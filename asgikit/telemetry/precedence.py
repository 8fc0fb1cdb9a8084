"""A config file's ``[telemetry]`` defaults give way to the standard ``OTEL_*`` variables.

A value written in the file, or a ``${NAME}`` that was set, is a choice: it is passed
to ``configure()`` and wins over the variable. A value that is only a
``${NAME:-default}`` fallback repeats a default: when the setting's standard variable
is set, the value is left out, so that ``configure()`` reads the variable as it does
for any option not given. The table in ``docs/telemetry.md`` ("Precedence") says the
same for every setting.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any, Final

from asgikit.telemetry.exporters import RATIO_SAMPLERS

__all__ = ["VARIABLES", "prefer_variables"]

VARIABLES: Final[Mapping[str, tuple[str, ...]]] = {
    "service_name": ("OTEL_SERVICE_NAME",),
    "traces": ("OTEL_TRACES_EXPORTER",),
    "metrics": ("OTEL_METRICS_EXPORTER",),
    "protocol": (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    ),
    "sampler": ("OTEL_TRACES_SAMPLER",),
    "sampler_ratio": ("OTEL_TRACES_SAMPLER_ARG",),
    "prometheus_port": ("OTEL_EXPORTER_PROMETHEUS_PORT",),
    "prometheus_host": ("OTEL_EXPORTER_PROMETHEUS_HOST",),
    "resource_attributes": ("OTEL_RESOURCE_ATTRIBUTES",),
}
"""Each ``configure()`` option and the standard variables that stand for it."""

_SERVICE_NAME: Final = "service.name"


def _resource_keys(environ: Mapping[str, str]) -> set[str]:
    """The keys ``OTEL_RESOURCE_ATTRIBUTES`` sets (``key=value`` pairs, comma-separated)."""
    raw = environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    return {pair.partition("=")[0].strip() for pair in raw.split(",") if "=" in pair}


def _set(environ: Mapping[str, str], option: str) -> str | None:
    """The first of *option*'s variables that is set (not empty), or None."""
    for variable in VARIABLES[option]:
        if environ.get(variable, "").strip():
            return variable
    return None


def prefer_variables(
    arguments: Mapping[str, Any],
    defaulted: Collection[tuple[str | int, ...]],
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """*arguments* less the defaulted values whose standard variable is set.

    Args:
        arguments: A ``[telemetry]`` table's arguments for ``configure()``.
        defaulted: The paths, within the table, of values that came only from
            ``${NAME:-default}`` fallbacks: ``("service_name",)``, or
            ``("resource_attributes", "deployment.environment.name")``.
        environ: The variables; ``os.environ`` by default.
    """
    env = os.environ if environ is None else environ
    result = dict(arguments)
    yielded = {
        option
        for option in VARIABLES
        if option in result and (option,) in defaulted and _set(env, option) is not None
    }
    if (
        "service_name" in result
        and ("service_name",) in defaulted
        and _SERVICE_NAME in _resource_keys(env)
    ):
        yielded.add("service_name")  # the other standard way to name the service
    yielded.discard("resource_attributes")  # merged key by key, below
    for option in yielded:
        del result[option]
    _sampler_pair(result, yielded, env)
    attributes = result.get("resource_attributes")
    if isinstance(attributes, Mapping):
        result["resource_attributes"] = _merged(attributes, defaulted, env)
    return result


def _sampler_pair(result: dict[str, Any], yielded: set[str], env: Mapping[str, str]) -> None:
    """Keep ``sampler`` and ``sampler_ratio`` saying what the variables say when only one
    of them gave way (``configure()`` reads ``OTEL_TRACES_SAMPLER_ARG`` for a ratio
    sampler named without a ratio; it leaves both variables to the SDK only when neither
    option is given)."""
    if "sampler_ratio" in yielded:
        if "sampler" not in result and _set(env, "sampler") is None:
            result["sampler"] = "parentbased_traceidratio"  # what the file's ratio implied
    elif "sampler" in yielded and "sampler_ratio" in result:
        # The variable names the sampler: the file's ratio applies if it takes one.
        name = env["OTEL_TRACES_SAMPLER"].strip().lower()
        if name in RATIO_SAMPLERS:
            result["sampler"] = name
        else:
            del result["sampler_ratio"]


def _merged(
    attributes: Mapping[str, Any],
    defaulted: Collection[tuple[str | int, ...]],
    env: Mapping[str, str],
) -> dict[str, Any]:
    """The resource attributes less the defaulted ones the variables set themselves."""
    from_variables = _resource_keys(env)
    if env.get("OTEL_SERVICE_NAME", "").strip():
        from_variables.add(_SERVICE_NAME)
    return {
        key: value
        for key, value in attributes.items()
        if not (("resource_attributes", key) in defaulted and key in from_variables)
    }
