"""The W3C trace-context test suite's cases, ported: what the app's span and its calls get.

Source: https://github.com/w3c/trace-context, ``test/test.py`` (``TraceContextTest`` and
``AdvancedTest``, strict level 2), as of 2026-06-30 (the widened tracestate key grammar).
tests/e2e/test_trace_context_harness.py runs that harness itself, unchanged, over HTTP.
The suite sends a request to a service and reads the ``traceparent``/``tracestate`` of
the callback the service makes; here the app injects
the current context into an outgoing carrier with the global propagator, as an HTTP
client instrumentation would, and each case checks that carrier and the trace id of the
span the app runs in.

ASGI servers hand header names over lowercased, so the suite's mixed-case header name
cases arrive as the lowercase name (a case below covers it).

The same cases run through opentelemetry-instrumentation-asgi's middleware: it fails
``traceparent_duplicated`` (it reads the first of two ``traceparent`` fields, where the
specification requires a new trace), and the ``tracestate`` cases of the widened key
grammar (the SDK's parser still applies the older one).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.propagate import inject

from asgikit.contract import enforce
from asgikit.testing import request
from asgikit.types import ASGIApp, Receive, Scope, Send
from tests.middleware.test_tracing import Telemetry

pytestmark = pytest.mark.anyio

TRACE = "12345678901234567890123456789012"
PARENT = "1234567890123456"
VALID = f"00-{TRACE}-{PARENT}-01"
UNSAMPLED = f"00-{TRACE}-{PARENT}-00"
OUTGOING = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# The suite's incoming ids, none of which a new trace may reuse.
SENT_IDS = {TRACE, "12345678901234567890123456789011", "0" * 32}

_LCALPHA = "".join(map(chr, range(0x61, 0x7A + 1)))
KEY = _LCALPHA + "0123456789" + "_-*/"
VENDOR_KEY = KEY + "@a-z0-9_-*/"
VALUE = "".join(
    [
        "".join(map(chr, range(0x20, 0x2B + 1))),
        "".join(map(chr, range(0x2D, 0x3C + 1))),
        "".join(map(chr, range(0x3E, 0x7E + 1))),
    ]
)
MEMBERS_1_30 = [
    ",".join(f"bar{n:02d}={n:02d}" for n in range(start, start + 10)) for start in (1, 11, 21)
]


@dataclass(frozen=True)
class Case:
    """One request of the suite and what the app's context must be.

    Attributes:
        id: The suite's test name (without ``test_``), with a variant suffix.
        headers: The request's trace headers, in order.
        trace: ``inherit`` (the app's span continues trace ``TRACE``) or ``new``.
        tracestate: The exact ``tracestate`` an outgoing call carries, None for none.
    """

    id: str
    headers: tuple[tuple[str, str], ...]
    trace: Literal["inherit", "new"]
    tracestate: str | None = None


def _tp(value: str) -> tuple[tuple[str, str], ...]:
    return (("traceparent", value),)


def _ts(*values: str, parent: str = UNSAMPLED) -> tuple[tuple[str, str], ...]:
    return (("traceparent", parent), *(("tracestate", value) for value in values))


def _new(name: str, *values: str) -> list[Case]:
    return [Case(f"{name}[{i}]", _tp(value), "new") for i, value in enumerate(values)]


def _inherit(name: str, *values: str) -> list[Case]:
    return [Case(f"{name}[{i}]", _tp(value), "inherit") for i, value in enumerate(values)]


def _discarded(name: str, *headers: tuple[str, ...]) -> list[Case]:
    return [Case(f"{name}[{i}]", _ts(*values), "inherit") for i, values in enumerate(headers)]


def _tail(value: str) -> str:
    return f"-{TRACE}-{PARENT}-01{value}"


CASES: list[Case] = [
    Case("both_traceparent_and_tracestate_missing", (), "new"),
    Case("traceparent_included_tracestate_missing", _tp(VALID), "inherit"),
    Case(
        "traceparent_duplicated",
        (
            ("traceparent", "00-12345678901234567890123456789011-1234567890123456-01"),
            ("traceparent", VALID),
        ),
        "new",
    ),
    Case("traceparent_header_name[0]", (("trace-parent", VALID),), "new"),
    Case("traceparent_header_name[1]", (("trace.parent", VALID),), "new"),
    # TraceParent / TrAcEpArEnT / TRACEPARENT: the server lowercases the name.
    Case("traceparent_header_name_valid_casing", _tp(VALID), "inherit"),
    *_new("traceparent_version_0x00", VALID + ".", VALID + "-what-the-future-will-be-like"),
    *_inherit(
        "traceparent_version_0xcc",
        "cc" + _tail(""),
        "cc" + _tail("-what-the-future-will-be-like"),
    ),
    *_new("traceparent_version_0xcc_bad", "cc" + _tail(".what-the-future-will-be-like")),
    *_new("traceparent_version_0xff", "ff" + _tail("")),
    *_new("traceparent_version_illegal_characters", ".0" + _tail(""), "0." + _tail("")),
    *_new("traceparent_version_too_long", "000" + _tail(""), "0000" + _tail("")),
    *_new("traceparent_version_too_short", "0" + _tail("")),
    *_new("traceparent_trace_id_all_zero", f"00-{'0' * 32}-{PARENT}-01"),
    *_new(
        "traceparent_trace_id_illegal_characters",
        f"00-.{TRACE[1:]}-{PARENT}-01",
        f"00-{TRACE[:-1]}.-{PARENT}-01",
    ),
    *_new("traceparent_trace_id_too_long", f"00-{TRACE}3-{PARENT}-01"),
    *_new("traceparent_trace_id_too_short", f"00-{TRACE[:-1]}-{PARENT}-01"),
    *_new("traceparent_parent_id_all_zero", f"00-{TRACE}-{'0' * 16}-01"),
    *_new(
        "traceparent_parent_id_illegal_characters",
        f"00-{TRACE}-.{PARENT[1:]}-01",
        f"00-{TRACE}-{PARENT[:-1]}.-01",
    ),
    *_new("traceparent_parent_id_too_long", f"00-{TRACE}-{PARENT}7-01"),
    *_new("traceparent_parent_id_too_short", f"00-{TRACE}-{PARENT[:-1]}-01"),
    *_new(
        "traceparent_trace_flags_illegal_characters",
        f"00-{TRACE}-{PARENT}-.0",
        f"00-{TRACE}-{PARENT}-0.",
    ),
    *_new("traceparent_trace_flags_too_long", f"00-{TRACE}-{PARENT}-001"),
    *_new("traceparent_trace_flags_too_short", f"00-{TRACE}-{PARENT}-1"),
    *_inherit(
        "traceparent_ows_handling",
        " " + VALID,
        "\t" + VALID,
        VALID + " ",
        VALID + "\t",
        "\t " + VALID + " \t",
    ),
    Case("tracestate_included_traceparent_missing[0]", (("tracestate", "foo=1"),), "new"),
    Case("tracestate_included_traceparent_missing[1]", (("tracestate", "foo=1,bar=2"),), "new"),
    Case("tracestate_included_traceparent_included", _ts("foo=1,bar=2"), "inherit", "foo=1,bar=2"),
    Case(
        "tracestate_header_name[0]",
        (("traceparent", UNSAMPLED), ("trace-state", "foo=1")),
        "inherit",
    ),
    Case(
        "tracestate_header_name[1]",
        (("traceparent", UNSAMPLED), ("trace.state", "foo=1")),
        "inherit",
    ),
    Case("tracestate_header_name_valid_casing", _ts("foo=1"), "inherit", "foo=1"),
    Case("tracestate_empty_header[0]", _ts(""), "inherit"),
    Case("tracestate_empty_header[1]", _ts("foo=1", ""), "inherit", "foo=1"),
    Case("tracestate_empty_header[2]", _ts("", "foo=1"), "inherit", "foo=1"),
    Case(
        "tracestate_multiple_headers_different_keys",
        _ts("foo=1,bar=2", "rojo=1,congo=2", "baz=3"),
        "inherit",
        "foo=1,bar=2,rojo=1,congo=2,baz=3",
    ),
    # Kept since the harness of 2026-06-30, as-is or with one of the two: the first here.
    *[
        Case(f"tracestate_duplicated_keys[{i}]", _ts(*values), "inherit", "foo=1")
        for i, values in enumerate(
            [("foo=1,foo=1",), ("foo=1,foo=2",), ("foo=1", "foo=1"), ("foo=1", "foo=2")]
        )
    ],
    Case(
        "tracestate_all_allowed_characters[0]",
        _ts(f"{KEY}={VALUE}"),
        "inherit",
        f"{KEY}={VALUE}",
    ),
    Case(
        "tracestate_all_allowed_characters[1]",
        _ts(f"{VENDOR_KEY}={VALUE}"),
        "inherit",
        f"{VENDOR_KEY}={VALUE}",
    ),
    Case(
        "tracestate_ows_handling[0]",
        _ts("foo=1 \t , \t bar=2, \t baz=3"),
        "inherit",
        "foo=1,bar=2,baz=3",
    ),
    Case(
        "tracestate_ows_handling[1]",
        _ts("foo=1\t \t,\t \tbar=2,\t \tbaz=3"),
        "inherit",
        "foo=1,bar=2,baz=3",
    ),
    *[
        Case(f"tracestate_ows_handling[{i}]", _ts(value), "inherit", "foo=1")
        for i, value in enumerate([" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"], 2)
    ],
    *_discarded("tracestate_key_illegal_characters", ("foo =1",), ("FOO=1",), ("foo.bar=1",)),
    # The key grammar since the harness of 2026-06-30: "@" anywhere but first.
    *[
        Case(f"tracestate_key_with_at_signs[{i}]", _ts(value), "inherit", value)
        for i, value in enumerate(["foo@=1,bar=2", "foo@@bar=1,bar=2", "foo@bar@baz=1,bar=2"])
    ],
    *_discarded("tracestate_key_starting_with_an_at_sign", ("@foo=1,bar=2",)),
    Case(
        "tracestate_member_count_limit[32]",
        _ts(*MEMBERS_1_30, "bar31=31,bar32=32"),
        "inherit",
        ",".join([*MEMBERS_1_30, "bar31=31,bar32=32"]),
    ),
    *_discarded("tracestate_member_count_limit[33]", (*MEMBERS_1_30, "bar31=31,bar32=32,bar33=33")),
    Case(
        "tracestate_key_length_limit[256]",
        _ts("foo=1", "z" * 256 + "=1"),
        "inherit",
        "foo=1," + "z" * 256 + "=1",
    ),
    Case(
        "tracestate_key_length_limit[241@14]",
        _ts("foo=1", "t" * 241 + "@" + "v" * 14 + "=1"),
        "inherit",
        "foo=1," + "t" * 241 + "@" + "v" * 14 + "=1",
    ),
    *[
        Case(
            f"tracestate_key_length_limit[{key[:3]}]",
            _ts("foo=1", key + "=1"),
            "inherit",
            f"foo=1,{key}=1",
        )
        for key in ("t" * 242 + "@v", "t@" + "v" * 15)  # 256 characters at most, in all
    ],
    *_discarded("tracestate_key_length_limit_exceeded", ("foo=1", "z" * 257 + "=1")),
    *_discarded("tracestate_value_illegal_characters", ("foo=bar=baz",), ("foo=,bar=3",)),
]


@dataclass
class Seen:
    """What the app saw: its span's trace id and span id, and its outgoing carriers."""

    trace_id: str = ""
    span_id: str = ""
    carriers: list[dict[str, str]] | None = None


def calling_app(seen: Seen, calls: int, tracer: Any) -> ASGIApp:
    """An app that makes *calls* outgoing calls, each in its own CLIENT span."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        context = trace.get_current_span().get_span_context()
        seen.trace_id = f"{context.trace_id:032x}"
        seen.span_id = f"{context.span_id:016x}"
        seen.carriers = []
        for _ in range(calls):
            with tracer.start_as_current_span("call", kind=trace.SpanKind.CLIENT):
                carrier: dict[str, str] = {}
                inject(carrier)
                seen.carriers.append(carrier)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


Wrapper = Callable[[ASGIApp, Telemetry], ASGIApp]


def ours(app: ASGIApp, telemetry: Telemetry) -> ASGIApp:
    return telemetry.wrap(app)


def contrib(app: ASGIApp, telemetry: Telemetry) -> ASGIApp:
    middleware: Any = OpenTelemetryMiddleware(
        app,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=NoOpMeterProvider(),
        exclude_spans=["receive", "send"],
    )
    return enforce(middleware)


async def run(wrapper: Wrapper, headers: tuple[tuple[str, str], ...], calls: int = 1) -> Seen:
    telemetry = Telemetry()
    seen = Seen()
    tracer = telemetry.tracer_provider.get_tracer("client")
    await request(wrapper(calling_app(seen, calls, tracer), telemetry), headers=list(headers))
    return seen


def problems(case: Case, seen: Seen) -> list[str]:
    """How *seen* departs from what *case* expects (empty: it passes)."""
    found = []
    assert seen.carriers is not None
    [carrier] = seen.carriers
    match = OUTGOING.match(carrier.get("traceparent", ""))
    if match is None:
        return [f"no valid outgoing traceparent: {carrier!r}"]
    if match.group(2) != seen.trace_id:
        found.append("the outgoing trace id is not the app's span's")
    if case.trace == "inherit":
        if seen.trace_id != TRACE:
            found.append(f"trace {seen.trace_id} does not continue {TRACE}")
        if match.group(3) == PARENT:
            found.append("the outgoing parent id is the incoming one")
    elif seen.trace_id in SENT_IDS:
        found.append(f"trace {seen.trace_id} reuses an incoming id (expected a new trace)")
    if carrier.get("tracestate") != case.tracestate:
        found.append(f"tracestate {carrier.get('tracestate')!r} != {case.tracestate!r}")
    return found


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_trace_context_case(case: Case) -> None:
    seen = await run(ours, case.headers)
    assert problems(case, seen) == []


async def test_multiple_requests_with_valid_traceparent() -> None:
    seen = await run(ours, _tp(VALID), calls=3)
    assert seen.carriers is not None
    parents = {OUTGOING.match(c["traceparent"]).group(3) for c in seen.carriers}  # type: ignore[union-attr]
    traces = {OUTGOING.match(c["traceparent"]).group(2) for c in seen.carriers}  # type: ignore[union-attr]
    assert traces == {TRACE}
    assert len(parents) == 3


@pytest.mark.parametrize("headers", [(), _tp(f"00-{'0' * 32}-{PARENT}-01")])
async def test_multiple_requests_without_or_with_illegal_traceparent(
    headers: tuple[tuple[str, str], ...],
) -> None:
    seen = await run(ours, headers, calls=3)
    assert seen.carriers is not None
    ids = [OUTGOING.match(c["traceparent"]) for c in seen.carriers]
    assert all(match is not None for match in ids)
    assert len({m.group(3) for m in ids if m}) == 3
    assert not {m.group(2) for m in ids if m} & SENT_IDS


async def test_the_contrib_middleware_fails_duplicated_traceparent_and_the_new_key_grammar() -> (
    None
):
    failing = [case.id for case in CASES if problems(case, await run(contrib, case.headers))]
    assert failing == [
        "traceparent_duplicated",
        *(f"tracestate_duplicated_keys[{i}]" for i in range(4)),
        *(f"tracestate_key_with_at_signs[{i}]" for i in range(3)),
        "tracestate_key_length_limit[ttt]",
        "tracestate_key_length_limit[t@v]",
    ]


def test_a_repaired_tracestate_is_exported_and_edited_like_the_sdks() -> None:
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import (
        _encode_trace_state,
    )

    from asgikit.middleware.tracing.tracestate import parse

    state = parse(["x@y@z=1, b=2", "b=3"])  # a key twice: the first is kept
    assert state is not None
    assert _encode_trace_state(state) == "x@y@z=1,b=2"  # what an OTLP exporter sends
    assert dict(state.items()) == {"x@y@z": "1", "b": "2"}
    assert list(state) == list(state.keys()) == ["x@y@z", "b"]
    assert list(state.values()) == ["1", "2"]
    assert state["b"] == "2" and "b" in state and len(state) == 2
    assert state.add("new", "4").to_header() == "new=4,x@y@z=1,b=2"
    assert state.add("b", "4") is state  # an existing key: add changes nothing
    assert state.add("Bad", "4") is state  # not a key of the grammar
    assert state.update("b", "9").to_header() == "b=9,x@y@z=1"
    assert state.update("missing", "9") is state
    assert state.delete("b").to_header() == "x@y@z=1"
    assert state.delete("missing") is state
    assert repr(state) == "W3CTraceState({'x@y@z': '1', 'b': '2'})"
    full = parse([",".join(f"k{n}=v" for n in range(32))])
    assert full is not None and full.add("more", "v") is full  # 32 members at most
    assert parse(["@bad=1"]) is None
    assert parse([",".join(f"k{n}=v" for n in range(33))]) is None
    assert parse([" , "]) is None
