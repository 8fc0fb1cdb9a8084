"""The new observability options in a config file: hooks as import strings, several
request-id header names, stream switches, ``extra_fields``, ``[telemetry] logs``."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from asgikit.config import ConfigError, build, load_config
from asgikit.testing import request
from asgikit.types import Receive, Scope, Send

pytestmark = pytest.mark.anyio

SEEN: list[Any] = []


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def metric_attributes(scope: Scope) -> dict[str, Any]:
    SEEN.append(scope["path"])  # called for every request: metrics are not sampled
    return {"app.tier": "gold"}


def extra_fields(scope: Scope, exchange: Any) -> dict[str, Any]:
    return {"from.config": True}


async def test_hooks_and_lists_from_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "asgikit.toml"
    path.write_text(
        textwrap.dedent(
            """\
            app = "tests.test_observability_config:hello"
            [[middleware]]
            use = "request_id"
            header_name = ["x-request-id", "x-correlation-id"]
            [[middleware]]
            use = "access_log"
            extra_fields = "tests.test_observability_config:extra_fields"
            [[middleware]]
            use = "tracing"
            metric_attributes = "tests.test_observability_config:metric_attributes"
            streams_in_duration = true
            """
        ),
        encoding="utf-8",
    )
    SEEN.clear()
    app = build(path)
    structlog.contextvars.clear_contextvars()
    with capture_logs() as lines:
        response = await request(app, "GET", "/cart", headers={"x-correlation-id": "c-1"})
    assert response.header("x-request-id") == "c-1"
    [line] = lines
    assert line["from.config"] is True
    assert SEEN == ["/cart"]


def test_telemetry_logs_is_a_config_option(tmp_path: Path) -> None:
    path = tmp_path / "asgikit.toml"
    path.write_text(
        'app = "tests.test_observability_config:hello"\n[telemetry]\nlogs = "otlp"\n',
        encoding="utf-8",
    )
    assert load_config(path).telemetry == {"logs": "otlp"}
    path.write_text(
        'app = "tests.test_observability_config:hello"\n[telemetry]\nlogs = "loki"\n',
        encoding="utf-8",
    )
    with pytest.raises(Exception, match="logs"):
        load_config(path)


def test_logs_otlp_without_its_extra_fails_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http", None)
    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "asgikit.toml"
    path.write_text('app = "x:y"\n\n[telemetry]\nlogs = "otlp"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [issue.message for issue in caught.value.issues] == [
        "logs = 'otlp' needs the otlp extra: pip install 'asgikit[otlp]'"
    ]


@pytest.mark.parametrize(
    ("logging_table", "logs", "warned"),
    [
        ("configure = false", "console", True),
        ("configure = true", "console", False),
        ("configure = false", "none", False),
        ("", "console", False),
    ],
)
def test_logs_with_logging_left_to_the_app_is_warned_at_load(
    tmp_path: Path, logging_table: str, logs: str, warned: bool
) -> None:
    path = tmp_path / "asgikit.toml"
    path.write_text(
        f'app = "tests.test_observability_config:hello"\n[logging]\n{logging_table}\n'
        f'[telemetry]\nlogs = "{logs}"\n',
        encoding="utf-8",
    )
    messages = [warning.message for warning in load_config(path).warnings]
    assert any("to_collector" in message for message in messages) is warned
