"""Every test of Starlette's suite that fails on purpose is a documented difference."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.starlette_suite.conftest import DIFFERENCES

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _test_names(file: str) -> set[str]:
    tree = ast.parse((HERE / file).read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


@pytest.mark.parametrize("key", sorted(DIFFERENCES))
def test_each_difference_names_a_test_of_the_suite_and_is_listed_in_its_page(key: str) -> None:
    file, _, test = key.partition("::")
    name, _, params = test.partition("[")
    assert name in _test_names(file), f"{key}: no such test in {file}"
    source = (HERE / file).read_text(encoding="utf-8")
    for param in filter(None, params.rstrip("]").split("-")):
        assert param in source, f"{key}: no parameter {param!r} in {file}"
    page, _, anchor = DIFFERENCES[key][0].partition("#")
    text = (ROOT / page).read_text(encoding="utf-8")
    headings = [
        re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    ]
    assert anchor in headings, f"{page} has no section #{anchor}"
    assert f"`{test}`" in text, f"{page} does not list {test}"
