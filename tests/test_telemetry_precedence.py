"""A config file's [telemetry] values against the standard OTEL_* variables.

A value that is only a ``${NAME:-default}`` fallback gives way to the variable; a value
written in the file, or a ``${NAME}`` that was set, wins over it. Each test loads a real
file and calls ``configure_telemetry`` as ``asgikit serve`` does (with the providers kept
local instead of global).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import asgikit.telemetry
from asgikit.config import configure_telemetry, load_config
from asgikit.telemetry import Telemetry
from tests._processes import free_port
from tests.otlp_receivers import HTTPReceiver, Received
from tests.telemetry_env import without_otel_variables

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    without_otel_variables(monkeypatch, "SERVICE_NAME", "EXPORTER", "RATIO")


@pytest.fixture
def start(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``start(text)``: load a config file and configure telemetry from it, as
    ``asgikit serve`` does, but with providers of its own (not the global ones)."""
    made: list[Telemetry] = []
    configure = asgikit.telemetry.configure

    def local(**arguments: Any) -> Telemetry:
        result = configure(**arguments, set_global=False)
        made.append(result)
        return result

    def run(text: str | Path, tmp: Path | None = None) -> Telemetry:
        if isinstance(text, Path):
            path = text
        else:
            assert tmp is not None
            path = tmp / "asgikit.toml"
            path.write_text('app = "x:y"\n\n[telemetry]\n' + text, encoding="utf-8")
        config = load_config(path)  # the [telemetry] options: those of the real configure
        with monkeypatch.context() as patch:
            patch.setattr(asgikit.telemetry, "configure", local)
            telemetry = configure_telemetry(config)
        assert isinstance(telemetry, Telemetry)
        return telemetry

    yield run
    for item in made:
        item.shutdown()


def span_names(received: Received) -> list[str]:
    with received.lock:
        return [span["name"] for span in received.spans]


def service(telemetry: Telemetry) -> object:
    return telemetry.resource.attributes["service.name"]


def test_the_example_productions_service_name_gives_way_to_otel_service_name(
    start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with HTTPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "shop")
        telemetry = start(ROOT / "examples" / "production.toml")
        assert service(telemetry) == "shop"
        with telemetry.tracer_provider.get_tracer("test").start_as_current_span("GET /"):
            pass
        telemetry.shutdown()
        assert receiver.received.services == {"shop"}
        assert span_names(receiver.received) == ["GET /"]


@pytest.mark.parametrize(
    ("written", "environ", "expected"),
    [
        ('"${SERVICE_NAME:-hello}"', {}, "hello"),  # no variable: the default
        ('"${SERVICE_NAME:-hello}"', {"OTEL_SERVICE_NAME": "shop"}, "shop"),
        ('"${SERVICE_NAME:-hello}"', {"OTEL_SERVICE_NAME": "shop", "SERVICE_NAME": ""}, "shop"),
        ('"${SERVICE_NAME:-hello}"', {"OTEL_RESOURCE_ATTRIBUTES": "service.name=attr"}, "attr"),
        ('"checkout"', {"OTEL_SERVICE_NAME": "shop"}, "checkout"),  # written: a choice
        ('"${SERVICE_NAME}"', {"OTEL_SERVICE_NAME": "shop", "SERVICE_NAME": "cart"}, "cart"),
        ('"${SERVICE_NAME:-hello}"', {"OTEL_SERVICE_NAME": "shop", "SERVICE_NAME": "cart"}, "cart"),
        ('"${SERVICE_NAME:-hello}-api"', {"OTEL_SERVICE_NAME": "shop"}, "hello-api"),
        ('"$${SERVICE_NAME}"', {"OTEL_SERVICE_NAME": "shop"}, "${SERVICE_NAME}"),
    ],
)
def test_service_name(
    start: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    written: str,
    environ: dict[str, str],
    expected: str,
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    telemetry = start(f"service_name = {written}\n", tmp_path)
    assert service(telemetry) == expected


@pytest.mark.parametrize(
    ("written", "environ", "traces", "metrics"),
    [
        ('traces = "${EXPORTER:-console}"', {"OTEL_TRACES_EXPORTER": "none"}, (), ()),
        ('traces = "${EXPORTER:-console}"', {}, ("console",), ()),
        ('traces = "console"', {"OTEL_TRACES_EXPORTER": "none"}, ("console",), ()),
        ('metrics = "${EXPORTER:-console}"', {"OTEL_METRICS_EXPORTER": "none"}, (), ()),
        ('metrics = "console"', {"OTEL_METRICS_EXPORTER": "none"}, (), ("console",)),
    ],
)
def test_exporters(
    start: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    written: str,
    environ: dict[str, str],
    traces: tuple[str, ...],
    metrics: tuple[str, ...],
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    telemetry = start(written + "\n", tmp_path)
    assert (telemetry.traces, telemetry.metrics) == (traces, metrics)


@pytest.mark.parametrize(
    ("written", "variable"),
    [
        ('"${PROTOCOL:-grpc}"', "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ('"${PROTOCOL:-grpc}"', "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
    ],
)
def test_a_defaulted_protocol_gives_way(
    start: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, written: str, variable: str
) -> None:
    with HTTPReceiver() as receiver:
        monkeypatch.setenv(variable, "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        telemetry = start(f'traces = "otlp"\nprotocol = {written}\n', tmp_path)
        with telemetry.tracer_provider.get_tracer("test").start_as_current_span("GET /"):
            pass
        telemetry.shutdown()
        assert span_names(receiver.received) == ["GET /"]  # over HTTP, not gRPC


def test_a_written_protocol_wins(
    start: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")  # would be refused
    telemetry = start('traces = "otlp"\nprotocol = "grpc"\nexport_timeout = 0.5\n', tmp_path)
    assert telemetry.traces == ("otlp",)


def description(telemetry: Telemetry) -> str:
    text: str = telemetry.tracer_provider.sampler.get_description()
    return text


@pytest.mark.parametrize(
    ("written", "environ", "expected"),
    [
        # the sampler alone
        ('sampler = "${S:-always_on}"', {"OTEL_TRACES_SAMPLER": "always_off"}, "AlwaysOffSampler"),
        ('sampler = "always_on"', {"OTEL_TRACES_SAMPLER": "always_off"}, "AlwaysOnSampler"),
        # the ratio alone (it means parentbased_traceidratio)
        ('sampler_ratio = "${RATIO:-0.5}"', {}, "TraceIdRatioBased{0.5}"),
        ('sampler_ratio = "${RATIO:-0.5}"', {"OTEL_TRACES_SAMPLER_ARG": "0.25"}, "{0.25}"),
        ("sampler_ratio = 0.5", {"OTEL_TRACES_SAMPLER_ARG": "0.25"}, "{0.5}"),
        # both defaulted, both variables: the SDK reads the variables
        (
            'sampler = "${S:-always_on}"\nsampler_ratio = "${RATIO:-0.5}"',
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.125"},
            "TraceIdRatioBased{0.125}",
        ),
        # a written sampler, a defaulted ratio: the variable's ratio
        (
            'sampler = "traceidratio"\nsampler_ratio = "${RATIO:-0.5}"',
            {"OTEL_TRACES_SAMPLER_ARG": "0.125", "OTEL_TRACES_SAMPLER": "always_off"},
            "TraceIdRatioBased{0.125}",
        ),
        # a defaulted sampler, a written ratio: the variable's sampler, with that ratio
        (
            'sampler = "${S:-always_on}"\nsampler_ratio = 0.5',
            {"OTEL_TRACES_SAMPLER": "traceidratio"},
            "TraceIdRatioBased{0.5}",
        ),
        # ... unless the variable's sampler takes no ratio
        (
            'sampler = "${S:-traceidratio}"\nsampler_ratio = 0.5',
            {"OTEL_TRACES_SAMPLER": "always_off"},
            "AlwaysOffSampler",
        ),
    ],
)
def test_sampler(
    start: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    written: str,
    environ: dict[str, str],
    expected: str,
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert expected in description(start(written + "\n", tmp_path))


def test_a_bad_sampler_arg_names_the_variable(
    start: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "half")
    with pytest.raises(ValueError, match=r"^sampler_ratio: OTEL_TRACES_SAMPLER_ARG='half' is"):
        start('sampler_ratio = "${RATIO:-0.5}"\n', tmp_path)


def test_prometheus_address(start: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    port = free_port()
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    telemetry = start(
        'metrics = "prometheus"\nprometheus_port = "${PORT:-0}"\n'
        'prometheus_host = "${HOST:-localhost}"\n',
        tmp_path,
    )
    assert telemetry.prometheus_server is not None
    assert (telemetry.prometheus_server.host, telemetry.prometheus_server.port) == (
        "127.0.0.1",
        port,
    )


def test_resource_attributes_merge_key_by_key(
    start: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod,team=env,region=eu"
    )
    telemetry = start(
        "[telemetry.resource_attributes]\n"
        '"deployment.environment.name" = "${ENV:-dev}"\n'  # defaulted: the variable's
        'team = "payments"\n'  # written: the file's
        'owner = "${OWNER:-nobody}"\n',  # defaulted, not in the variable: the default
        tmp_path,
    )
    attributes = telemetry.resource.attributes
    assert attributes["deployment.environment.name"] == "prod"
    assert attributes["team"] == "payments"
    assert attributes["owner"] == "nobody"
    assert attributes["region"] == "eu"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ('"${SERVICE_NAME:-hello}"', "shop"),  # defaulted: the variable's
        ('"checkout"', "checkout"),  # written: the file's
    ],
)
def test_a_service_name_among_the_resource_attributes_against_otel_service_name(
    start: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, written: str, expected: str
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop")
    telemetry = start(f'[telemetry.resource_attributes]\n"service.name" = {written}\n', tmp_path)
    assert service(telemetry) == expected
