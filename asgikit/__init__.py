"""asgikit: observability and middleware toolkit for ASGI stacks."""

from importlib.metadata import PackageNotFoundError, version

from asgikit.contract import ContractViolation, ContractWarning, enforce
from asgikit.types import ASGIApp, Message, Receive, Scope, Send

try:
    __version__ = version("asgikit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "ASGIApp",
    "ContractViolation",
    "ContractWarning",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "__version__",
    "enforce",
]
