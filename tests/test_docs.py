"""The documentation stays true: its code runs and the contract page names every rule."""

import re
from pathlib import Path

import pytest

from asgikit.config import ConfigError, load_config
from asgikit.contract import RULES

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
TOML_FENCE = re.compile(r"^```toml\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(fence: re.Pattern[str] = FENCE) -> list[tuple[str, int, str]]:
    blocks = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in fence.finditer(text):
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


def whole_config_files() -> list[tuple[str, int, str]]:
    """The ```toml blocks that are whole config files (they name an app)."""
    return [
        block
        for block in python_blocks(TOML_FENCE)
        if re.search(r"^app = ", block[2], re.MULTILINE) and "[[middleware]]" in block[2]
    ]


@pytest.mark.parametrize(
    ("page", "line", "text"),
    whole_config_files(),
    ids=[f"{page}:{line}" for page, line, _ in whole_config_files()],
)
def test_config_files_in_the_docs_load(page: str, line: int, text: str, tmp_path: Path) -> None:
    path = tmp_path / "asgikit.toml"
    path.write_text(text, encoding="utf-8")
    if "on purpose" in text:  # a page showing what a mistake looks like
        with pytest.raises(ConfigError):
            load_config(path, environ={})
        return
    try:
        load_config(path, environ={})  # every ${VAR} the docs use has a default
    except ConfigError as exc:
        pytest.fail(f"docs/{page}:{line}: {exc}")
