"""BodyLimitMiddleware beside Starlette's RequestBodyLimitMiddleware, on a request neither
acts on.

python -m benchmarks.bench_body_limit [--rounds 15] [--min-time 0.05]

A small POST under the limit, the common case a body limit costs something on: a 512-byte
JSON body in one chunk with ``Content-Length``, and the same body in two chunks without
it (chunked upload). The app reads the whole body, then answers like the harness's bare
app. Both middleware get a 1 MiB limit; asgikit's also runs with ``decompress=True``
(the body is not compressed, so this is the cost of the option alone).

Besides the ratio to Starlette, the table has a *floor*: a pure pass-through layer (an
``async def __call__`` that calls the app with the same ``receive`` and ``send``), the
least any middleware costs, and the added per-request cost over the bare app is printed
for each.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from asgikit.middleware.body_limit import BodyLimitMiddleware
from asgikit.types import ASGIApp, Receive, Scope, Send
from benchmarks.harness import PassThrough, Request, added_cost, report, run_asgi

__all__ = ["main"]

ANCHOR = "Starlette RequestBodyLimitMiddleware"
OURS = "asgikit BodyLimitMiddleware"
OURS_DECOMPRESS = "asgikit BodyLimitMiddleware, decompress=True"
FLOOR = "floor: pass-through layer"
BARE = "bare app (reads the body)"

LIMIT = 1024 * 1024
BODY = b'{"items": [' + b", ".join(b'{"id": %d, "name": "item"}' % i for i in range(20)) + b"]}"
BODY = BODY[:512].ljust(512, b" ")
_ANSWER = b"Hello, world!"


async def reading_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, then answers 200 text/plain "Hello, world!"."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(_ANSWER)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _ANSWER})


def _headers(*extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b"host", b"api.example.com"),
        (b"user-agent", b"asgikit-benchmarks/1"),
        (b"accept", b"*/*"),
        (b"content-type", b"application/json"),
        *extra,
    ]


SCENARIOS: dict[str, Request] = {
    "POST, 512-byte body with Content-Length": Request(
        method="POST",
        path="/items",
        headers=_headers((b"content-length", b"%d" % len(BODY))),
        body_chunks=(BODY,),
    ),
    "POST, 512-byte body in two chunks, no Content-Length": Request(
        method="POST",
        path="/items",
        headers=_headers(),
        body_chunks=(BODY[:256], BODY[256:]),
    ),
}


def apps() -> dict[str, ASGIApp]:
    """The bare app, the floor, and the bare app under Starlette's and asgikit's middleware."""
    return {
        BARE: reading_app,
        FLOOR: PassThrough(reading_app),
        ANCHOR: RequestBodyLimitMiddleware(reading_app, max_body_size=LIMIT),
        OURS: BodyLimitMiddleware(reading_app, max_body_size=LIMIT),
        OURS_DECOMPRESS: BodyLimitMiddleware(reading_app, max_body_size=LIMIT, decompress=True),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_body_limit")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.05)
    args = parser.parse_args(argv)
    for title, scenario in SCENARIOS.items():
        results = run_asgi(
            apps(), baseline=ANCHOR, request=scenario, rounds=args.rounds, min_time=args.min_time
        )
        print(report(results, f"Body limit, {title}"))
        costs = ", ".join(
            f"{case}: {added_cost(results, case, BARE):+.3f} µs"
            for case in (FLOOR, ANCHOR, OURS, OURS_DECOMPRESS)
        )
        print(
            f"Added per-request cost over the bare app: {costs}; ours vs {ANCHOR}'s: "
            f"{added_cost(results, OURS, BARE, ANCHOR):.2f}x\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
