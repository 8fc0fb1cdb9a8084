"""A frozen copy of asgikit at an earlier commit, importable beside the current one.

python -m benchmarks.frozen REV DIR

Writes ``DIR/asgikit_base`` (the package at git revision ``REV``, with its middleware
inside, as the wheel lays them out) and ``DIR/benchmarks_base`` (its benchmarks), every
import of ``asgikit`` and ``benchmarks`` rewritten to the ``_base`` names. With
``PYTHONPATH=DIR`` both versions load in one process, so one interleaved run can time
them side by side::

    python -m benchmarks.frozen 57f3212 /tmp/base
    PYTHONPATH=/tmp/base python -m benchmarks.e2e \\
        --case now=benchmarks.stacks:asgikit_stack \\
        --case before=benchmarks_base.stacks:asgikit_stack ...

The copy is for measuring only: nothing in it is installed or committed.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["freeze", "main"]

_NAMES = re.compile(r"\b(asgikit|benchmarks)(?=[.:\s,)\]'\"]|$)", re.MULTILINE)


def _rename(text: str) -> str:
    """Every reference to the two packages, by import or import string, renamed."""
    return _NAMES.sub(lambda match: match.group(1) + "_base", text)


def freeze(revision: str, target: Path, repo: Path | None = None) -> Path:
    """Write the frozen copy of ``revision`` into ``target`` (emptied first)."""
    repo = repo or Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "archive", revision, "asgikit", "middleware", "benchmarks"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    if target.exists():
        shutil.rmtree(target)
    source = target / "source"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")
    shutil.copytree(source / "asgikit", target / "asgikit_base")
    shutil.copytree(source / "middleware", target / "asgikit_base" / "middleware")
    shutil.copytree(source / "benchmarks", target / "benchmarks_base")
    shutil.rmtree(source)
    for path in target.rglob("*.py"):
        path.write_text(_rename(path.read_text(encoding="utf-8")), encoding="utf-8")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.frozen")
    parser.add_argument("revision", help="a git revision of this repository")
    parser.add_argument("target", type=Path, help="the directory to write (emptied first)")
    args = parser.parse_args(argv)
    target = freeze(args.revision, args.target)
    print(f"asgikit at {args.revision}: PYTHONPATH={target} imports asgikit_base")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
