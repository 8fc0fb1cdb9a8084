# Starlette's own test file, from the Starlette 1.10.0 sdist on PyPI (tests/types.py).
# Copyright (c) 2018, Encode OSS Ltd. All rights reserved. BSD-3-Clause: see LICENSE.md
# in this folder. Changed: the order of the imports only.
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import httpx2 as httpx
from starlette.testclient import TestClient
from starlette.types import ASGIApp

if TYPE_CHECKING:

    class TestClientFactory(Protocol):  # pragma: no cover
        def __call__(
            self,
            app: ASGIApp,
            base_url: str = "http://testserver",
            raise_server_exceptions: bool = True,
            root_path: str = "",
            cookies: httpx._types.CookieTypes | None = None,
            headers: dict[str, str] | None = None,
            follow_redirects: bool = True,
            client: tuple[str, int] = ("testclient", 50000),
        ) -> TestClient: ...
else:  # pragma: no cover

    class TestClientFactory:
        __test__ = False
