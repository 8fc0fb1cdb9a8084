"""asgikit: observability and middleware toolkit for ASGI stacks."""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Final

from asgikit.contract import ContractViolation, ContractWarning, enforce
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from asgikit.config import app_from_env, build, load_config
    from asgikit.pipeline import Pipeline

WORKERS_ENV: Final = "ASGIKIT_WORKERS"
"""The environment variable ``asgikit serve`` sets to its number of worker processes, so
that middleware keeping state per process (the inspector) can say so."""

try:
    __version__ = version("asgikit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "WORKERS_ENV",
    "ASGIApp",
    "ContractViolation",
    "ContractWarning",
    "Message",
    "Pipeline",
    "Receive",
    "Scope",
    "Send",
    "__version__",
    "app_from_env",
    "build",
    "enforce",
    "load_config",
]

# The config machinery (msgspec, the registry) loads on first use, so that importing
# asgikit for the contract checker or the middleware stays cheap.
_LAZY = {
    "Pipeline": "asgikit.pipeline",
    "app_from_env": "asgikit.config",
    "build": "asgikit.config",
    "load_config": "asgikit.config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asgikit' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
