"""The example app the README starts works, under the contract checker."""

import sys
from pathlib import Path

import pytest

from asgikit.testing import lifespan, request, websocket

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import hello

pytestmark = pytest.mark.anyio


async def test_hello_example_serves_http_websocket_and_lifespan() -> None:
    async with lifespan(hello.app) as session:
        response = await request(hello.app, "GET", "/?name=asgikit", state=session.state)
        assert response.status == 200
        assert response.text.startswith("Hello, asgikit!")
        streamed = await request(hello.app, "GET", "/numbers", state=session.state)
        assert streamed.body == b"1\n2\n3\n4\n5\n"
        echoed = await websocket(hello.app, "/echo", frames=["ping"], state=session.state)
        assert echoed.sent == ["ping"]
