"""The documentation stays true: its code runs and the contract page names every rule."""

import re
from pathlib import Path

import pytest

from asgikit.contract import RULES

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[tuple[str, int, str]]:
    blocks = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((page.name, line, match.group(1)))
    return blocks


@pytest.mark.parametrize(
    ("page", "line", "code"),
    python_blocks(),
    ids=[f"{page}:{line}" for page, line, _ in python_blocks()],
)
def test_python_examples_in_the_docs_run(page: str, line: int, code: str) -> None:
    if "# docs: not run" in code:
        pytest.skip("a fragment, marked as such in the page")
    namespace: dict[str, object] = {"__name__": f"docs_{page}_{line}"}
    exec(compile(code, f"docs/{page}:{line}", "exec"), namespace)


def test_contract_page_has_a_row_for_every_rule() -> None:
    page = (DOCS / "contract.md").read_text(encoding="utf-8")
    missing = [rule for rule in RULES if f"| {rule} |" not in page]
    assert not missing, f"docs/contract.md has no table row for {missing}"
