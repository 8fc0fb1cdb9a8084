"""CompressionMiddleware beside Starlette's GZip, brotli-asgi and starlette-compress.

python -m benchmarks.bench_compression [--rounds 15] [--min-time 0.05] [--only NAME ...]

Every middleware runs at the same settings: gzip level 6, brotli quality 4 (brotli-asgi
in its generic mode, as the others), zstd level 3, minimum size 500 bytes. Each case is
one request for a JSON body, with an ``Accept-Encoding`` that names one coding, so every
row of a table does the same compression.

The physical limit is in the same run: an app that compresses its own body with the raw
library call (zstd on a reused context, zlib with its window fitted to the body, a brotli
encoder) and sends it. It is the baseline: a ratio of 1.03x means the middleware costs 3%
more than the compressor call itself, everything else included. The same raw calls alone,
without ASGI, are timed too (``run_sync``) for scale.

Litestar's compression middleware is not among the anchors: it runs only inside a Litestar
app, and Litestar is not a dev dependency.

Scenarios: 64 KiB and 1 KiB one-shot bodies, a 10-chunk stream (an event stream: every
middleware flushes each chunk, so each is decodable on arrival), a 13-byte body below the
minimum size (beside the bare app: the cost of a response the middleware leaves alone),
and ``threads``: large bodies compressed inline or in a worker thread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import brotli  # type: ignore[import-untyped]
import zstandard
from brotli_asgi import BrotliMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette_compress import CompressMiddleware

from asgikit.middleware.compression import CompressionMiddleware
from asgikit.types import ASGIApp, Message, Receive, Scope, Send
from benchmarks.harness import (
    BenchmarkError,
    Request,
    added_cost,
    bare_app,
    report,
    run_asgi,
    run_sync,
)

__all__ = ["SCENARIOS", "main", "payload"]

GZIP_LEVEL = 6
BROTLI_QUALITY = 4
ZSTD_LEVEL = 3
MINIMUM = 500
OURS = "asgikit CompressionMiddleware"
BARE = "bare app"
Headers = list[tuple[bytes, bytes]]


def payload(size: int, seed: int = 5) -> bytes:
    """``size`` bytes of JSON-like API output: repetitive keys, varied values."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "lambda"]
    records: list[bytes] = []
    while sum(map(len, records)) < size:
        record = {
            "id": rng.randrange(10**6),
            "name": f"{rng.choice(words)} {rng.choice(words)}",
            "email": f"user{rng.randrange(10**5)}@example.com",
            "active": rng.random() < 0.5,
            "score": round(rng.random() * 1000, 2),
            "tags": rng.sample(words, 3),
        }
        records.append(json.dumps(record).encode())
    return b"[" + b",".join(records)[: size - 2] + b"]"


def _request(accept: bytes) -> Request:
    return Request(
        headers=[
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"asgikit-benchmarks/1"),
            (b"accept", b"*/*"),
            (b"accept-encoding", accept),
        ]
    )


def body_app(body: bytes, content_type: bytes = b"application/json", chunks: int = 1) -> ASGIApp:
    """An app sending ``body`` in one message (with Content-Length) or in ``chunks``."""
    length = b"%d" % len(body)
    size = -(-len(body) // chunks)
    pieces = [body[i : i + size] for i in range(0, len(body), size)]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # A fresh header list per response: Starlette's GZip and brotli-asgi edit it in place.
        if chunks == 1:
            headers = [(b"content-type", content_type), (b"content-length", length)]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        headers = [(b"content-type", content_type)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


@dataclass(frozen=True)
class Raw:
    """The raw library calls for one coding: one-shot, and a streaming encoder factory."""

    token: bytes
    label: str
    oneshot: Callable[[bytes], bytes]
    # () -> (compress and flush one chunk, finish)
    stream: Callable[[], tuple[Callable[[bytes], bytes], Callable[[], bytes]]]


def _gzip_stream() -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    obj = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return (lambda data: obj.compress(data) + obj.flush(zlib.Z_SYNC_FLUSH)), obj.flush


def _brotli_stream() -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    obj = brotli.Compressor(quality=BROTLI_QUALITY)
    return (lambda data: obj.process(data) + obj.flush()), obj.finish


_ZSTD_CONTEXT = zstandard.ZstdCompressor(level=ZSTD_LEVEL)


def _zstd_stream() -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    obj = _ZSTD_CONTEXT.compressobj()
    block = zstandard.COMPRESSOBJ_FLUSH_BLOCK
    return (lambda data: obj.compress(data) + obj.flush(block)), obj.flush


def _fitted_gzip(data: bytes) -> bytes:
    return zlib.compress(data, GZIP_LEVEL, 16 + max(10, min(15, (len(data) + 261).bit_length())))


def _brotli_oneshot(data: bytes) -> bytes:
    obj = brotli.Compressor(quality=BROTLI_QUALITY)
    return obj.process(data) + obj.finish()  # type: ignore[no-any-return]


RAW = {
    "gzip": Raw(b"gzip", "zlib.compress, window fitted to the body", _fitted_gzip, _gzip_stream),
    "br": Raw(b"br", "brotli.Compressor process + finish", _brotli_oneshot, _brotli_stream),
    "zstd": Raw(b"zstd", "zstandard, reused context", _ZSTD_CONTEXT.compress, _zstd_stream),
}


def raw_app(raw: Raw, body: bytes, content_type: bytes, chunks: int) -> ASGIApp:
    """The physical limit: the app compresses its own body with the raw library call."""
    size = -(-len(body) // chunks)
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    encoding = (b"content-encoding", raw.token)
    vary = (b"vary", b"Accept-Encoding")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if chunks == 1:
            out = raw.oneshot(body)
            headers = [
                (b"content-type", content_type),
                encoding,
                (b"content-length", b"%d" % len(out)),
                vary,
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": out})
            return
        compress, finish = raw.stream()
        headers = [(b"content-type", content_type), encoding, vary]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in pieces:
            await send({"type": "http.response.body", "body": compress(piece), "more_body": True})
        await send({"type": "http.response.body", "body": finish()})

    return app


FLOOR = "floor: the least middleware doing it"


async def _nothing() -> None:
    return None


async def _both(send: Send, first: Message, second: Message) -> None:
    await send(first)
    await send(second)


class FloorMiddleware:
    """The least any pure ASGI middleware does here, with none of the checks: find
    ``Accept-Encoding`` (taken as accepting ``raw``'s coding, not parsed), hold the start,
    then either pass a body under ``minimum`` bytes on (by its ``Content-Length``) or
    compress the one body message with the raw call and send a copy of the start with
    the encoding fields. No negotiation, content types, status or ``Vary`` merging: a
    cost no real middleware can go under."""

    def __init__(self, app: ASGIApp, raw: Raw, minimum: int = MINIMUM) -> None:
        self.app = app
        self.compress = raw.oneshot
        self.encoding = (b"content-encoding", raw.token)
        self.minimum = minimum

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        accept = None
        for name, value in scope["headers"]:
            if name == b"accept-encoding":
                accept = value
        start: Message | None = None
        passing = False

        # A plain function: no coroutine for a message passed on or held back.
        def send_compressed(message: Message) -> Awaitable[None]:
            nonlocal start, passing
            if passing:
                return send(message)
            if start is None:
                for name, value in message.get("headers", ()):
                    if name == b"content-length" and int(value) < self.minimum:
                        passing = True
                        return send(message)
                start = message
                return _nothing()
            body = message.get("body", b"")
            if accept is None or len(body) < self.minimum:
                return _both(send, start, message)
            out = self.compress(body)
            headers = [f for f in start["headers"] if f[0] != b"content-length"]
            headers += [(b"vary", b"Accept-Encoding"), self.encoding]
            headers.append((b"content-length", b"%d" % len(out)))
            return _both(send, {**start, "headers": headers}, {**message, "body": out})

        await self.app(scope, receive, send_compressed)


def anchors(app: ASGIApp, coding: str, streaming: bool) -> dict[str, ASGIApp]:
    """The anchors that speak ``coding``, at the benchmark's settings."""
    found: dict[str, ASGIApp] = {}
    if coding == "gzip":
        # Starlette leaves text/event-stream alone by default; the stream case needs it on.
        excluded = ("image/png",) if streaming else ("text/event-stream",)
        found["Starlette GZipMiddleware"] = GZipMiddleware(
            app, minimum_size=MINIMUM, compresslevel=GZIP_LEVEL, exclude_content_types=excluded
        )
    if coding == "br":
        found["brotli-asgi"] = BrotliMiddleware(
            app, quality=BROTLI_QUALITY, mode="generic", minimum_size=MINIMUM
        )
    found["starlette-compress"] = CompressMiddleware(
        app,
        minimum_size=MINIMUM,
        zstd_level=ZSTD_LEVEL,
        brotli_quality=BROTLI_QUALITY,
        gzip_level=GZIP_LEVEL,
    )
    return found


def ours(app: ASGIApp, **options: Any) -> CompressionMiddleware:
    return CompressionMiddleware(
        app,
        minimum_size=MINIMUM,
        gzip_level=GZIP_LEVEL,
        brotli_quality=BROTLI_QUALITY,
        zstd_level=ZSTD_LEVEL,
        **options,
    )


_DECODERS: dict[bytes, Callable[[bytes], bytes]] = {
    b"gzip": lambda data: zlib.decompress(data, 47),
    b"br": brotli.decompress,
    b"zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
}


def check_output(apps: dict[str, ASGIApp], request: Request, coding: bytes, body: bytes) -> None:
    """Every case must really send ``body`` in ``coding``: a fast no-op measures nothing."""

    async def one(name: str, app: ASGIApp) -> None:
        messages, final = request.messages()
        pending = iter(messages)
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return dict(next(pending, final))

        async def send(message: Any) -> None:
            sent.append(dict(message))

        await app(request.scope(), receive, send)
        headers = dict(sent[0].get("headers", []))
        raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        got = headers.get(b"content-encoding", b"identity")
        decoded = raw if coding == b"identity" else _DECODERS[got](raw) if got in _DECODERS else raw
        if got != coding or decoded != body:
            raise BenchmarkError(f"case {name!r} sent {got!r}, not a correct {coding!r} body")

    async def all_cases() -> None:
        for name, app in apps.items():
            await one(name, app)

    asyncio.run(all_cases())


@dataclass(frozen=True)
class Scenario:
    title: str
    size: int
    chunks: int
    content_type: bytes
    goal: float  # the largest ours / raw ratio that meets the goal


SCENARIOS = {
    "64k": Scenario("64 KiB JSON, one message", 64 * 1024, 1, b"application/json", 1.03),
    "1k": Scenario("1 KiB JSON, one message", 1024, 1, b"application/json", 1.20),
    "stream": Scenario(
        "10-chunk event stream, 4 KiB each", 40 * 1024, 10, b"text/event-stream", 1.15
    ),
}


@dataclass
class Goal:
    name: str
    met: bool
    detail: str


def compression_case(
    name: str, scenario: Scenario, coding: str, rounds: int, min_time: float
) -> list[Goal]:
    raw = RAW[coding]
    body = payload(scenario.size)
    app = body_app(body, scenario.content_type, scenario.chunks)
    baseline = f"raw {raw.label}, in the app"
    apps: dict[str, ASGIApp] = {
        BARE + " (uncompressed)": app,
        baseline: raw_app(raw, body, scenario.content_type, scenario.chunks),
        OURS: ours(app),
        **anchors(app, coding, streaming=scenario.chunks > 1),
    }
    if scenario.chunks == 1:
        apps[FLOOR] = FloorMiddleware(app, raw)
    check_output(
        {k: v for k, v in apps.items() if k != BARE + " (uncompressed)"},
        _request(raw.token),
        raw.token,
        body,
    )
    results = run_asgi(
        apps,
        baseline=baseline,
        request=_request(raw.token),
        rounds=rounds,
        min_time=min_time,
    )
    print(report(results, f"{scenario.title}, Accept-Encoding: {coding}"))
    by_case = {r.case: r for r in results}
    mine = by_case[OURS]
    goals = [
        Goal(
            f"{name} {coding}: within {round((scenario.goal - 1) * 100)}% of the raw compressor",
            mine.ratio <= scenario.goal,
            f"{mine.ratio:.3f}x of raw "
            f"({mine.median_us:.2f} µs vs {by_case[baseline].median_us:.2f} µs)"
            + (f"; the floor {by_case[FLOOR].ratio:.3f}x" if FLOOR in by_case else ""),
        )
    ]
    for anchor in anchors(app, coding, streaming=scenario.chunks > 1):
        theirs = by_case[anchor]
        goals.append(
            Goal(
                f"{name} {coding}: ahead of {anchor}",
                mine.median_us < theirs.median_us,
                f"{mine.median_us / theirs.median_us:.2f}x of its time",
            )
        )
    print()
    print(raw_table(raw, body, scenario.chunks, rounds, min_time))
    print()
    return goals


def raw_table(raw: Raw, body: bytes, chunks: int, rounds: int, min_time: float) -> str:
    """The raw library calls alone, without ASGI (a separate run, for scale only)."""
    size = -(-len(body) // chunks)
    pieces = [body[i : i + size] for i in range(0, len(body), size)]

    def streamed() -> bytes:
        compress, finish = raw.stream()
        out = b"".join(compress(piece) for piece in pieces)
        return out + finish()

    cases: dict[str, Callable[[], object]] = {}
    if chunks == 1:
        cases[f"{raw.label} ({len(body)} bytes)"] = lambda: raw.oneshot(body)
        if raw.token == b"gzip" and len(body) < 32 * 1024:
            cases["zlib.compress, default 32 KiB window"] = lambda: zlib.compress(
                body, GZIP_LEVEL, 31
            )
    else:
        cases[f"{raw.label}, {chunks} chunks, flushed"] = streamed
    first = next(iter(cases))
    return report(
        run_sync(cases, baseline=first, rounds=rounds, min_time=min_time),
        "The raw call alone, no ASGI (separate run, for scale)",
    )


def below_minimum(rounds: int, min_time: float) -> list[Goal]:
    apps: dict[str, ASGIApp] = {
        BARE: bare_app,
        OURS: ours(bare_app),
        FLOOR: FloorMiddleware(bare_app, RAW["gzip"]),
        "Starlette GZipMiddleware": GZipMiddleware(bare_app, compresslevel=GZIP_LEVEL),
        "brotli-asgi": BrotliMiddleware(
            bare_app, quality=BROTLI_QUALITY, mode="generic", minimum_size=MINIMUM
        ),
        "starlette-compress": CompressMiddleware(
            bare_app,
            minimum_size=MINIMUM,
            zstd_level=ZSTD_LEVEL,
            brotli_quality=BROTLI_QUALITY,
            gzip_level=GZIP_LEVEL,
        ),
    }
    check_output(apps, _request(b"gzip, deflate, br, zstd"), b"identity", b"Hello, world!")
    results = run_asgi(
        apps,
        baseline=BARE,
        request=_request(b"gzip, deflate, br, zstd"),
        rounds=rounds,
        min_time=min_time,
    )
    print(report(results, "13-byte text/plain body, below the minimum size"))
    by_case = {r.case: r for r in results}
    added = added_cost(results, OURS, BARE)
    floor = added_cost(results, FLOOR, BARE)
    goals = [
        Goal(
            "below minimum: within 1 µs of the bare app",
            added <= 1.0,
            f"+{added:.3f} µs; the floor +{floor:.3f} µs",
        )
    ]
    for anchor in ("Starlette GZipMiddleware", "brotli-asgi", "starlette-compress"):
        theirs = added_cost(results, anchor, BARE)
        goals.append(
            Goal(
                f"below minimum: ahead of {anchor}",
                by_case[OURS].median_us < by_case[anchor].median_us,
                f"+{added:.3f} µs vs +{theirs:.3f} µs",
            )
        )
    print(f"Added over the bare app: {added:.3f} µs\n")
    return goals


def threads(rounds: int, min_time: float) -> None:
    """Where a worker thread pays: large one-shot bodies, inline vs in a thread."""
    for coding in ("gzip", "br", "zstd"):
        for size in (32 * 1024, 128 * 1024, 512 * 1024):
            app = body_app(payload(size))
            apps: dict[str, ASGIApp] = {
                "inline": ours(app, thread_minimum_size=None),
                "worker thread": ours(app, thread_minimum_size=0),
            }
            check_output(apps, _request(RAW[coding].token), RAW[coding].token, payload(size))
            results = run_asgi(
                apps,
                baseline="inline",
                request=_request(RAW[coding].token),
                rounds=rounds,
                min_time=min_time,
            )
            print(report(results, f"{size // 1024} KiB JSON, {coding}: inline vs worker thread"))
            print()


def summary(goals: Sequence[Goal]) -> str:
    lines = ["### Goals", ""]
    lines += [f"- {'met   ' if g.met else 'MISSED'} {g.name}: {g.detail}" for g in goals]
    met = sum(goal.met for goal in goals)
    lines.append(f"\n{met} of {len(goals)} goals met")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_compression")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.05)
    parser.add_argument(
        "--only",
        nargs="*",
        choices=[*SCENARIOS, "below", "threads"],
        help="scenarios to run (default: all but threads)",
    )
    args = parser.parse_args(argv)
    chosen = args.only or [*SCENARIOS, "below"]
    goals: list[Goal] = []
    for name, scenario in SCENARIOS.items():
        if name in chosen:
            for coding in ("gzip", "br", "zstd"):
                goals += compression_case(name, scenario, coding, args.rounds, args.min_time)
    if "below" in chosen:
        goals += below_minimum(args.rounds, args.min_time)
    if "threads" in chosen:
        threads(args.rounds, args.min_time)
    if goals:
        print(summary(goals))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
