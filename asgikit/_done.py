"""DONE: an awaitable that is already done, for a plain-function ``send`` that holds a
message back (cheaper than a coroutine; one shared object)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Final

__all__ = ["DONE"]


class _Done:
    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]  # exhausted at once: the await returns None


DONE: Final = _Done()
