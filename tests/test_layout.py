"""The layout's rules, checked on the source: no middleware imports another, no import
cycles (type-only imports included), small modules, and lazy loading."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MIDDLEWARE = ROOT / "middleware"
MAX_MODULE_LINES = 450
MAX_CALL_LINES = 40


def _module_name(path: Path) -> str:
    if path.is_relative_to(MIDDLEWARE):
        parts = ["asgikit", "middleware", *path.relative_to(MIDDLEWARE).with_suffix("").parts]
    else:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    files = [*(ROOT / "asgikit").rglob("*.py"), *MIDDLEWARE.rglob("*.py")]
    return {_module_name(path): path for path in sorted(files)}


SOURCES = _sources()


def _imports(name: str, path: Path) -> set[str]:
    """Every asgikit module *name* imports, anywhere in the file (functions and
    ``if TYPE_CHECKING:`` blocks too), resolved to a module that exists."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from package import submodule`` depends on the submodule, not on the
            # package's __init__; ``from module import name`` on the module.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in SOURCES else base
                for alias in node.names
            ]
        for target in targets:
            while target and target not in SOURCES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in SOURCES.items()}


def _middleware_package(name: str) -> str | None:
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["asgikit", "middleware"] else None


def test_no_middleware_imports_another() -> None:
    crossings = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if _middleware_package(name)
        and _middleware_package(target)
        and _middleware_package(name) != _middleware_package(target)
    )
    assert crossings == []


def test_the_kit_imports_no_middleware() -> None:
    # asgikit.config and the registry name middleware by import string, never import them.
    crossings = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if not _middleware_package(name)
        and _middleware_package(target)
        and name != "asgikit.middleware"
    )
    assert crossings == []


def _cycle() -> list[str] | None:
    """One import cycle among asgikit's modules, or None (depth-first search)."""
    done: set[str] = set()
    for start in GRAPH:
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        on_path: dict[str, list[str]] = {}
        while stack:
            name, path = stack.pop()
            if name in done:
                continue
            for target in sorted(GRAPH[name]):
                if target in path:
                    return [*path[path.index(target) :], target]
                if target not in done:
                    stack.append((target, [*path, target]))
            on_path[name] = path
        done.update(on_path)
    return None


def test_no_import_cycles_anywhere() -> None:
    # A package's __init__ importing its own submodules is how packages work; a
    # submodule importing its package's __init__ back would be a cycle and is reported.
    assert _cycle() is None


def test_the_cycle_search_finds_a_cycle() -> None:
    GRAPH["asgikit.paths"].add("asgikit.scopes")
    GRAPH["asgikit.scopes"].add("asgikit.paths")
    try:
        assert _cycle() is not None
    finally:
        GRAPH["asgikit.paths"].discard("asgikit.scopes")
        GRAPH["asgikit.scopes"].discard("asgikit.paths")


def test_no_module_over_the_line_budget() -> None:
    long = {
        name: lines
        for name, path in SOURCES.items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_call_method_over_the_line_budget() -> None:
    long = {}
    for name, path in SOURCES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef) and node.name == "__call__":
                assert node.end_lineno is not None
                if (lines := node.end_lineno - node.lineno + 1) > MAX_CALL_LINES:
                    long[f"{name}:{node.lineno}"] = lines
    assert long == {}


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("asgikit.middleware.cors", "opentelemetry"),
        ("asgikit.middleware.cors", "brotli"),
        ("asgikit.middleware.rate_limit", "opentelemetry"),
        ("asgikit.middleware.timeout", "opentelemetry"),
        ("asgikit.middleware.proxy_headers", "opentelemetry"),
        ("asgikit.middleware.access_log", "brotli"),
        ("asgikit.middleware.body_limit", "brotli"),
        ("asgikit.middleware.body_limit", "opentelemetry"),
        ("asgikit.middleware.trusted_host", "opentelemetry"),
        ("asgikit.middleware.https_redirect", "opentelemetry"),
        ("asgikit.middleware", "opentelemetry"),
    ],
)
def test_a_middleware_loads_only_what_it_needs(module: str, absent: str) -> None:
    code = f"import sys, {module}; print({absent!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
