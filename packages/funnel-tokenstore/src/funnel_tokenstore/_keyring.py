"""A token store in the OS keychain, through the ``keyring`` library.

Theory of operation. Each key is one keychain entry (service: the store's service name,
username: the key) whose password is text, either

- ``b64:<base64 of the value>`` when that fits in ``max_entry_chars``, or
- a manifest ``chunks:v1:<generation>:<count>:<length>`` when it does not: the base64
  text is cut into ``count`` pieces of at most ``max_entry_chars`` characters, stored
  under the service ``<service>/chunks`` (its own namespace, so no key can collide with
  a chunk) as ``<key>/<generation>/<index>``. ``generation`` is 16 random hex digits,
  fresh for every write.

A write first stores the new chunks under their fresh names, then replaces the manifest
(the one step that switches readers from the old value to the new), then deletes the old
chunks. A reader therefore finds either the old value or the new one, whole. A reader
that loses the race (it read the old manifest, then the writer deleted the old chunks)
sees a missing chunk, re-reads the manifest, finds it changed and starts over; a chunk
missing under an unchanged manifest is corruption. Writers (set, delete) of one service
are serialized across processes by a lock file in the funnel home, so two writers never
delete each other's chunks; reads take no lock. A write that fails before the manifest
swap removes the chunks it wrote; the old value stays in place.

Size limit. The default ``max_entry_chars`` is 1024, sized for the strictest common
backend: Windows Credential Manager keeps at most 2560 bytes of blob per credential
(``CRED_MAX_CREDENTIAL_BLOB_SIZE``) and keyring writes it as UTF-16, two bytes per
character, so 1280 characters at most; 1024 leaves headroom below that edge. macOS
Keychain and Secret Service take far more, at the cost of a few extra entries for large
values (a typical OAuth token set needs 2 to 4).

Every keyring call is blocking (D-Bus, Security framework, Win32) and runs in a worker
thread, at most four at a time per store, bounded by ``timeout``. keyring has no locks:
``lock(key)`` is a lock file in the funnel home, shared by every process of the user.
An entry whose text is not in the format above raises TokenStoreCorrupt on read; a
``set`` over it replaces it (the caller asked for exactly that, and no other key depends
on it) and logs a WARNING, so it is never overwritten silently.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import anyio
import keyring
import keyring.errors

from funnel_tokenstore._errors import (
    TokenStoreCorrupt,
    TokenStoreError,
    TokenStoreLockTimeout,
    TokenStoreUnavailable,
)
from funnel_tokenstore._filelock import ensure_private_dir, hold_lock, locked
from funnel_tokenstore._home import funnel_home
from funnel_tokenstore._keys import check_key, digest

__all__ = [
    "DEFAULT_MAX_ENTRY_CHARS",
    "DEFAULT_SERVICE",
    "KeyringBackendLike",
    "KeyringTokenStore",
    "backend_name",
]

# One logger for the package: the private module names are not part of the contract.
logger = logging.getLogger("funnel_tokenstore")

DEFAULT_SERVICE = "mcp-funnel"
DEFAULT_MAX_ENTRY_CHARS = 1024
_MIN_ENTRY_CHARS = 64  # a manifest must fit in one entry
_INLINE = "b64:"
_MANIFEST = "chunks:v1:"
_READ_ATTEMPTS = 5
_THREADS_PER_STORE = 4
_T = TypeVar("_T")


class KeyringBackendLike(Protocol):
    """What the store needs of a keyring backend (any ``keyring.backend.KeyringBackend``)."""

    def get_password(self, service: str, username: str) -> str | None:
        """Return the password, or ``None``."""
        ...

    def set_password(self, service: str, username: str, password: str) -> None:
        """Store the password."""
        ...

    def delete_password(self, service: str, username: str) -> None:
        """Delete the password; raise ``PasswordDeleteError`` when there is none."""
        ...


@dataclass(frozen=True)
class _Manifest:
    generation: str
    count: int
    length: int


def backend_name(backend: object) -> str:
    """Return the dotted class name of a keyring backend, for messages."""
    cls = type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"


class KeyringTokenStore:
    """Keeps values in the OS keychain (macOS Keychain, Secret Service, Windows).

    Args:
        service: The keychain service name the entries are filed under.
        backend: A keyring backend to use instead of ``keyring.get_keyring()`` (tests,
            or a backend the application configured itself).
        max_entry_chars: The longest text stored in one entry; longer values are split
            into chunks. At least 64.
        lock_dir: Where the lock files live; ``<funnel home>/locks`` when omitted.
        timeout: Seconds a read may take, and that a write may wait for another writer
            (a write is bounded by twice this).
        lock_timeout: Seconds :meth:`lock` waits by default.

    Raises:
        ValueError: ``max_entry_chars`` is below 64.
    """

    def __init__(
        self,
        *,
        service: str = DEFAULT_SERVICE,
        backend: KeyringBackendLike | None = None,
        max_entry_chars: int = DEFAULT_MAX_ENTRY_CHARS,
        lock_dir: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        lock_timeout: float = 60.0,
    ) -> None:
        if max_entry_chars < _MIN_ENTRY_CHARS:
            raise ValueError(f"max_entry_chars must be at least {_MIN_ENTRY_CHARS}")
        self._service = service
        self._chunk_service = f"{service}/chunks"
        self._backend: KeyringBackendLike = keyring.get_keyring() if backend is None else backend
        self._max = max_entry_chars
        directory = Path(lock_dir) if lock_dir is not None else funnel_home() / "locks"
        self._lock_dir = Path(os.path.abspath(directory))
        self._timeout = timeout
        self._lock_timeout = lock_timeout
        self._limiter: anyio.CapacityLimiter | None = None
        self._write_lock: anyio.Lock | None = None
        self._key_locks: dict[str, anyio.Lock] = {}

    @property
    def service(self) -> str:
        """The keychain service name."""
        return self._service

    @property
    def backend(self) -> KeyringBackendLike:
        """The keyring backend in use."""
        return self._backend

    @property
    def lock_dir(self) -> Path:
        """The directory of this store's lock files."""
        return self._lock_dir

    def __repr__(self) -> str:
        return (
            f"KeyringTokenStore(service={self._service!r}, backend={backend_name(self._backend)!r})"
        )

    async def get(self, key: str) -> bytes | None:
        """Return the value stored under ``key``, or ``None`` when there is none.

        Raises:
            TokenStoreCorrupt: The entry cannot be decoded.
            TokenStoreUnavailable: The keychain cannot be used or did not answer in time.
        """
        check_key(key)
        return await self._in_thread(functools.partial(self._read, key), self._timeout)

    async def set(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``, replacing any previous value (and its chunks).

        Raises:
            TokenStoreUnavailable: The keychain cannot be used or did not answer in time.
            TokenStoreLockTimeout: Another writer kept the store's write lock too long.
        """
        check_key(key)
        encoded = base64.b64encode(bytes(value)).decode("ascii")
        await self._write(key, encoded)

    async def delete(self, key: str) -> None:
        """Remove ``key`` and all its chunks; a missing key is not an error.

        Raises:
            TokenStoreUnavailable: The keychain cannot be used or did not answer in time.
            TokenStoreLockTimeout: Another writer kept the store's write lock too long.
        """
        check_key(key)
        await self._write(key, None)

    @asynccontextmanager
    async def lock(self, key: str, *, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold the lock named ``key`` across every process of this user and service.

        Args:
            key: The lock's name (a valid store key; usually the key it protects).
            timeout: Seconds to wait; the store's ``lock_timeout`` when omitted.

        Raises:
            TokenStoreLockTimeout: The lock was not acquired in time.
            TokenStoreUnavailable: The lock file cannot be created.
        """
        check_key(key)
        await anyio.to_thread.run_sync(ensure_private_dir, self._lock_dir)
        local = self._key_locks.setdefault(key, anyio.Lock())
        async with hold_lock(
            self._lock_dir / f"keyring-{digest(self._service, key)}.lock",
            timeout=self._lock_timeout if timeout is None else timeout,
            what=f"lock {key!r} of keychain service {self._service!r}",
            local=local,
        ):
            yield

    # -- async shell ------------------------------------------------------------------

    async def _in_thread(self, operation: Callable[[], _T], timeout: float) -> _T:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(_THREADS_PER_STORE)
        with anyio.move_on_after(timeout):
            # Abandoned on timeout: a hung keychain call cannot be interrupted, and the
            # write lock it may hold is released by its thread when it finally returns.
            return await anyio.to_thread.run_sync(
                operation, abandon_on_cancel=True, limiter=self._limiter
            )
        # Only reached when the deadline cancelled the wait.
        raise TokenStoreUnavailable(
            f"the keychain ({backend_name(self._backend)}) did not answer within "
            f"{timeout:g} s; the outcome of the operation is unknown"
        )

    async def _write(self, key: str, encoded: str | None) -> None:
        if self._write_lock is None:
            self._write_lock = anyio.Lock()
        with anyio.move_on_after(self._timeout) as scope:
            await self._write_lock.acquire()
        if scope.cancelled_caught:
            raise TokenStoreLockTimeout(
                f"keychain writes of service {self._service!r} are busy in this process; "
                f"gave up after {self._timeout:g} s"
            )
        try:
            await anyio.to_thread.run_sync(ensure_private_dir, self._lock_dir)
            await self._in_thread(
                functools.partial(self._locked_write, key, encoded), 2 * self._timeout
            )
        finally:
            self._write_lock.release()

    # -- blocking core: runs in worker threads ----------------------------------------

    def _call(self, what: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except keyring.errors.KeyringLocked as exc:
            raise TokenStoreUnavailable(f"the keychain is locked; cannot {what}") from exc
        except keyring.errors.NoKeyringError as exc:
            raise TokenStoreUnavailable(
                f"no usable keychain backend; cannot {what}. Use the file store "
                "(MCP_FUNNEL_TOKEN_STORE=file) or install a keychain"
            ) from exc
        except keyring.errors.KeyringError as exc:
            raise TokenStoreUnavailable(f"the keychain failed to {what}: {exc}") from exc
        except Exception as exc:
            # Backends let their own errors through (secretstorage, jeepney's D-Bus,
            # pywin32): whatever they are, this keychain cannot be used right now.
            raise TokenStoreUnavailable(
                f"the keychain failed to {what}: {type(exc).__name__}: {exc}"
            ) from exc

    def _get(self, service: str, username: str) -> str | None:
        return self._call(
            f"read {username!r}", lambda: self._backend.get_password(service, username)
        )

    def _set(self, service: str, username: str, text: str) -> None:
        self._call(
            f"store {username!r}", lambda: self._backend.set_password(service, username, text)
        )

    def _delete(self, service: str, username: str) -> None:
        def delete() -> None:
            try:
                self._backend.delete_password(service, username)
            except keyring.errors.PasswordDeleteError:
                # Raised for "no such entry" and for real failures alike: tell them apart.
                if self._backend.get_password(service, username) is not None:
                    raise

        self._call(f"delete {username!r}", delete)

    def _corrupt(self, key: str, why: str) -> TokenStoreCorrupt:
        return TokenStoreCorrupt(
            f"the keychain entry {key!r} of service {self._service!r} cannot be read: {why}; "
            "delete it (TokenStore.delete or your keychain tool) and store it again"
        )

    def _parse_head(self, key: str, head: str) -> str | _Manifest:
        """Return the inline base64 text, or the manifest of a chunked value."""
        if head.startswith(_INLINE):
            return head[len(_INLINE) :]
        if head.startswith(_MANIFEST):
            fields = head[len(_MANIFEST) :].split(":")
            if len(fields) == 3:
                generation, count, length = fields
                if (
                    len(generation) == 16
                    and all(c in "0123456789abcdef" for c in generation)
                    and count.isdigit()
                    and length.isdigit()
                    and int(count) >= 1
                ):
                    return _Manifest(generation, int(count), int(length))
            raise self._corrupt(key, "its chunk manifest is malformed")
        raise self._corrupt(key, "it was not written by funnel-tokenstore")

    def _chunk_names(self, key: str, manifest: _Manifest) -> list[str]:
        return [f"{key}/{manifest.generation}/{i}" for i in range(manifest.count)]

    def _decode(self, key: str, text: str) -> bytes:
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise self._corrupt(key, "its text is not base64") from None

    def _read(self, key: str) -> bytes | None:
        for _ in range(_READ_ATTEMPTS):
            head = self._get(self._service, key)
            if head is None:
                return None
            entry = self._parse_head(key, head)
            if isinstance(entry, str):
                return self._decode(key, entry)
            parts: list[str] = []
            for name in self._chunk_names(key, entry):
                part = self._get(self._chunk_service, name)
                if part is None:
                    break
                parts.append(part)
            else:
                text = "".join(parts)
                if len(text) != entry.length:
                    raise self._corrupt(key, "its chunks do not add up to the recorded length")
                return self._decode(key, text)
            # A chunk is missing: a writer may have swapped the manifest since we read it.
            if self._get(self._service, key) == head:
                raise self._corrupt(
                    key, f"chunk {len(parts)} of {entry.count} is missing from the keychain"
                )
            logger.debug("keychain entry %r changed while being read; reading it again", key)
        raise TokenStoreUnavailable(
            f"the keychain entry {key!r} kept changing while being read; try again"
        )

    def _old_chunks(self, key: str, head: str | None) -> list[str]:
        if head is None:
            return []
        try:
            entry = self._parse_head(key, head)
        except TokenStoreCorrupt:
            logger.warning(
                "replacing the unreadable keychain entry %r of service %r", key, self._service
            )
            return []
        return [] if isinstance(entry, str) else self._chunk_names(key, entry)

    def _layout(self, key: str, encoded: str) -> tuple[str, list[tuple[str, str]]]:
        """Return the head entry's text and the ``(name, text)`` chunks for ``encoded``."""
        if len(_INLINE) + len(encoded) <= self._max:
            return _INLINE + encoded, []
        pieces = [encoded[i : i + self._max] for i in range(0, len(encoded), self._max)]
        manifest = _Manifest(secrets.token_hex(8), len(pieces), len(encoded))
        head = f"{_MANIFEST}{manifest.generation}:{manifest.count}:{manifest.length}"
        return head, list(zip(self._chunk_names(key, manifest), pieces, strict=True))

    def _locked_write(self, key: str, encoded: str | None) -> None:
        with locked(
            self._lock_dir / f"keyring-{digest(self._service)}-writes.lock",
            timeout=self._timeout,
            what=f"keychain writes of service {self._service!r}",
        ):
            started = time.monotonic()
            old_head = self._get(self._service, key)
            old_chunks = self._old_chunks(key, old_head)
            if encoded is None:
                if old_head is None:
                    return
                # The head goes first: from then on no reader looks for the chunks.
                self._delete(self._service, key)
                new_count = 0
            else:
                head, chunks = self._layout(key, encoded)
                self._store_new(key, head, chunks)
                new_count = len(chunks)
            self._remove_chunks(key, old_chunks)
            logger.debug(
                "%s keychain entry %r (%d chunks, was %d) in %.3f s",
                "deleted" if encoded is None else "stored",
                key,
                new_count,
                len(old_chunks),
                time.monotonic() - started,
            )

    def _store_new(self, key: str, head: str, chunks: list[tuple[str, str]]) -> None:
        written: list[str] = []
        try:
            for name, text in chunks:
                self._set(self._chunk_service, name, text)
                written.append(name)
            self._set(self._service, key, head)
        except BaseException:
            # The old value is still current unless the head write landed after all.
            with contextlib.suppress(TokenStoreError):
                if self._get(self._service, key) != head:
                    self._remove_chunks(key, written)
            raise

    def _remove_chunks(self, key: str, names: list[str]) -> None:
        failed = 0
        for name in names:
            try:
                self._delete(self._chunk_service, name)
            except TokenStoreError:
                failed += 1
        if failed:
            logger.warning(
                "could not remove %d unused chunk entries of %r from the keychain service "
                "%r; they are harmless and can be deleted by hand",
                failed,
                key,
                self._chunk_service,
            )
