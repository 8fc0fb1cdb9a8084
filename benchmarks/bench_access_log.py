"""AccessLogMiddleware beside a bare structlog call and asgi-logger, JSON lines to a null sink.

python -m benchmarks.bench_access_log [--rounds 15] [--min-time 0.05]

Four cases in one interleaved run, per scenario (and the floors below):

- the bare app;
- the *structlog reference*: the least a pure ASGI middleware can do to log the same
  fields through structlog: time the request, count the body bytes both ways, note the
  status, read the headers, and call the logger once. No redaction, exclusions,
  sampling, levels by outcome, trace ids or context binding;
- asgi-logger (``asgi_logger.AccessLoggerMiddleware``, its default format), writing
  through a ``logging.Logger`` to the same null sink;
- asgikit's ``AccessLogMiddleware`` with its defaults.

The scenario with a query and a referer also times two *floors*:

- the reference plus the least redaction there is, the query and the referer's query
  split on ``&`` and each name looked up in a set holding exactly the one sensitive name
  the request carries (no patterns, no decoding or case folding, no ``;`` or fragments):
  whatever redacts as the issue asks costs at least that much more than the reference;
- the same line built on asgikit's shared parts: the ``Exchange`` the access log,
  tracing and the inspector watch a response with (end time, completion, disconnects,
  files, trailers), and a scope copy that starts the scope chain the route is read
  from. Still the least redaction and none of the line's other checks (levels,
  exclusions, sampling, truncation, trace ids, context binding), but the structlog
  bound logger kept as AccessLogMiddleware keeps it. Whatever keeps those two parts
  costs at least that much.

structlog is set up by ``asgikit.logging.configure(format="json")`` for both structlog
cases, so they pay for the same processors and the same msgspec rendering; only the
middleware differs. Ratios are to the reference; the added cost over the bare app is
also compared: (case - bare) / (reference - bare) and / (asgi-logger - bare).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import structlog
from asgi_logger.middleware import AccessLoggerMiddleware

import asgikit.logging
from asgikit.headers import get_header
from asgikit.middleware.access_log import AccessLogMiddleware
from asgikit.observe import Exchange, route_of
from asgikit.scopes import CHAIN_KEY
from asgikit.types import ASGIApp, Message, Receive, Scope, Send
from benchmarks.harness import Request, added_cost, bare_app, report, run_asgi

__all__ = ["SharedPartsFloor", "StructlogReference", "least_redaction", "main"]

BARE = "bare app"
REFERENCE = "structlog reference"
FLOOR = "floor: reference + least redaction"
SHARED_FLOOR = "floor: least redaction on the shared parts"
ANCHOR = "asgi-logger"
OURS = "asgikit AccessLogMiddleware"

_BROWSER = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"accept-language", b"en-GB,en;q=0.5"),
    (b"accept-encoding", b"gzip, deflate, br, zstd"),
    (b"cookie", b"session=0123456789abcdef; theme=dark"),
]

SCENARIOS = {
    "GET, browser headers": Request(path="/items/42", headers=_BROWSER),
    "GET with a query (one sensitive parameter) and a referer": Request(
        path="/search?q=shoes&page=2&access_token=abc123def456",
        headers=[*_BROWSER, (b"referer", b"https://example.com/start?utm_source=news")],
    ),
}
# The scenarios timed beside the floor, and the parameter names the floor knows.
FLOOR_SCENARIOS = {"GET with a query (one sensitive parameter) and a referer": {"access_token"}}


def least_redaction(names: set[str]) -> Callable[[str], str]:
    """The cheapest redaction of a query: pairs split on ``&``, names looked up in *names*."""
    known = frozenset(names)

    def redact(query: str) -> str:
        if "&" not in query:  # one pair: no split
            name, _, value = query.partition("=")
            return name + "=[REDACTED]" if value and name in known else query
        parts = query.split("&")
        changed = False
        for i, part in enumerate(parts):
            name, _, value = part.partition("=")
            if value and name in known:
                parts[i] = name + "=[REDACTED]"
                changed = True
        return "&".join(parts) if changed else query

    return redact


class _NullSink(io.RawIOBase):
    """A binary stream that keeps nothing."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(data)


class _NullText(io.TextIOBase):
    """A text stream that keeps nothing (for the ``logging`` handler)."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)


class StructlogReference:
    """The issue's "bare structlog call": time the request, one logger call, same fields.

    Given *redact*, it is the floor instead: the query and the referer's query go through
    it. (One attribute test per field is all the reference pays for sharing the code.)
    """

    def __init__(self, app: ASGIApp, redact: Callable[[str], str] | None = None) -> None:
        self.app = app
        self.logger = structlog.get_logger("reference")
        self.redact = redact

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0
        first_byte = 0.0
        sent = received = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, first_byte, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                first_byte = time.perf_counter()
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        await self.app(scope, receive_wrapper, send_wrapper)
        end = time.perf_counter()
        headers = scope["headers"]
        fields: dict[str, Any] = {
            "http.request.method": scope["method"],
            "url.path": scope["path"],
        }
        redact = self.redact
        if scope["query_string"]:
            query = scope["query_string"].decode("latin-1")
            fields["url.query"] = query if redact is None else redact(query)
        fields["http.response.status_code"] = status
        # The same cheap rounding as asgikit's (round(x, 3) costs several times more).
        fields["duration_ms"] = round((end - start) * 1_000_000) / 1000
        fields["ttfb_ms"] = round((first_byte - start) * 1_000_000) / 1000
        fields["http.request.body.size"] = received
        fields["http.response.body.size"] = sent
        fields["network.protocol.version"] = scope["http_version"]
        fields["url.scheme"] = scope["scheme"]
        fields["client.address"], fields["client.port"] = scope["client"]
        user_agent = get_header(headers, b"user-agent")
        if user_agent is not None:
            fields["user_agent.original"] = user_agent.decode("latin-1")
        referer = get_header(headers, b"referer")
        if referer is not None:
            url = referer.decode("latin-1")
            if redact is not None and (cut := url.find("?") + 1):
                rest = url[cut:]
                redacted = redact(rest)
                if redacted is not rest:
                    url = url[:cut] + redacted
            fields["http.request.header.referer"] = url
        self.logger.info("http.request", **fields)


class SharedPartsFloor:
    """The least line on asgikit's shared parts: ``Exchange`` and the scope chain."""

    def __init__(self, app: ASGIApp, redact: Callable[[str], str]) -> None:
        self.app = app
        self.redact = redact
        self.info = structlog.get_logger("floor").bind().info  # kept, as asgikit keeps it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope = {**scope}
        scope[CHAIN_KEY] = chain = [scope]
        ex = Exchange(send, receive, time.perf_counter)
        await self.app(scope, ex.receive, ex.send)
        end = time.perf_counter() if ex.end is None else ex.end
        redact = self.redact
        headers = scope["headers"]
        fields: dict[str, Any] = {
            "http.request.method": scope["method"],
            "url.path": scope["path"],
        }
        if scope["query_string"]:
            fields["url.query"] = redact(scope["query_string"].decode("latin-1"))
        route = route_of(scope)
        if route is not None:
            fields["http.route"] = route
        fields["http.response.status_code"] = ex.status
        fields["duration_ms"] = round((end - start) * 1_000_000) / 1000
        fields["ttfb_ms"] = round((ex.first_byte - start) * 1_000_000) / 1000
        fields["http.request.body.size"] = ex.received
        fields["http.response.body.size"] = ex.sent
        fields["network.protocol.version"] = scope["http_version"]
        fields["url.scheme"] = scope["scheme"]
        fields["client.address"], fields["client.port"] = scope["client"]
        user_agent = referer = None
        for name, value in headers:  # one pass, as asgikit reads them
            if name == b"user-agent":
                if user_agent is None:
                    user_agent = value
            elif name == b"referer" and referer is None:
                referer = value
        if user_agent is not None:
            fields["user_agent.original"] = user_agent.decode("latin-1")
        if referer is not None:
            url = referer.decode("latin-1")
            if cut := url.find("?") + 1:
                rest = url[cut:]
                redacted = redact(rest)
                if redacted is not rest:
                    url = url[:cut] + redacted
            fields["http.request.header.referer"] = url
        chain.clear()
        self.info("http.request", **fields)


def _asgi_logger_logger() -> logging.Logger:
    logger = logging.getLogger("benchmarks.asgi_logger")
    logger.handlers.clear()
    handler = logging.StreamHandler(_NullText())
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


@contextlib.contextmanager
def json_logs_to_nowhere() -> Iterator[None]:
    """structlog set up by ``asgikit.logging.configure`` for JSON lines into a null
    sink, for the block; structlog's defaults back afterwards."""
    # Kept in a variable: a collected TextIOWrapper closes the sink under the logger.
    sink = io.TextIOWrapper(io.BufferedWriter(_NullSink()), write_through=True)
    asgikit.logging.configure(format="json", stream=sink, stdlib=False)
    try:
        yield
    finally:
        structlog.reset_defaults()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_access_log")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.05)
    args = parser.parse_args(argv)
    with json_logs_to_nowhere():
        apps: dict[str, ASGIApp] = {
            BARE: bare_app,
            REFERENCE: StructlogReference(bare_app),
            # asgi-logger is typed against asgiref's TypedDicts; it takes any ASGI app.
            ANCHOR: cast(
                ASGIApp, AccessLoggerMiddleware(cast(Any, bare_app), logger=_asgi_logger_logger())
            ),
            OURS: AccessLogMiddleware(bare_app),
        }
        for title, scenario in SCENARIOS.items():
            cases = dict(apps)
            names = FLOOR_SCENARIOS.get(title)
            if names is not None:
                cases[FLOOR] = StructlogReference(bare_app, least_redaction(names))
                cases[SHARED_FLOOR] = SharedPartsFloor(bare_app, least_redaction(names))
            results = run_asgi(
                cases,
                baseline=REFERENCE,
                request=scenario,
                rounds=args.rounds,
                min_time=args.min_time,
            )
            print(report(results, f"Access log, {title}"))
            versus_reference = added_cost(results, OURS, BARE, REFERENCE)
            versus_anchor = added_cost(results, OURS, BARE, ANCHOR)
            print(
                f"Added per-request cost: {versus_reference:.2f}x the reference's (goal <= 1.3x), "
                f"{versus_anchor:.2f}x {ANCHOR}'s (goal <= 0.25x)"
            )
            if names is not None:
                for floor in (FLOOR, SHARED_FLOOR):
                    print(
                        f"{floor}: {added_cost(results, floor, BARE, REFERENCE):.2f}x the "
                        f"reference's, {added_cost(results, floor, BARE, ANCHOR):.3f}x "
                        f"{ANCHOR}'s ({added_cost(results, floor, REFERENCE):+.2f} µs over "
                        "the reference)"
                    )
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
