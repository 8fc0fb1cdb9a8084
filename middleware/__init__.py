"""The asgikit middleware."""

__all__: list[str] = []
