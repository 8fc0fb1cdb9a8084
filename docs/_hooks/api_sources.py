"""A mkdocs hook: lay the package out as the wheel installs it, for the API pages.

The repository keeps the middleware in ``middleware/`` and the wheel installs them as
``asgikit.middleware``; mkdocstrings reads sources from directories (following symbolic links back
to where they point), so this copies ``asgikit/`` to ``build/api-src/asgikit/`` and
``middleware/`` into it, before the pages are rendered. ``build/`` is git-ignored.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "build" / "api-src"


def _lay_out() -> None:
    package = TARGET / "asgikit"
    if TARGET.exists():
        shutil.rmtree(TARGET)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "asgikit", package, ignore=ignore)
    shutil.copytree(ROOT / "middleware", package / "middleware", ignore=ignore)


# Laid out when mkdocs loads this hook, while it reads mkdocs.yml: mkdocstrings looks at
# its source paths in its own on_config, which runs before any hook's on_config.
_lay_out()


def on_config(config: Any) -> Any:
    _lay_out()  # again for each rebuild of `mkdocs serve`, with the sources as they are
    return config
