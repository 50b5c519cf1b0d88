"""Cross-process exclusive locks on lock files.

Theory of operation: a lock is an exclusive OS lock on a small lock file (``flock`` on
POSIX, a one-byte ``msvcrt`` lock on Windows). The OS drops it when the holder's file
descriptor is closed, also when the process dies, so a crash never leaves a stale lock.
Lock files are never deleted: deleting one races with a process that has just opened it
and would let two holders lock two different files.

Acquiring polls a non-blocking try with a growing pause (1 ms up to 50 ms) in a worker
thread, until a deadline. A blocking ``flock`` in a thread could be neither bounded nor
cancelled; polling is both: between tries the thread asks anyio whether its task was
cancelled. The OS lock belongs to the open file description, so two tasks of one process
exclude each other as well; stores still queue their own tasks on an ``anyio.Lock``
first, so that one thread at most polls a given lock file per store.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import anyio.from_thread

from funnel_tokenstore._errors import TokenStoreLockTimeout, TokenStoreUnavailable

__all__ = ["ensure_private_dir", "hold_lock", "locked"]

# One logger for the package: the private module names are not part of the contract.
logger = logging.getLogger("funnel_tokenstore")

_FIRST_PAUSE = 0.001
_MAX_PAUSE = 0.05

if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def ensure_private_dir(path: Path) -> int | None:
    """Create ``path`` (and its parents) with mode 0700 on the last level if it is missing.

    An existing directory keeps its mode: it may be one the user chose for other things
    too (``MCP_FUNNEL_HOME`` can point anywhere).

    Returns:
        The permission bits of an existing directory that other users may write to (they
        could replace the files in it), for the caller to warn about; else ``None``.

    Raises:
        TokenStoreUnavailable: The directory cannot be created or inspected.
    """
    try:
        if not path.is_dir():
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            if os.name != "nt":
                # mkdir's mode is filtered through the umask; say exactly what we mean.
                path.chmod(0o700)
            return None
        if os.name == "nt":
            return None
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        raise TokenStoreUnavailable(f"cannot create the directory {path}: {exc}") from exc
    return mode if mode & 0o022 else None


def _wait_for(fd: int, path: Path, timeout: float, what: str, *, check_cancelled: bool) -> None:
    started = time.monotonic()
    deadline = started + timeout
    pause = _FIRST_PAUSE
    while not _try_lock(fd):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TokenStoreLockTimeout(
                f"{what} is held by another task or process; gave up after {timeout:g} s "
                f"(lock file {path})"
            )
        if check_cancelled:
            anyio.from_thread.check_cancelled()
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, _MAX_PAUSE)
    waited = time.monotonic() - started
    if waited > _MAX_PAUSE:
        logger.debug("acquired %s after waiting %.3f s", what, waited)


def _acquire(path: Path, timeout: float, what: str, *, check_cancelled: bool) -> int:
    """Open and lock ``path`` within ``timeout`` seconds; return the locked descriptor."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise TokenStoreUnavailable(f"cannot open the lock file {path}: {exc}") from exc
    try:
        _wait_for(fd, path, timeout, what, check_cancelled=check_cancelled)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _release(fd: int) -> None:
    try:
        _unlock(fd)
    finally:
        os.close(fd)


@contextmanager
def locked(
    path: Path, *, timeout: float, what: str, check_cancelled: bool = False
) -> Iterator[None]:
    """Hold the lock on ``path`` in the calling (worker) thread.

    Args:
        path: The lock file; created 0600 if missing.
        timeout: Seconds to wait before raising :class:`TokenStoreLockTimeout`.
        what: Names the lock in messages.
        check_cancelled: Poll anyio for cancellation of the task that started this
            thread (only in a thread started by ``anyio.to_thread.run_sync``).
    """
    fd = _acquire(path, timeout, what, check_cancelled=check_cancelled)
    try:
        yield
    finally:
        _release(fd)


@asynccontextmanager
async def hold_lock(
    path: Path,
    *,
    timeout: float,
    what: str,
    local: anyio.Lock,
) -> AsyncIterator[None]:
    """Hold ``local`` and then the cross-process lock on ``path`` for the body.

    Args:
        path: The lock file; created 0600 if missing.
        timeout: Seconds, in all, to wait for both locks.
        what: Names the lock in messages.
        local: The in-process lock that queues this process's tasks first.
    """
    started = time.monotonic()
    with anyio.move_on_after(timeout) as scope:
        await local.acquire()
    if scope.cancelled_caught:
        raise TokenStoreLockTimeout(
            f"{what} is held by another task of this process; gave up after {timeout:g} s"
        )
    try:
        remaining = max(0.0, timeout - (time.monotonic() - started))
        acquire = functools.partial(_acquire, path, remaining, what, check_cancelled=True)
        # Not abandoned on cancel: the thread notices the cancellation itself between
        # tries, so the descriptor is either returned here or closed by the thread.
        fd = await anyio.to_thread.run_sync(acquire)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_release, fd)
    finally:
        local.release()
