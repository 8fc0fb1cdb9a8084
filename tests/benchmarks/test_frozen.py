"""benchmarks.frozen: an earlier commit, importable beside the current package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.frozen import _rename, freeze

ROOT = Path(__file__).resolve().parent.parent.parent


def test_references_to_both_packages_are_renamed_and_nothing_else() -> None:
    text = (
        "from asgikit.middleware import X\nimport asgikit\n"
        '"asgikit.middleware.cors:CORSMiddleware"\nfrom benchmarks.harness import run\n'
        "asgikitty = 1\n"
    )
    assert _rename(text) == (
        "from asgikit_base.middleware import X\nimport asgikit_base\n"
        '"asgikit_base.middleware.cors:CORSMiddleware"\nfrom benchmarks_base.harness import run\n'
        "asgikitty = 1\n"
    )


def test_the_frozen_copy_imports_beside_the_current_package(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    target = freeze(head, tmp_path / "frozen", ROOT)
    code = (
        "import sys, asgikit_base.middleware as old, asgikit.middleware as new;"
        "print(old.CORSMiddleware.__module__, new.CORSMiddleware.__module__,"
        " 'asgikit_base.middleware.cors' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["asgikit_base.middleware.cors", "asgikit.middleware.cors", "True"]
