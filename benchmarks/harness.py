"""In-process benchmark runner: interleaved rounds, figures as ratios to a baseline.

No server and no sockets. ``run_sync`` times plain callables; ``run_asgi`` drives ASGI
apps with a scripted ``receive`` and a ``send`` that only counts, inside one event loop.
Both interleave the cases round by round, so drift (thermal, frequency scaling, a noisy
neighbour) hits every case alike, and both report each case as a ratio to a baseline
measured in the same run. See benchmarks/README.md for the rules.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from asgikit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "BenchmarkError",
    "PassThrough",
    "Request",
    "Result",
    "added_cost",
    "bare_app",
    "report",
    "run_asgi",
    "run_sync",
]


class PassThrough:
    """The least a pure ASGI middleware can do: await the app (the floor every
    middleware is measured beside)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


# How long the first-call check waits for an app before calling it broken.
_CHECK_TIMEOUT = 10.0
# Calibration aims past min_time so that a round stays above it despite jitter.
_CALIBRATION_MARGIN = 1.2


class BenchmarkError(RuntimeError):
    """A case cannot be measured meaningfully (broken app, bad set-up)."""


@dataclass(frozen=True)
class Result:
    """One case's per-call times in microseconds, over ``rounds`` rounds of ``per_round`` calls."""

    case: str
    median_us: float
    p10_us: float
    p90_us: float
    ratio: float
    rounds: int
    per_round: int


def _default_headers() -> list[tuple[bytes, bytes]]:
    # What a browser-ish client sends; accept-encoding lets compression cases engage.
    return [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"asgikit-benchmarks/1"),
        (b"accept", b"*/*"),
        (b"accept-encoding", b"gzip, deflate, br, zstd"),
    ]


@dataclass
class Request:
    """The request every iteration of ``run_asgi`` replays."""

    method: str = "GET"
    path: str = "/"
    headers: list[tuple[bytes, bytes]] = field(default_factory=_default_headers)
    body_chunks: tuple[bytes, ...] = ()
    scope_type: str = "http"

    def scope(self) -> Scope:
        """Build an ASGI 3 ``http`` (or ``websocket``) scope; the query string is split off."""
        if self.scope_type not in ("http", "websocket"):
            raise ValueError(f"scope_type must be 'http' or 'websocket', not {self.scope_type!r}")
        raw_path, _, query = self.path.partition("?")
        scope: dict[str, Any] = {
            "type": self.scope_type,
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "http" if self.scope_type == "http" else "ws",
            "path": unquote(raw_path),
            "raw_path": raw_path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": list(self.headers),
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
        }
        if self.scope_type == "http":
            scope["method"] = self.method
        else:
            scope["subprotocols"] = []
        return scope

    def messages(self) -> tuple[tuple[Message, ...], Message]:
        """What ``receive`` returns, in order, then forever after (the disconnect)."""
        if self.scope_type == "websocket":
            return ({"type": "websocket.connect"},), {"type": "websocket.disconnect", "code": 1000}
        chunks = self.body_chunks or (b"",)
        last = len(chunks) - 1
        requests = tuple(
            {"type": "http.request", "body": chunk, "more_body": i < last}
            for i, chunk in enumerate(chunks)
        )
        return requests, {"type": "http.disconnect"}


_BARE_BODY = b"Hello, world!"
_BARE_LENGTH = str(len(_BARE_BODY)).encode()


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The smallest complete ASGI app: 200 text/plain "Hello, world!" with content-length."""
    if scope["type"] == "http":
        # A fresh headers list per response: some anchors (Starlette GZip) mutate it in place.
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", _BARE_LENGTH),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _BARE_BODY})
    elif scope["type"] == "lifespan":
        # Answered properly so uvicorn does not log "lifespan unsupported" in e2e runs.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    else:
        await send({"type": "websocket.close", "code": 1000})


# The measuring plan, written once as a generator so the sync and the async drivers share it
# exactly: it yields (case, calls) to time, receives the elapsed nanoseconds, and returns the
# calls per round and the per-call samples. Everything it does runs outside the timed region.
_Plan = Generator[tuple[str, int], int, tuple[dict[str, int], dict[str, list[float]]]]


def _plan(names: Sequence[str], *, rounds: int, min_time: float, seed: int) -> _Plan:
    min_time_ns = math.ceil(min_time * 1e9)
    per_round: dict[str, int] = {}
    for name in names:
        yield name, 1  # warm-up: first-call costs (lazy imports, caches) are not the figure
        calls = 1
        while (elapsed := (yield name, calls)) < min_time_ns:
            wanted = math.ceil(calls * min_time_ns * _CALIBRATION_MARGIN / max(elapsed, 1))
            calls = max(2 * calls, min(100 * calls, wanted))
        per_round[name] = calls

    samples: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(seed)
    order = list(names)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            gc.collect()  # every case starts from a clean heap; no collection while timed
            elapsed = yield name, per_round[name]
            samples[name].append(elapsed / per_round[name])
    return per_round, samples


def _check_args(cases: Mapping[str, object], baseline: str, rounds: int, min_time: float) -> None:
    if not cases:
        raise ValueError("no cases to run")
    if baseline not in cases:
        raise ValueError(f"baseline {baseline!r} is not one of the cases {sorted(cases)}")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    if not min_time > 0:
        raise ValueError(f"min_time must be positive, not {min_time}")


def _percentile(ordered: Sequence[float], q: float) -> float:
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _results(
    names: Sequence[str],
    baseline: str,
    rounds: int,
    per_round: Mapping[str, int],
    samples: Mapping[str, list[float]],
) -> list[Result]:
    base = statistics.median(samples[baseline])
    results = []
    for name in names:
        ordered = sorted(samples[name])
        median = statistics.median(ordered)
        results.append(
            Result(
                case=name,
                median_us=median / 1000,
                p10_us=_percentile(ordered, 0.1) / 1000,
                p90_us=_percentile(ordered, 0.9) / 1000,
                ratio=median / base if base else math.nan,
                rounds=rounds,
                per_round=per_round[name],
            )
        )
    return results


def _time_calls(fn: Callable[[], object], calls: int) -> int:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in itertools.repeat(None, calls):
            fn()
        return time.perf_counter_ns() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def run_sync(
    cases: Mapping[str, Callable[[], object]],
    *,
    baseline: str,
    rounds: int = 15,
    min_time: float = 0.05,
    seed: int = 0,
) -> list[Result]:
    """Time each callable, interleaved over ``rounds`` rounds; results in ``cases`` order.

    Each case's calls per round are calibrated so a round takes at least ``min_time``
    seconds; the order of the cases is shuffled every round (seeded by ``seed``).
    """
    _check_args(cases, baseline, rounds, min_time)
    names = list(cases)
    plan = _plan(names, rounds=rounds, min_time=min_time, seed=seed)
    try:
        name, calls = next(plan)
        while True:
            name, calls = plan.send(_time_calls(cases[name], calls))
    except StopIteration as done:
        per_round, samples = done.value
    return _results(names, baseline, rounds, per_round, samples)


class _ScriptedReceive:
    """``receive`` for one request: the scripted messages, then the final one forever."""

    __slots__ = ("_final", "_pending")

    def __init__(self, messages: Iterator[Message], final: Message) -> None:
        self._pending = messages
        self._final = final

    async def __call__(self) -> Message:
        # A copy, so an app that edits a message cannot change the next iteration's input.
        return {**next(self._pending, self._final)}


async def _check_responds(name: str, app: ASGIApp, request: Request) -> None:
    """Call ``app`` once and make sure it completed a response; raise BenchmarkError if not."""
    messages, final = request.messages()
    sent: list[str] = []
    completed = False

    async def send(message: Message) -> None:
        nonlocal completed
        sent.append(message["type"])
        # pathsend is the other way to end a body (a file sent by the server).
        if message["type"] == "http.response.pathsend" or (
            message["type"] == "http.response.body" and not message.get("more_body", False)
        ):
            completed = True

    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            await app(request.scope(), _ScriptedReceive(iter(messages), final), send)
    except TimeoutError:
        raise BenchmarkError(
            f"case {name!r} did not return within {_CHECK_TIMEOUT:g} s on its first call "
            f"(sent {sent or 'nothing'}); a benchmark of a broken app measures nothing"
        ) from None
    except Exception as exc:
        exc.add_note(f"raised by benchmark case {name!r} on its first call")
        raise
    if request.scope_type == "http":
        ok = "http.response.start" in sent and completed
    else:
        ok = bool(sent)
    if not ok:
        raise BenchmarkError(
            f"case {name!r} did not complete a response on its first call: it sent "
            f"{sent or 'nothing'}, expected 'http.response.start' and a final "
            "'http.response.body' (more_body false); a benchmark of a broken app measures nothing"
        )


async def _time_app(app: ASGIApp, request: Request, calls: int) -> int:
    scope = request.scope()
    messages, final = request.messages()
    sent = 0

    async def send(message: Message) -> None:
        nonlocal sent
        sent += 1

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in itertools.repeat(None, calls):
            await app({**scope}, _ScriptedReceive(iter(messages), final), send)
        elapsed = time.perf_counter_ns() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    if sent < calls:
        raise BenchmarkError(
            f"an app sent {sent} messages over {calls} calls: it stopped responding"
        )
    return elapsed


async def _run_asgi(
    apps: Mapping[str, ASGIApp],
    baseline: str,
    request: Request,
    rounds: int,
    min_time: float,
    seed: int,
) -> list[Result]:
    for name, app in apps.items():
        await _check_responds(name, app, request)
    names = list(apps)
    plan = _plan(names, rounds=rounds, min_time=min_time, seed=seed)
    try:
        name, calls = next(plan)
        while True:
            name, calls = plan.send(await _time_app(apps[name], request, calls))
    except StopIteration as done:
        per_round, samples = done.value
    return _results(names, baseline, rounds, per_round, samples)


def run_asgi(
    apps: Mapping[str, ASGIApp],
    *,
    baseline: str,
    request: Request | None = None,
    rounds: int = 15,
    min_time: float = 0.05,
    seed: int = 0,
    use_uvloop: bool = False,
) -> list[Result]:
    """Time one request through each ASGI app, interleaved, inside a single event loop.

    ``request`` defaults to ``Request()`` (GET /). Every app is first called once and must
    complete a response, or ``BenchmarkError`` is raised. Results come in ``apps`` order.
    """
    _check_args(apps, baseline, rounds, min_time)
    request = Request() if request is None else request
    loop_factory = None
    if use_uvloop:
        try:
            import uvloop
        except ImportError as exc:
            raise BenchmarkError("use_uvloop=True but uvloop is not installed") from exc
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_run_asgi(apps, baseline, request, rounds, min_time, seed))


def _us(value: float) -> str:
    if value < 10:
        return f"{value:.3f}"
    if value < 100:
        return f"{value:.2f}"
    return f"{value:.1f}"


def _cell(text: str) -> str:
    return text.replace("|", r"\|")


def environment() -> str:
    """Python version, implementation, platform and CPU count, for a report's context line."""
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}) "
        f"on {platform.platform(terse=True)}, {os.cpu_count()} CPUs"
    )


def added_cost(results: Sequence[Result], case: str, bare: str, versus: str | None = None) -> float:
    """*case*'s added per-call cost over the *bare* case, in µs; or, given *versus*, that
    cost as a ratio to *versus*'s added cost (the figure the goals are written in)."""
    by_case = {r.case: r.median_us for r in results}
    cost = by_case[case] - by_case[bare]
    return cost if versus is None else cost / (by_case[versus] - by_case[bare])


def report(results: Sequence[Result], title: str) -> str:
    """A markdown table of ``results`` plus one line of context, ready to paste into docs."""
    # The baseline's ratio is its median divided by itself: exactly 1.0.
    baseline = next((r.case for r in results if r.ratio == 1.0), None)
    lines = [
        f"### {title}",
        "",
        "| case | median µs | p10-p90 µs | ratio to baseline |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in results:
        ratio = "1.00x (baseline)" if r.case == baseline else f"{r.ratio:.2f}x"
        spread = f"{_us(r.p10_us)}-{_us(r.p90_us)}"
        lines.append(f"| {_cell(r.case)} | {_us(r.median_us)} | {spread} | {ratio} |")
    rounds = results[0].rounds if results else 0
    lines += [
        "",
        f"_{environment()}; one in-process run, {rounds} round{'s' if rounds != 1 else ''} "
        "interleaving the cases "
        "(round-robin, order shuffled per round); per-call time = round time / calls per "
        "round; median and p10-p90 over rounds._",
    ]
    return "\n".join(lines)
