"""BodyLimitMiddleware's decoding edges: gzip's trailing zero padding, a chunk of many
zstd frames (no recursion, and a bound on the frames), and corrupt data found after the
response started (the exchange is aborted)."""

from __future__ import annotations

import tomllib
import zlib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import zstandard

from asgikit.answers import DECISION_FIELD
from asgikit.contract import enforce
from asgikit.middleware.body_limit import BodyLimitMiddleware, BodyTooLarge
from asgikit.middleware.body_limit.decoding import ZSTD_MAX_FRAMES
from asgikit.scopes import DECISION_KEY
from asgikit.testing import http_scope, request
from asgikit.types import ASGIApp, Receive, Scope, Send

from .test_body_limit import echo, echo_until_gone

pytestmark = pytest.mark.anyio

EMPTY_FRAME = zstandard.ZstdCompressor().compress(b"")


def gzip(data: bytes) -> bytes:
    return zlib.compress(data, wbits=31)


def decoding(app: ASGIApp = echo, **options: Any) -> ASGIApp:
    return enforce(BodyLimitMiddleware(enforce(app), decompress=True, **options))


async def post(body: list[bytes], coding: str = "gzip", **options: Any) -> tuple[int, bytes]:
    headers = {"content-encoding": coding}
    response = await request(decoding(**options), "POST", "/", headers=headers, body=body)
    return response.status, response.body


@pytest.mark.parametrize(
    "body",
    [
        [gzip(b"hello ") + gzip(b"world") + bytes(8)],  # GNU gzip and GzipFile accept it
        [gzip(b"hello ") + gzip(b"world"), bytes(512), bytes(512)],  # padded to a block
        [gzip(b"hello ") + gzip(b"world") + bytes(3), bytes(5), b""],
    ],
)
async def test_trailing_zero_padding_after_gzip_members_is_ignored(body: list[bytes]) -> None:
    assert await post(body) == (200, b"hello world")


@pytest.mark.parametrize(
    "body",
    [
        [gzip(b"hello") + bytes(4) + gzip(b"world")],  # zeros are the end: no member after
        [gzip(b"hello") + bytes(4), gzip(b"world")],
        [gzip(b"hello") + bytes(4), b"\x00\x01"],
    ],
)
async def test_data_after_the_padding_is_400(body: list[bytes]) -> None:
    assert await post(body) == (400, b"Invalid gzip request body")


async def test_deflate_has_no_padding() -> None:
    assert await post([zlib.compress(b"hi") + bytes(4)], "deflate") == (
        400,
        b"Invalid deflate request body",
    )


@pytest.mark.parametrize("cap", [None, 1 << 30])
async def test_a_chunk_of_many_zstd_frames_decodes_without_recursion(cap: int | None) -> None:
    frames = EMPTY_FRAME * (ZSTD_MAX_FRAMES - 2) + zstandard.ZstdCompressor().compress(b"end")
    # Before: one recursion per frame, a RecursionError (a 500) from about 300 MiB of cap.
    assert await post([frames], "zstd", max_decompressed_size=cap) == (200, b"end")


async def test_more_zstd_frames_than_the_bound_is_400() -> None:
    frames = EMPTY_FRAME * (64 * 1024 // len(EMPTY_FRAME))
    status, body = await post([frames], "zstd", max_decompressed_size=None)
    assert (status, body) == (400, b"Invalid zstd request body")


async def test_corrupt_data_after_the_response_started_aborts_the_exchange() -> None:
    scope = http_scope("POST", "/", headers={"content-encoding": "gzip"})
    scope[DECISION_KEY] = {}
    response = await request(
        decoding(echo_until_gone),
        scope=scope,
        body=[gzip(b"1234"), b"\x01corrupt"],
        raise_app_exceptions=False,
    )
    assert isinstance(response.exception, BodyTooLarge)
    assert response.exception.reason == "corrupt"
    assert (response.status, response.body, response.complete) == (200, b"1234", False)
    assert scope[DECISION_KEY][DECISION_FIELD] == "bad_request"


async def test_a_started_response_the_app_completed_after_a_refusal_stands() -> None:
    async def finishes(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive())["type"] == "http.request":
            pass
        await send({"type": "http.response.body", "body": b"done"})

    headers = {"content-encoding": "gzip"}
    body = [gzip(b"x" * 100)]
    response = await request(
        decoding(finishes, max_decompressed_size=10), "POST", "/", headers=headers, body=body
    )
    assert (response.status, response.body, response.complete) == (200, b"done", True)


def test_the_brotli_requirement_has_the_output_limit_the_decoder_uses() -> None:
    """``Decompressor.process(output_buffer_limit=)`` came with brotli 1.2 (the release
    that fixed CVE-2025-6176): an older one fails on the first br body."""
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    [needed] = [d for d in project["project"]["dependencies"] if d.startswith("brotli")]
    assert needed.startswith("brotli>=")
    minimum = tuple(int(part) for part in needed.removeprefix("brotli>=").split("."))
    assert minimum >= (1, 2)
    installed = tuple(int(part) for part in metadata.version("brotli").split(".")[:2])
    assert installed >= minimum
