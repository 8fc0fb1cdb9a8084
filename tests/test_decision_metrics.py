"""Decisions are telemetry: every answer asgikit makes itself is counted in the
``asgikit.decisions`` counter, by ``asgikit.decision`` and a bounded reason, whether or
not an observing middleware is outside (trusted host and the HTTPS redirect sit
outermost)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from asgikit.answers import (
    DECISION_FIELD,
    DECISIONS_METRIC,
    MAX_REASONS,
    REASON_FIELD,
    count_decisions_with,
    decide,
)
from asgikit.contract import enforce
from asgikit.middleware import (
    BodyLimitMiddleware,
    ConcurrencyLimitMiddleware,
    CORSMiddleware,
    HTTPSRedirectMiddleware,
    RateLimitMiddleware,
    TimeoutMiddleware,
    TrustedHostMiddleware,
)
from asgikit.testing import request
from asgikit.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.anyio


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    count_decisions_with(MeterProvider(metric_readers=[reader]))
    yield reader
    count_decisions_with(None)


def counted(reader: InMemoryMetricReader) -> dict[tuple[str, str | None], int]:
    data = reader.get_metrics_data()
    found: dict[tuple[str, str | None], int] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == DECISIONS_METRIC:
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        key = (attributes.pop(DECISION_FIELD), attributes.pop(REASON_FIELD, None))
                        assert attributes == {}  # nothing unbounded rides along
                        found[key] = point.value
    return found


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["path"] == "/slow":
        await anyio.sleep(5)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


APP = enforce(ok)
PREFLIGHT = {"origin": "https://evil.example", "access-control-request-method": "GET"}
CASES: dict[str, tuple[Any, dict[str, Any], tuple[str, str | None]]] = {
    "timed_out": (
        lambda: TimeoutMiddleware(APP, total=0.05),
        {"path": "/slow"},
        ("timed_out", "total"),
    ),
    "rate_limited": (
        lambda: RateLimitMiddleware(APP, rate="1/hour"),
        {"repeat": True},
        ("rate_limited", "default"),
    ),
    "cors_denied": (
        lambda: CORSMiddleware(APP, allow_origins=["https://ok.example"]),
        {"method": "OPTIONS", "headers": PREFLIGHT},
        ("cors_denied", None),  # the refusal's text names the origin: not an attribute
    ),
    "body_too_large": (
        lambda: BodyLimitMiddleware(APP, max_body_size=4),
        {"method": "POST", "body": b"0123456789", "headers": {"content-length": "10"}},
        ("body_too_large", None),
    ),
    "unsupported_encoding": (
        lambda: BodyLimitMiddleware(APP, decompress=True),
        {"method": "POST", "body": b"x", "headers": {"content-encoding": "rot13"}},
        ("unsupported_encoding", None),
    ),
    "host_refused": (
        lambda: TrustedHostMiddleware(APP, allowed_hosts=["shop.example"]),
        {"headers": {"host": "evil.example"}},
        ("host_refused", None),
    ),
    "www_redirect": (
        lambda: TrustedHostMiddleware(APP, allowed_hosts=["www.shop.example"]),
        {"headers": {"host": "shop.example"}},
        ("www_redirect", "307"),
    ),
    "https_redirect": (
        lambda: HTTPSRedirectMiddleware(APP),
        {"headers": {"host": "shop.example"}},
        ("https_redirect", "307"),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
async def test_every_answer_is_counted_with_its_reason(
    name: str, reader: InMemoryMetricReader
) -> None:
    factory, how, expected = CASES[name]
    app: ASGIApp = enforce(factory())  # outermost: no observer hands a holder down
    how = dict(how)
    if how.pop("repeat", False):
        await request(app, "GET", "/")
    response = await request(app, how.pop("method", "GET"), how.pop("path", "/"), **how)
    assert response.status >= 300
    found = counted(reader)
    [(decision, reason)] = found  # one series, counted once
    assert decision == expected[0] and found[decision, reason] == 1
    if expected[1] is not None:
        assert reason == expected[1]


async def test_a_shed_request_is_counted(reader: InMemoryMetricReader) -> None:
    release = anyio.Event()

    async def held(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()
        await ok(scope, receive, send)

    app = ConcurrencyLimitMiddleware(enforce(held), max_concurrency=1, queue_size=0)
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await request(app, "GET", "/")).status)

    async with anyio.create_task_group() as group:
        group.start_soon(one)
        await anyio.sleep(0.05)
        statuses.append((await request(app, "GET", "/")).status)
        release.set()
    assert sorted(statuses) == [200, 503]
    [(decision, reason)] = counted(reader)
    assert decision == "shed" and reason is not None


def test_reasons_are_bounded(reader: InMemoryMetricReader) -> None:
    for number in range(MAX_REASONS + 10):
        decide({}, "rate_limited", **{"rate_limit.rule": f"rule-{number}"})
    found = counted(reader)
    assert len(found) == MAX_REASONS + 1
    assert found[("rate_limited", "other")] == 10


def test_a_decision_without_fields_leaves_no_details(reader: InMemoryMetricReader) -> None:
    holder: dict[str, Any] = {}
    decide({"asgikit.decisions": holder}, "rate_limit_unavailable")
    assert holder == {DECISION_FIELD: "rate_limit_unavailable"}
    assert counted(reader) == {("rate_limit_unavailable", None): 1}


def test_free_text_fields_are_never_attributes(reader: InMemoryMetricReader) -> None:
    decide({}, "cors_denied", **{"cors.reason": "origin https://x.example not allowed"})
    decide({}, "cors_denied")
    assert counted(reader) == {("cors_denied", None): 2}


def test_count_decisions_with_checks_its_argument() -> None:
    with pytest.raises(TypeError, match=r"^meter_provider: expected a MeterProvider"):
        count_decisions_with("global")


def test_opentelemetry_loads_on_the_first_decision_through_the_global_provider() -> None:
    code = textwrap.dedent(
        """
        import sys
        import asgikit.middleware.cors, asgikit.answers as answers
        assert not [m for m in sys.modules if m.startswith("opentelemetry")], "loaded early"
        answers.decide({}, "shed", **{"concurrency.reason": "queue_full"})
        assert "opentelemetry.metrics" in sys.modules
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        answers.decide({}, "shed", **{"concurrency.reason": "queue_full"})
        [metric] = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
        [point] = metric.data.data_points
        print(metric.name, dict(point.attributes), point.value)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "asgikit.decisions {'asgikit.decision': 'shed', 'asgikit.decision.reason': 'queue_full'} 1"
    )
