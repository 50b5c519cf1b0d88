"""Encryption at rest for any token store: every value sealed before it is stored.

Theory of operation. :class:`EncryptedTokenStore` wraps another store. ``set`` seals the
value with AES-256-GCM (:class:`~funnel_tokenstore.StateKeys`) under a subkey derived for
this purpose (``keys.derive("token store")``), with the store key as associated data: a
sealed value copied under another key, or into another funnel part that uses the same
``FUNNEL_STATE_KEY``, does not open there. ``get`` opens it again; a value that fails to
open (tampered with, truncated, sealed under a key no longer configured) raises
:class:`~funnel_tokenstore.TokenStoreCorrupt` and is left exactly as it is.

Rotation is lazy: a value sealed under an older key is re-sealed under the current one
when it is read, and :meth:`EncryptedTokenStore.rotate` re-seals every value at once for
stores that can list their keys. The write-back is a compare-and-set on the inner store
(memory, file and Redis have one), so a value another process wrote meanwhile is never
replaced by the older one just read; an inner store without compare-and-set (the
keychain) is not rewritten on read.

Migration: a value that is not sealed at all (it does not start with the sealed format's
``fs1`` marker), as values stored before a key was configured are, is returned as it is
and re-sealed in place; ``migrate_plaintext=False`` refuses such values instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

from funnel_tokenstore._crypto import _MAGIC as _SEALED_MARK
from funnel_tokenstore._crypto import StateKeys
from funnel_tokenstore._errors import TokenStoreConfigError, TokenStoreCorrupt, TokenStoreError
from funnel_tokenstore._keys import check_key
from funnel_tokenstore._protocol import TokenStore

__all__ = ["EncryptedTokenStore", "Rotation"]

# One logger for the package: the private module names are not part of the contract.
logger = logging.getLogger("funnel_tokenstore")

_PURPOSE = "token store"


@runtime_checkable
class _ComparesAndSets(Protocol):
    async def compare_and_set(self, key: str, expected: bytes, value: bytes) -> bool: ...


@runtime_checkable
class _ListsKeys(Protocol):
    async def keys(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Rotation:
    """What :meth:`EncryptedTokenStore.rotate` did.

    Attributes:
        resealed: Keys re-sealed under the current key (older key or unencrypted before).
        current: Keys already sealed under the current key (or rewritten meanwhile).
        corrupt: Keys whose value does not open; they were left unchanged.
    """

    resealed: tuple[str, ...]
    current: tuple[str, ...]
    corrupt: tuple[str, ...]


class EncryptedTokenStore:
    """Wraps any token store so that it only ever holds sealed values.

    Args:
        inner: The store that keeps the sealed bytes (file, Redis, memory, keychain).
        keys: The state keys; the first seals, every one opens.
        migrate_plaintext: Read a value that was stored unencrypted as it is and re-seal
            it; ``False`` raises :class:`~funnel_tokenstore.TokenStoreCorrupt` for it.
    """

    def __init__(
        self, inner: TokenStore, keys: StateKeys, *, migrate_plaintext: bool = True
    ) -> None:
        self._inner = inner
        self._keys = keys.derive(_PURPOSE)
        self._migrate = migrate_plaintext

    @property
    def inner(self) -> TokenStore:
        """The wrapped store."""
        return self._inner

    def __repr__(self) -> str:
        return f"EncryptedTokenStore({self._inner!r})"

    def _open(self, key: str, raw: bytes) -> tuple[bytes, bool]:
        """The value in ``raw`` and whether it needs re-sealing."""
        if not raw.startswith(_SEALED_MARK):
            if not self._migrate:
                raise TokenStoreCorrupt(
                    f"the value of {key!r} in {self._inner!r} is not encrypted "
                    "(migrate_plaintext is off); it was left unchanged"
                )
            return raw, True
        try:
            value = self._keys.open(raw, aad=key.encode())
        except TokenStoreCorrupt as exc:
            raise TokenStoreCorrupt(
                f"the value of {key!r} in {self._inner!r} cannot be opened: {exc}; "
                "it was left unchanged"
            ) from None
        return value, not self._keys.is_current(raw)

    async def _reseal(self, key: str, raw: bytes, value: bytes) -> bool:
        """Write ``value`` sealed under the current key if ``key`` still holds ``raw``."""
        if not isinstance(self._inner, _ComparesAndSets):
            return False
        sealed = self._keys.seal(value, aad=key.encode())
        done = await self._inner.compare_and_set(key, raw, sealed)
        if done:
            what = "an older state key" if raw.startswith(_SEALED_MARK) else "no key (unencrypted)"
            logger.info("re-sealed %r under the current state key (it was under %s)", key, what)
        return done

    async def get(self, key: str) -> bytes | None:
        """Return the opened value under ``key``, or ``None``; re-seal it if it is stale.

        Raises:
            TokenStoreCorrupt: The stored value does not open (left unchanged).
        """
        check_key(key)
        raw = await self._inner.get(key)
        if raw is None:
            return None
        value, stale = self._open(key, raw)
        if stale:
            try:
                await self._reseal(key, raw, value)
            except TokenStoreError as exc:
                # The read itself succeeded; the next read tries again.
                logger.warning("could not re-seal %r: %s", key, exc)
        return value

    async def set(self, key: str, value: bytes) -> None:
        """Seal ``value`` under the current key and store it under ``key``."""
        check_key(key)
        await self._inner.set(key, self._keys.seal(bytes(value), aad=key.encode()))

    async def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        await self._inner.delete(key)

    async def keys(self) -> list[str]:
        """The inner store's keys, sorted.

        Raises:
            TokenStoreConfigError: The inner store cannot list its keys (the keychain).
        """
        if not isinstance(self._inner, _ListsKeys):
            raise TokenStoreConfigError(f"{self._inner!r} cannot list its keys")
        return await self._inner.keys()

    async def rotate(self, keys: Iterable[str] | None = None) -> Rotation:
        """Re-seal every value (or those under ``keys``) that is not under the current key.

        Run it after putting a new key first in ``FUNNEL_STATE_KEY``; once it reports no
        corrupt key, the old key can be dropped. Unencrypted values are sealed too when
        ``migrate_plaintext`` is on.

        Args:
            keys: The store keys to rotate; every key of the inner store when omitted.

        Raises:
            TokenStoreConfigError: ``keys`` was omitted and the inner store cannot list
                its keys, or it cannot compare-and-set (nothing would be rewritten safely).
        """
        if not isinstance(self._inner, _ComparesAndSets):
            raise TokenStoreConfigError(
                f"{self._inner!r} has no compare-and-set: its values cannot be re-sealed safely"
            )
        names = await self.keys() if keys is None else [check_key(k) for k in keys]
        resealed: list[str] = []
        current: list[str] = []
        corrupt: list[str] = []
        for key in names:
            raw = await self._inner.get(key)
            if raw is None:
                continue
            try:
                value, stale = self._open(key, raw)
            except TokenStoreCorrupt as exc:
                logger.warning("%s", exc)
                corrupt.append(key)
                continue
            if stale and await self._reseal(key, raw, value):
                resealed.append(key)
            else:
                current.append(key)
        return Rotation(tuple(resealed), tuple(current), tuple(corrupt))

    @asynccontextmanager
    async def lock(self, key: str, *, timeout: float | None = None) -> AsyncIterator[None]:
        """The inner store's ``lock(key)`` (``timeout`` passed on when given)."""
        inner = cast(Any, self._inner)  # timeout is not part of the protocol
        lock = inner.lock(key) if timeout is None else inner.lock(key, timeout=timeout)
        async with lock:
            yield
