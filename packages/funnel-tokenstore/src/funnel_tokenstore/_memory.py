"""A token store that lives and dies with the process."""

from __future__ import annotations

__all__ = ["MemoryTokenStore"]


class MemoryTokenStore:
    """Keeps values in a dict: for tests, CI, and users who want nothing on disk."""

    def __init__(self) -> None:
        self._values: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key``, or ``None``."""
        return self._values.get(key)

    async def set(self, key: str, value: bytes) -> None:
        """Store a copy of ``value`` under ``key``."""
        self._values[key] = bytes(value)

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        self._values.pop(key, None)

    def __repr__(self) -> str:
        # Never show values: they are secrets.
        return f"MemoryTokenStore(keys={len(self._values)})"
