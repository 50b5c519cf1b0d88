"""The storage contract: opaque bytes under string keys.

A token store knows nothing about OAuth. funnel-auth serializes token sets and client
registrations to bytes and picks the keys; a store only keeps them safe.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

__all__ = ["TokenStore"]


@runtime_checkable
class TokenStore(Protocol):
    """An async key → bytes store for secrets.

    Keys are non-empty strings of printable ASCII (a store may restrict them further and
    says so). Every method may raise :class:`~funnel_tokenstore.TokenStoreError`.
    """

    async def get(self, key: str) -> bytes | None:
        """Return the value stored under ``key``, or ``None`` when there is none."""
        ...

    async def set(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``, replacing any previous value atomically."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""
        ...

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """Hold an exclusive lock named ``key`` for a read-modify-write.

        The lock spans every process that shares the store where the backend is shared
        (file, keyring), and this process only for the memory store. funnel-auth holds it
        around a token refresh, re-reading the stored tokens inside it, so that two
        processes never both spend the same rotating refresh token.
        """
        ...
