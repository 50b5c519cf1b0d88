"""A token store that lives and dies with the process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from funnel_tokenstore._keys import check_key

__all__ = ["MemoryTokenStore"]


class MemoryTokenStore:
    """Keeps values in a dict: for tests, CI, and users who want nothing on disk."""

    def __init__(self) -> None:
        self._values: dict[str, bytes] = {}
        self._locks: dict[str, anyio.Lock] = {}

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key``, or ``None``."""
        check_key(key)
        return self._values.get(key)

    async def set(self, key: str, value: bytes) -> None:
        """Store a copy of ``value`` under ``key``."""
        check_key(key)
        self._values[key] = bytes(value)

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        check_key(key)
        self._values.pop(key, None)

    async def compare_and_set(self, key: str, expected: bytes, value: bytes) -> bool:
        """Store ``value`` only if ``key`` still holds ``expected``; whether it did."""
        check_key(key)
        if self._values.get(key) != bytes(expected):
            return False
        self._values[key] = bytes(value)
        return True

    async def keys(self) -> list[str]:
        """Every key with a value, sorted."""
        return sorted(self._values)

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        """Hold the in-process lock named ``key``."""
        check_key(key)
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            yield

    def __repr__(self) -> str:
        # Never show values: they are secrets.
        return f"MemoryTokenStore(keys={len(self._values)})"
