"""Reading a non-blocking pipe from the event loop's own readiness callback.

Theory of operation. A proxy's reader spends most of its life waiting for the next chunk.
Waiting with ``anyio.wait_readable`` costs, on every chunk: a future, a registration and
a deregistration of the descriptor with the poller (uvloop also re-initialises its poll
handle, one ``ioctl`` more), a wakeup of the reader task through its coroutine stack,
and one more ``read`` that fails with ``EAGAIN`` before the next wait. Measured per
serial proxied call (two chunks): 12 ``epoll_ctl``, 2 ``ioctl``, 4 ``getpid`` and 2
wasted ``read`` system calls, about a third of funnel's CPU per call.

:func:`read_chunks` registers the descriptor once, for as long as the reader runs, and
does the read and the handling in the readiness callback itself: one ``read`` per
readiness, no task wakeup per chunk. The task that awaits :func:`read_chunks` still owns
the reader (structured concurrency holds: it returns at end of file, raises what the
read or the handler raised, and cancelling it unregisters the descriptor at once).

This is the one place in the transports that touches asyncio, because anyio offers no
persistent readiness registration. Under any other backend (or a loop without
``add_reader``) the same contract is met with ``anyio.wait_readable`` in a loop.
"""

from __future__ import annotations

import asyncio  # noqa: TID251 - the persistent registration anyio lacks (see above)
import os
from collections.abc import Callable

import anyio
import anyio.lowlevel

__all__ = ["read_chunks"]

#: Chunks a reader handles in a row before it lets other tasks run (the fallback path;
#: the callback path returns to the loop after every chunk anyway).
_READS_BEFORE_YIELD = 16


async def read_chunks(fd: int, handle: Callable[[bytes], None], *, size: int = 65536) -> None:
    """Call ``handle(chunk)`` with every chunk read from ``fd`` until end of file.

    ``fd`` must be in non-blocking mode. ``handle`` runs synchronously for each chunk, in
    order, and must not block; it may start tasks and write without waiting.

    Raises:
        OSError: Reading failed (the descriptor is unregistered first).
        Exception: Whatever ``handle`` raised, which also ends the reading.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: anyio's portable wait
        await _read_waiting(fd, handle, size)
        return
    ended = anyio.Event()
    failure: list[BaseException] = []
    read = os.read

    def readable() -> None:
        try:
            chunk = read(fd, size)
            if chunk:
                handle(chunk)
                return
        except BlockingIOError:
            return  # a spurious wakeup: the poller will call again
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            failure.append(exc)
        loop.remove_reader(fd)  # (so this is never called again)
        ended.set()

    try:
        loop.add_reader(fd, readable)
    except NotImplementedError:  # a loop without readiness callbacks (Windows' proactor)
        await _read_waiting(fd, handle, size)
        return
    try:
        await ended.wait()
    finally:
        if not ended.is_set():
            ended.set()
            loop.remove_reader(fd)
    if failure:
        raise failure[0]


async def _read_waiting(fd: int, handle: Callable[[bytes], None], size: int) -> None:
    streak = 0
    while True:
        try:
            chunk = os.read(fd, size)
        except BlockingIOError:
            streak = 0
            await anyio.wait_readable(fd)
            continue
        if not chunk:
            return
        handle(chunk)
        streak += 1
        if streak >= _READS_BEFORE_YIELD:
            streak = 0
            await anyio.lowlevel.checkpoint()
