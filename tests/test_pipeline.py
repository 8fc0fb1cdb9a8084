"""Pipeline: the first middleware is the outermost; departures from the canonical order warn."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import pytest

from asgikit.contract import enforce
from asgikit.middleware.request_id import SCOPE_KEY, RequestIDMiddleware
from asgikit.pipeline import (
    CANONICAL_ORDER,
    ORDER_RULES,
    OUTERMOST_RULES,
    Layer,
    Pipeline,
    PipelineWarning,
    order_problems,
)
from asgikit.registry import Registry, RegistryError
from asgikit.testing import request
from asgikit.types import ASGIApp, Message, Receive, Scope, Send


class Tag:
    """Adds ``x-layer: <name>`` to the response and its name to ``scope["layers"]``.

    Args:
        app: The app.
        name: The name it adds.
    """

    def __init__(self, app: ASGIApp, *, name: str = "tag") -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope = {**scope, "layers": [*scope.get("layers", []), self.name]}
        header = (b"x-layer", self.name.encode())

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, tagged)


class AccessLog(Tag):
    pass


class Compression(Tag):
    pass


class CORS(Tag):
    pass


class RateLimit(Tag):
    pass


FAKES = Registry(
    {
        "access_log": "tests.test_pipeline:AccessLog",
        "compression": "tests.test_pipeline:Compression",
        "cors": "tests.test_pipeline:CORS",
        "rate_limit": "tests.test_pipeline:RateLimit",
        "tag": "tests.test_pipeline:Tag",
    },
    group=None,
)

pytestmark = pytest.mark.anyio


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    layers = ",".join(scope.get("layers", []))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": layers.encode()})


async def test_the_first_middleware_is_the_outermost() -> None:
    pipeline = Pipeline(
        [
            (Tag, {"name": "outer"}),
            ("tag", {"name": "middle"}),
            functools.partial(Tag, name="inner"),
        ],
        registry=FAKES,
    )
    wrapped = enforce(pipeline.wrap(enforce(app)))
    response = await request(wrapped, "GET", "/")
    assert response.body == b"outer,middle,inner"  # the request goes down in order
    assert response.header_values("x-layer") == ["inner", "middle", "outer"]  # and back up


async def test_builtins_by_name_run_through_the_contract_checker() -> None:
    pipeline = Pipeline(["request_id", ("contract", {"strict": True})])
    assert [layer.name for layer in pipeline.layers] == ["request_id", "contract"]
    seen: list[str] = []

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope[SCOPE_KEY])
        await app(scope, receive, send)

    response = await request(pipeline.wrap(recording), "GET", "/")
    assert response.status == 200
    assert response.header("x-request-id") == seen[0]


def test_layers_know_builtins_by_class() -> None:
    pipeline = Pipeline([RequestIDMiddleware, (Tag, {"name": "x"})], registry=Registry(group=None))
    assert [layer.name for layer in pipeline.layers] == ["request_id", None]
    assert [layer.label for layer in pipeline.layers] == ["request_id", "Tag"]
    assert pipeline.layers[1].options == {"name": "x"}
    assert len(pipeline) == 2
    assert repr(pipeline) == "Pipeline([request_id, Tag])"
    assert Layer(object()).label.startswith("<object object")  # type: ignore[arg-type]


def test_an_empty_pipeline_returns_the_app_itself() -> None:
    assert Pipeline().wrap(app) is app


@pytest.mark.parametrize(
    "spec",
    [(Tag,), (Tag, {"name": "x"}, 1), (Tag, ["name"]), 42],
    ids=["short-tuple", "long-tuple", "options-not-a-mapping", "not-callable"],
)
def test_malformed_entries_are_type_errors(spec: object) -> None:
    with pytest.raises(TypeError):
        Pipeline([spec], registry=FAKES)  # type: ignore[list-item]


def test_unknown_names_are_registry_errors() -> None:
    with pytest.raises(RegistryError, match="did you mean 'cors'"):
        Pipeline(["cros"], registry=FAKES)


def test_from_layers_skips_lookups() -> None:
    layers = [Layer(Tag, {"name": "a"}, "cors"), Layer(Tag, {}, None)]
    pipeline = Pipeline.from_layers(layers)
    assert pipeline.layers == tuple(layers)


# --------------------------------------------------------------------------------------
# ordering


def test_the_canonical_order_has_no_problems() -> None:
    assert order_problems(CANONICAL_ORDER) == []
    assert order_problems([*CANONICAL_ORDER, "contract", None]) == []
    # Anything outside server_timing, even a middleware of the user's, leaves it second.
    [problem] = order_problems([None, *CANONICAL_ORDER])
    assert (problem.inner, problem.outer) == (1, None)


def test_every_rule_follows_the_canonical_order() -> None:
    for outer, inner, loss in ORDER_RULES:
        assert CANONICAL_ORDER.index(outer) < CANONICAL_ORDER.index(inner), (outer, inner)
        assert loss


@pytest.mark.parametrize(("outer", "inner", "loss"), ORDER_RULES)
def test_each_departure_names_what_it_loses(outer: str, inner: str, loss: str) -> None:
    problems = order_problems([inner, "contract", outer])
    assert len(problems) == 1
    assert problems[0].inner == 0
    assert problems[0].outer == 2
    assert problems[0].message == f"{inner} is outside {outer}: {loss}"


def test_the_two_losses_the_issue_names() -> None:
    [cors] = order_problems(["rate_limit", "cors"])
    assert "429 responses carry no CORS headers: browsers cannot read them" in cors.message
    [logs] = order_problems(["compression", "access_log"])
    assert "the bytes logged are not the bytes sent" in logs.message


def test_pairs_without_a_loss_do_not_warn() -> None:
    # Every order of two that no rule names is fine, e.g. timeout outside compression.
    ruled = {(inner, outer) for outer, inner, _ in ORDER_RULES}
    for first, second in itertools.permutations(CANONICAL_ORDER, 2):
        expected = 1 if (first, second) in ruled else 0
        expected += second in OUTERMOST_RULES  # it is second: it should be first
        assert len(order_problems([first, second])) == expected, (first, second)


def test_problems_come_in_list_order_and_repeat_per_occurrence() -> None:
    problems = order_problems(["compression", "rate_limit", "cors", "access_log", "compression"])
    assert [(p.inner, p.outer) for p in problems] == [(0, 1), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_wrap_warns_once_per_departure() -> None:
    pipeline = Pipeline([RateLimit, Compression, CORS, AccessLog], registry=FAKES)
    assert pipeline.warnings[0] == (
        "rate_limit is outside cors: 429 responses carry no CORS headers: browsers cannot "
        "read them (layer 1 of 4, cors is layer 3)"
    )
    with pytest.warns(PipelineWarning) as caught:
        pipeline.wrap(app)
    assert [str(w.message) for w in caught] == pipeline.warnings
    assert len(caught) == 4


def test_the_config_page_names_every_loss() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "config.md").read_text()
    for outer, inner, loss in ORDER_RULES:
        assert f"| `{inner}` outside `{outer}` | {loss} |" in page, (outer, inner)


@pytest.mark.anyio
async def test_server_timing_listed_first_times_every_layer_below() -> None:
    from asgikit.testing import request

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    served = Pipeline(["server_timing", "request_id", "cors"]).wrap(app)
    response = await request(served)
    names = [item.split(";")[0].strip() for item in response.header("server-timing").split(",")]
    assert names == ["request_id", "cors", "app", "total"]
    with pytest.warns(PipelineWarning, match="^server_timing is not first"):
        inside = Pipeline(["request_id", "server_timing"]).wrap(app)
    alone = await request(inside)
    assert [i.split(";")[0] for i in alone.header("server-timing").split(",")] == ["total"]


def test_server_timing_anywhere_but_first_warns() -> None:
    assert Pipeline(["server_timing", "request_id"]).warnings == []
    assert Pipeline(["request_id", "cors", "server_timing"]).warnings == [
        "server_timing is not first: it times only the total, not each layer and the app "
        "(layer 3 of 3)"
    ]
    for name, loss in OUTERMOST_RULES.items():
        assert name in CANONICAL_ORDER[:1] and loss
