"""asgikit.headers against Starlette's Headers / MutableHeaders doing the same job.

python -m benchmarks.bench_headers [--rounds 15] [--min-time 0.05]

Each case is what a middleware does with the raw headers of an ``http.response.start``
message. The Starlette way wraps the list (``Headers(raw=...)`` reads without copying;
``MutableHeaders`` gets a copy, because a middleware must not mutate the app's list) and
works in ``str``; the helpers work on the raw list in ``bytes``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from starlette.datastructures import Headers, MutableHeaders

from asgikit.headers import RawHeaders, add_vary, get_all, get_header, set_header
from benchmarks.harness import BenchmarkError, report, run_sync

__all__ = ["COMPARISONS", "RESPONSE", "RESPONSE_WITH_VARY", "main"]

# A realistic response: ten fields, two of them set-cookie.
RESPONSE: RawHeaders = [
    (b"content-type", b"application/json"),
    (b"content-length", b"1532"),
    (b"date", b"Mon, 24 Nov 2025 01:50:00 GMT"),
    (b"server", b"uvicorn"),
    (b"cache-control", b"private, max-age=0"),
    (b"set-cookie", b"session=9f8a7c6b5d4e; HttpOnly; Path=/; SameSite=lax; Secure"),
    (b"set-cookie", b"csrftoken=QmFzZTY0IGlzIG5vdCBlbmNyeXB0aW9u; Path=/; SameSite=strict"),
    (b"etag", b'"33a64df551425fcc55e4d42a148795d9f25f89d4"'),
    (b"x-content-type-options", b"nosniff"),
    (b"x-request-id", b"0b5c5e0c-8a43-4d6e-9b1c-2f6a3d7e9a10"),
]
# The same after CORS has run: Vary already lists Origin.
RESPONSE_WITH_VARY: RawHeaders = [*RESPONSE, (b"vary", b"Origin")]


def _starlette_add_vary(headers: RawHeaders) -> RawHeaders:
    mutable = MutableHeaders(raw=list(headers))
    mutable.add_vary_header("Accept-Encoding")
    return mutable.raw


def _starlette_set(headers: RawHeaders) -> RawHeaders:
    mutable = MutableHeaders(raw=list(headers))
    mutable["content-length"] = "733"
    return mutable.raw


# title -> cases; the first case is the baseline.
COMPARISONS: dict[str, dict[str, Callable[[], object]]] = {
    "Get the first value (cache-control, 5th of 10 fields)": {
        "starlette Headers(raw=h).get()": lambda: Headers(raw=RESPONSE).get("cache-control"),
        "asgikit get_header()": lambda: get_header(RESPONSE, b"cache-control"),
    },
    "Get all values (set-cookie, 2 of 10 fields)": {
        "starlette Headers(raw=h).getlist()": lambda: Headers(raw=RESPONSE).getlist("set-cookie"),
        "asgikit get_all()": lambda: get_all(RESPONSE, b"set-cookie"),
    },
    "Add Accept-Encoding to Vary (no Vary yet), new list": {
        "starlette MutableHeaders.add_vary_header()": lambda: _starlette_add_vary(RESPONSE),
        "asgikit add_vary()": lambda: add_vary(RESPONSE, b"Accept-Encoding"),
    },
    "Add Accept-Encoding to Vary (Vary: Origin present), new list": {
        "starlette MutableHeaders.add_vary_header()": lambda: _starlette_add_vary(
            RESPONSE_WITH_VARY
        ),
        "asgikit add_vary()": lambda: add_vary(RESPONSE_WITH_VARY, b"Accept-Encoding"),
    },
    "Set content-length (replace in place of the first), new list": {
        "starlette MutableHeaders[...] = ...": lambda: _starlette_set(RESPONSE),
        "asgikit set_header()": lambda: set_header(RESPONSE, b"content-length", b"733"),
    },
}


def _check_same_results() -> None:
    """The two ways must agree, or the comparison measures different jobs."""
    agree = {
        "get first": get_header(RESPONSE, b"cache-control")
        == Headers(raw=RESPONSE).get("cache-control", "").encode(),
        "get all": get_all(RESPONSE, b"set-cookie")
        == [value.encode() for value in Headers(raw=RESPONSE).getlist("set-cookie")],
        "add vary": add_vary(RESPONSE, b"Accept-Encoding") == _starlette_add_vary(RESPONSE),
        "add vary, present": add_vary(RESPONSE_WITH_VARY, b"Accept-Encoding")
        == _starlette_add_vary(RESPONSE_WITH_VARY),
        "set": set_header(RESPONSE, b"content-length", b"733") == _starlette_set(RESPONSE),
    }
    if not all(agree.values()):
        differ = [job for job, same in agree.items() if not same]
        raise BenchmarkError(f"asgikit and starlette results differ: {differ}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run every comparison and print one table each."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_headers", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per case per round")
    args = parser.parse_args(argv)
    _check_same_results()
    tables = []
    for title, cases in COMPARISONS.items():
        baseline = next(iter(cases))
        results = run_sync(cases, baseline=baseline, rounds=args.rounds, min_time=args.min_time)
        tables.append(report(results, title))
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
