"""Starlette 1.10's own middleware tests, run against asgikit.

``test_client_factory`` is Starlette's fixture (its ``tests/conftest.py``): Starlette's
TestClient on the test's anyio backend; asgikit's ``anyio_backend`` fixture
(``tests/conftest.py``) runs each test on asyncio and trio.

``DIFFERENCES`` lists the tests that fail on purpose, each with the section of the docs
that says why; they are marked ``xfail(strict=True)`` here, so the copied files stay as
Starlette wrote them, and a difference that goes away fails the run until it is removed.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Literal

import pytest
from starlette.testclient import TestClient

from tests.starlette_suite.types import TestClientFactory

_CORS = "docs/cors.md#starlettes-own-tests"
_COMPRESSION = "docs/compression.md#starlettes-own-tests"

DIFFERENCES: dict[str, tuple[str, str]] = {
    # key: "file::test" or "file::test[params]" (the anyio backend left out)
    "test_cors.py::test_cors_allow_all": (
        _CORS,
        "allow_origins=['*'] with allow_credentials=True is refused at start-up",
    ),
    "test_cors.py::test_preflight_allows_request_origin_if_origins_wildcard_and_credentials_allowed": (
        _CORS,
        "allow_origins=['*'] with allow_credentials=True is refused at start-up",
    ),
    "test_cors.py::test_cors_vary_header_is_properly_set_for_credentialed_request": (
        _CORS,
        "allow_origins=['*'] with allow_credentials=True is refused at start-up",
    ),
    "test_cors.py::test_cors_disallowed_preflight": (
        _CORS,
        "a denied preflight is a 403 naming what was refused, not a 400",
    ),
    "test_cors.py::test_cors_allow_origin_regex": (
        _CORS,
        "a denied preflight is a 403 naming what was refused, not a 400",
    ),
    "test_cors.py::test_cors_preflight_rejects_custom_method_with_wildcard": (
        _CORS,
        "allow_methods=['*'] without credentials allows any requested method",
    ),
    "test_cors.py::test_cors_private_network_access_disallowed": (
        _CORS,
        "a private-network preflight without the option is answered without the header",
    ),
    "test_cors.py::test_cors_vary_origin_with_gzip": (
        _COMPRESSION,
        "a body that compression would make larger is sent as it is",
    ),
    "test_gzip.py::test_gzip_streaming_response": (
        _COMPRESSION,
        "a response without Content-Type is not compressed",
    ),
    "test_gzip.py::test_gzip_streaming_response_identity": (
        _COMPRESSION,
        "a response without Content-Type is not compressed",
    ),
    "test_gzip.py::test_gzip_trailers[True-gzip]": (
        _COMPRESSION,
        "a response without Content-Type is not compressed",
    ),
    "test_gzip.py::test_gzip_trailers[False-gzip]": (
        _COMPRESSION,
        "a response without Content-Type is not compressed",
    ),
    "test_gzip.py::test_gzip_ignored_on_server_sent_events": (
        _COMPRESSION,
        "event streams are compressed, every event flushed",
    ),
    "test_gzip.py::test_gzip_passes_through_early_hints[gzip]": (
        _COMPRESSION,
        "a body that compression would make larger is sent as it is",
    ),
    "test_gzip.py::test_gzip_cleared_exclude_content_types[application/grpc+proto]": (
        _COMPRESSION,
        "gRPC is never compressed",
    ),
    "test_trusted_host.py::test_trusted_host_middleware_ipv6[api_service:000080-200]": (
        "docs/trusted_host.md#starlettes-own-tests",
        "a Host whose port is not a TCP port (1-65535, at most five digits) is malformed: 400",
    ),
    "test_trusted_host.py::test_trusted_host_middleware_ipv6[api_service:65536-200]": (
        "docs/trusted_host.md#starlettes-own-tests",
        "a Host whose port is not a TCP port (1-65535, at most five digits) is malformed: 400",
    ),
    "test_trusted_host.py::test_trusted_host_middleware_ipv6[api_service:100000-200]": (
        "docs/trusted_host.md#starlettes-own-tests",
        "a Host whose port is not a TCP port (1-65535, at most five digits) is malformed: 400",
    ),
    "test_body_limit.py::test_received_bytes_are_counted_with_unreliable_content_length": (
        "docs/body_limit.md#starlettes-own-tests",
        "past the limit the app reads http.disconnect (Starlette's request.body() raises "
        "ClientDisconnect), and a Content-Length that does not parse is a 400",
    ),
    "test_body_limit.py::test_limit_exceeded_after_response_started_is_raised": (
        "docs/body_limit.md#starlettes-own-tests",
        "past the limit the app reads http.disconnect: nothing is raised",
    ),
    "test_body_limit.py::test_existing_scope_limit_is_restored": (
        "docs/body_limit.md#starlettes-own-tests",
        "the scope key starlette.max_body_size is neither written nor read",
    ),
}

_BACKEND = re.compile(r"^(asyncio|trio)-?|-?(asyncio|trio)$")


def difference_key(item: pytest.Item) -> str:
    """``file::test[params]`` for a collected test, without its anyio backend."""
    key = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
    callspec = getattr(item, "callspec", None)
    params = _BACKEND.sub("", callspec.id) if callspec is not None else ""
    return f"{key}[{params}]" if params else key


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent.name != "starlette_suite":
            continue
        difference = DIFFERENCES.get(difference_key(item))
        if difference is not None:
            where, why = difference
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"{why}: see {where}"))


@pytest.fixture
def test_client_factory(
    anyio_backend_name: Literal["asyncio", "trio"],
    anyio_backend_options: dict[str, Any],
) -> TestClientFactory:
    return functools.partial(TestClient, backend=anyio_backend_name, backend_options=anyio_backend_options)
