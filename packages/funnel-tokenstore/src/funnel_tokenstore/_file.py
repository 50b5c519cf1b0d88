"""A token store in one JSON file that several processes share safely.

Theory of operation. The file (default ``<funnel home>/tokens.json``) holds
``{"version": 1, "tokens": {key: base64 value}}``. Every operation, reads included, runs
in one worker thread while holding an exclusive OS lock on the sidecar
``tokens.json.lock``, so a read-modify-write of one process never interleaves with
another's and no write is lost. Same-process tasks queue on an ``anyio.Lock`` first. A
write goes to a fresh temporary file in the same directory (created 0600), is flushed and
fsynced, and replaces the old file with ``os.replace``: a reader, or a crash, sees the old
or the new file, never half of one.

``lock(key)`` is a second, independent lock file per key under ``tokens.json.locks/``.
A caller holding it may call ``get``/``set``/``delete``: those take only the sidecar lock,
always after any key lock, so the two can never deadlock.

Permissions (POSIX). A directory the store creates is 0700, the file 0600. A file found
readable or writable by others is tightened to 0600 with a WARNING rather than refused:
refusing would stop a working setup and undo nothing, while the warning tells the person
that the tokens in it may have been seen and should be revoked. A file owned by another
user is refused (TokenStoreUnavailable): we cannot tighten it, and its owner could plant
tokens. An existing directory is never chmod-ed (``MCP_FUNNEL_HOME`` may be any folder);
one that others can write to gets a WARNING. On Windows the file inherits the ACL of the
user's profile and modes are not checked.

A file that cannot be parsed raises TokenStoreCorrupt naming the path, for reads and
writes alike: a later ``set`` never replaces it, since that would drop every other token
in it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import anyio

from funnel_tokenstore._errors import (
    TokenStoreCorrupt,
    TokenStoreLockTimeout,
    TokenStoreUnavailable,
)
from funnel_tokenstore._filelock import ensure_private_dir, hold_lock, locked
from funnel_tokenstore._home import funnel_home
from funnel_tokenstore._keys import check_key, digest

__all__ = ["FileTokenStore"]

# One logger for the package: the private module names are not part of the contract.
logger = logging.getLogger("funnel_tokenstore")

_FORMAT_VERSION = 1
_T = TypeVar("_T")


class FileTokenStore:
    """Keeps values in one JSON file, shared safely by several processes.

    Args:
        path: The token file; ``<funnel home>/tokens.json`` when omitted (the funnel
            home is resolved once, here).
        timeout: Seconds to wait for the file's lock before an operation raises
            :class:`~funnel_tokenstore.TokenStoreLockTimeout`.
        lock_timeout: Seconds :meth:`lock` waits by default.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 10.0,
        lock_timeout: float = 60.0,
    ) -> None:
        raw = Path(path) if path is not None else funnel_home() / "tokens.json"
        self._path = Path(os.path.abspath(raw))
        self._lock_path = self._path.with_name(self._path.name + ".lock")
        self._key_lock_dir = self._path.with_name(self._path.name + ".locks")
        self._timeout = timeout
        self._lock_timeout = lock_timeout
        self._io_lock: anyio.Lock | None = None
        self._key_locks: dict[str, anyio.Lock] = {}
        self._warned_dirs: set[Path] = set()

    @property
    def path(self) -> Path:
        """The token file."""
        return self._path

    def __repr__(self) -> str:
        return f"FileTokenStore(path={str(self._path)!r})"

    async def get(self, key: str) -> bytes | None:
        """Return the value stored under ``key``, or ``None`` when there is none.

        Raises:
            TokenStoreCorrupt: The file cannot be parsed.
            TokenStoreUnavailable: The file cannot be read or is not trusted.
            TokenStoreLockTimeout: Another process held the file's lock too long.
        """
        check_key(key)
        tokens = await self._run(self._load)
        text = tokens.get(key)
        return None if text is None else base64.b64decode(text)

    async def set(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``, replacing the file atomically.

        Raises:
            TokenStoreCorrupt: The file cannot be parsed; it is left unchanged.
            TokenStoreUnavailable: The file cannot be read or written.
            TokenStoreLockTimeout: Another process held the file's lock too long.
        """
        check_key(key)
        encoded = base64.b64encode(bytes(value)).decode("ascii")
        await self._run(functools.partial(self._update, key, encoded))

    async def delete(self, key: str) -> None:
        """Remove ``key``; a missing key (or file) is not an error.

        Raises:
            TokenStoreCorrupt: The file cannot be parsed; it is left unchanged.
            TokenStoreUnavailable: The file cannot be read or written.
            TokenStoreLockTimeout: Another process held the file's lock too long.
        """
        check_key(key)
        await self._run(functools.partial(self._update, key, None))

    async def compare_and_set(self, key: str, expected: bytes, value: bytes) -> bool:
        """Store ``value`` only if ``key`` still holds ``expected`` (under the file lock).

        Returns:
            Whether the value was replaced.

        Raises:
            TokenStoreCorrupt: The file cannot be parsed; it is left unchanged.
            TokenStoreUnavailable: The file cannot be read or written.
            TokenStoreLockTimeout: Another process held the file's lock too long.
        """
        check_key(key)
        old = base64.b64encode(bytes(expected)).decode("ascii")
        new = base64.b64encode(bytes(value)).decode("ascii")

        def swap() -> bool:
            if self._load().get(key) != old:
                return False
            self._update(key, new)
            return True

        return await self._run(swap)

    async def keys(self) -> list[str]:
        """Every key in the file, sorted.

        Raises:
            TokenStoreCorrupt: The file cannot be parsed.
            TokenStoreUnavailable: The file cannot be read or is not trusted.
            TokenStoreLockTimeout: Another process held the file's lock too long.
        """
        return sorted(await self._run(self._load))

    @asynccontextmanager
    async def lock(self, key: str, *, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold the lock named ``key`` across every process that uses this file.

        Args:
            key: The lock's name (a valid store key; usually the key it protects).
            timeout: Seconds to wait; the store's ``lock_timeout`` when omitted.

        Raises:
            TokenStoreLockTimeout: The lock was not acquired in time.
            TokenStoreUnavailable: The lock file cannot be created.
        """
        check_key(key)
        await anyio.to_thread.run_sync(self._prepare_dir, self._key_lock_dir)
        local = self._key_locks.setdefault(key, anyio.Lock())
        async with hold_lock(
            self._key_lock_dir / f"{digest(key)}.lock",
            timeout=self._lock_timeout if timeout is None else timeout,
            what=f"lock {key!r} of {self._path}",
            local=local,
        ):
            yield

    # -- the I/O shell: everything below runs in a worker thread under the file lock --

    async def _run(self, operation: Callable[[], _T]) -> _T:
        if self._io_lock is None:
            self._io_lock = anyio.Lock()
        started = time.monotonic()
        with anyio.move_on_after(self._timeout) as scope:
            await self._io_lock.acquire()
        if scope.cancelled_caught:
            raise TokenStoreLockTimeout(
                f"{self._path} is busy in this process; gave up after {self._timeout:g} s"
            )
        try:
            remaining = max(0.0, self._timeout - (time.monotonic() - started))
            return await anyio.to_thread.run_sync(
                functools.partial(self._locked_call, operation, remaining)
            )
        finally:
            self._io_lock.release()

    def _locked_call(self, operation: Callable[[], _T], timeout: float) -> _T:
        self._prepare_dir(self._path.parent)
        with locked(
            self._lock_path, timeout=timeout, what=f"token file {self._path}", check_cancelled=True
        ):
            return operation()

    def _prepare_dir(self, directory: Path) -> None:
        loose = ensure_private_dir(directory)
        if loose is not None and directory not in self._warned_dirs:
            self._warned_dirs.add(directory)
            logger.warning(
                "token store directory %s is writable by other users (mode %03o); they "
                "could replace the token file: run chmod 700 on it",
                directory,
                loose,
            )

    def _update(self, key: str, encoded: str | None) -> None:
        tokens = self._load()
        if encoded is None:
            if tokens.pop(key, None) is None:
                return
        elif tokens.get(key) == encoded:
            return
        else:
            tokens[key] = encoded
        self._write(tokens)
        logger.debug("%s %r in %s", "deleted" if encoded is None else "stored", key, self._path)

    def _load(self) -> dict[str, str]:
        try:
            f = self._path.open("rb")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise TokenStoreUnavailable(f"cannot read the token file {self._path}: {exc}") from exc
        with f:
            try:
                self._check_file(f.fileno())
                raw = f.read()
            except OSError as exc:
                raise TokenStoreUnavailable(
                    f"cannot read the token file {self._path}: {exc}"
                ) from exc
        return self._parse(raw)

    def _check_file(self, fd: int) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TokenStoreUnavailable(f"the token file {self._path} is not a regular file")
        if os.name == "nt":
            return
        uid = os.geteuid()
        if st.st_uid != uid:
            raise TokenStoreUnavailable(
                f"the token file {self._path} belongs to uid {st.st_uid}, not to this user "
                f"(uid {uid}); refusing to trust it: remove it or fix its owner"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            os.fchmod(fd, 0o600)
            logger.warning(
                "token file %s was accessible to other users (mode %03o); tightened it to "
                "0600. Tokens in it may have been read: consider revoking them",
                self._path,
                mode,
            )

    def _parse(self, raw: bytes) -> dict[str, str]:
        def corrupt(why: str) -> TokenStoreCorrupt:
            return TokenStoreCorrupt(
                f"the token file {self._path} cannot be read: {why}. It was left unchanged; "
                "move it aside or delete it (stored logins will have to be redone)"
            )

        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            # Not str(exc): it quotes a byte of the file, which may be part of a secret.
            raise corrupt(f"it is not UTF-8 text (at byte {exc.start})") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            # Not chained: the exception keeps the whole document, secrets included.
            raise corrupt(f"it is not JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(doc, dict):
            raise corrupt("it is not a JSON object")
        version = doc.get("version")
        if version != _FORMAT_VERSION:
            if isinstance(version, int) and version > _FORMAT_VERSION:
                raise corrupt(f"it has format version {version}, newer than this funnel")
            raise corrupt('it has no valid "version"')
        tokens = doc.get("tokens")
        if not isinstance(tokens, dict):
            raise corrupt('it has no "tokens" object')
        for key, value in tokens.items():
            if not isinstance(value, str):
                raise corrupt(f"the value of {key!r} is not a string")
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise corrupt(f"the value of {key!r} is not base64") from None
        return tokens

    def _write(self, tokens: dict[str, str]) -> None:
        doc = {"version": _FORMAT_VERSION, "tokens": dict(sorted(tokens.items()))}
        data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
        directory = self._path.parent
        try:
            # mkstemp creates the file 0600, so the value is never readable by others.
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self._path.name}.", suffix=".tmp")
        except OSError as exc:
            raise TokenStoreUnavailable(f"cannot write in {directory}: {exc}") from exc
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise TokenStoreUnavailable(f"cannot write the token file {self._path}: {exc}") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._fsync_dir(directory)

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        # Makes the rename durable; some platforms and file systems cannot open or sync a
        # directory, and the rename itself is already atomic there.
        if os.name == "nt":
            return
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            logger.debug("could not fsync %s: %s", directory, exc)
        finally:
            os.close(fd)
