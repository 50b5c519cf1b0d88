"""Serving the funnel to one MCP client over this process's stdin and stdout.

stdout carries MCP and nothing else: every log line goes to stderr (the app configures
logging that way), and responses are written whole, one per line, through one ordered
writer. A handshake-era tool call for a stdio backend is started from the reader itself
(the hot path: no task); every other request runs in its own task. Either way a slow
tool never delays the answers to others.

When stdin and stdout are pipes or sockets (as MCP clients connect them) on a POSIX
system, both are switched to non-blocking mode and driven by the event loop: stdin is
registered once and every chunk is handled in the readiness callback
(:func:`funnel_transports.read_chunks`), stdout is written at once while the pipe has
room. No worker thread and no task wakeup per read or write, which is what a proxied
call would otherwise pay several times. Anywhere else (a terminal, Windows) the
blocking files are used through worker threads. The original blocking mode is restored
on the way out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import BinaryIO

import anyio
import anyio.abc

from funnel_proxy import _telemetry
from funnel_proxy._dispatcher import McpServerSession
from funnel_proxy._funnel import Funnel
from funnel_transports import (
    DecodeError,
    InvalidRequest,
    LineFramer,
    Message,
    MessageTooLarge,
    ParseError,
    decode_message,
    defer,
    encode_message,
    read_chunks,
    recover_request_id,
    write_batch,
)

__all__ = ["serve_stdio"]

logger = logging.getLogger("funnel_proxy.server")

_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
_READ_SIZE = 65536
_MAX_QUEUED = 64 * 1024 * 1024

Reader = Callable[[], Awaitable[bytes]]
Writer = Callable[[bytes], Awaitable[None]]


def _is_pipe(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


@contextlib.contextmanager
def _nonblocking(*fds: int) -> Iterator[None]:
    """Switch ``fds`` to non-blocking mode for the block; their modes are restored after."""
    was_blocking = [os.get_blocking(fd) for fd in fds]
    for fd in fds:
        os.set_blocking(fd, False)
    try:
        yield
    finally:
        for fd, blocking in zip(fds, was_blocking, strict=True):
            os.set_blocking(fd, blocking)


@contextlib.contextmanager
def _thread_io(stdin: BinaryIO, stdout: BinaryIO) -> Iterator[tuple[Reader, Writer]]:
    """The portable fallback: blocking files through worker threads."""
    reader = anyio.wrap_file(stdin)
    writer = anyio.wrap_file(stdout)

    async def read() -> bytes:
        return await reader.read1(_READ_SIZE)

    async def write(data: bytes) -> None:
        await writer.write(data)
        await writer.flush()

    yield read, write


def _encode(message: Message) -> bytes | None:
    try:
        return encode_message(message) + b"\n"
    except (TypeError, ValueError, OverflowError) as exc:
        logger.error("could not encode a %s for the client: %s", type(message).__name__, exc)
        return None


class _Writer:
    """Ordered, bounded writes to a non-blocking stdout, at once whenever the pipe has room.

    Every message goes through :meth:`write`, so two messages can never interleave: when
    the pipe is full the rest waits, in order, for :meth:`run` to write it as the pipe
    drains. A client that stops reading for ``limit`` bytes ends the session.
    """

    def __init__(self, fd: int, limit: int = _MAX_QUEUED) -> None:
        self._fd = fd
        self._limit = limit
        self._queue: deque[bytes] = deque()
        self._batched: list[bytes] = []
        self._queued = 0
        self._wake = anyio.Event()
        self._drained = anyio.Event()
        self._drained.set()
        self.broken = False

    def write(self, data: bytes) -> None:
        if self.broken:
            return
        if not self._queue and (self._batched or defer(self)):
            # Within a reader's batch: written with the rest of the batch, in order.
            self._batched.append(data)
            return
        self._write(data)

    def flush(self) -> None:
        """Write what a batch collected in one system call (see ``write_batch``)."""
        if self._batched:
            data = b"".join(self._batched)
            self._batched.clear()
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self.broken:
            return
        if not self._queue:
            written = self._write_some(data)
            if written is None or written == len(data):
                return
            data = data[written:]
        if self._queued + len(data) > self._limit:
            logger.error("the client has not read %d bytes of answers; closing", self._queued)
            self._break()
            return
        self._queue.append(data)
        self._queued += len(data)
        self._drained = anyio.Event() if self._drained.is_set() else self._drained
        self._wake.set()

    def _write_some(self, data: bytes) -> int | None:
        """Write what the pipe takes now; ``None`` when the client is gone."""
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            logger.info("cannot write to the client: %s", exc)
            self._break()
            return None

    def _break(self) -> None:
        self.broken = True
        self._queue.clear()
        self._queued = 0
        self._drained.set()
        self._wake.set()

    async def run(self, scope: anyio.CancelScope) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._queue and not self.broken:
                await anyio.wait_writable(self._fd)
                chunk = b"".join(self._queue)
                self._queue.clear()
                written = self._write_some(chunk)
                if written is None:
                    break
                self._queued -= written
                if written < len(chunk):
                    self._queue.appendleft(chunk[written:])
            self._drained.set()
            if self.broken:
                scope.cancel()
                return

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until everything queued is written."""
        with anyio.move_on_after(timeout):
            await self._drained.wait()


def _chunk_handler(session: McpServerSession, tg: anyio.abc.TaskGroup) -> Callable[[bytes], None]:
    """What to do with each chunk the client sends: frame it, serve every message in it."""
    framer = LineFramer(_MAX_MESSAGE_SIZE, peer="the client")
    feed, handle_nowait = framer.feed, session.handle_nowait

    def handle(chunk: bytes) -> None:
        with write_batch():
            for line in feed(chunk, skip_oversized=True):
                if isinstance(line, MessageTooLarge):
                    # The line is dropped, the stream resumes after it; the client hears why.
                    logger.warning("%s; skipped it", line)
                    tg.start_soon(session.handle, _too_large(line))
                else:
                    _take(line, session, tg, handle_nowait)

    return handle


async def _pump(read: Reader, handle: Callable[[bytes], None]) -> None:
    """Feed every chunk ``read`` returns to ``handle`` until it returns end of file."""
    while chunk := await read():
        handle(chunk)


def _too_large(exc: MessageTooLarge) -> InvalidRequest:
    return InvalidRequest(str(exc), request_id=recover_request_id(exc.head))


def _take(
    line: bytes,
    session: McpServerSession,
    tg: anyio.abc.TaskGroup,
    handle_nowait: Callable[[Message | DecodeError], bool],
) -> None:
    try:
        decoded = decode_message(line)
    except DecodeError as exc:
        tg.start_soon(session.handle, exc)
        return
    except (RecursionError, UnicodeError, ValueError) as exc:
        # The decoder is meant to be total; never let one line end the session.
        tg.start_soon(session.handle, ParseError(f"unreadable message: {exc}"))
        return
    if isinstance(decoded, list):
        for message in decoded:
            if not handle_nowait(message):
                tg.start_soon(session.handle, message)
    elif not handle_nowait(decoded):
        tg.start_soon(session.handle, decoded)


async def serve_stdio(
    funnel: Funnel,
    *,
    version: str,
    instructions: str | None = None,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
) -> None:
    """Serve MCP on stdin/stdout until stdin ends.

    Args:
        funnel: The running funnel.
        version: funnel's version for server info.
        instructions: Instructions for models, sent on ``initialize``.
        stdin: Where requests come from (default: this process's stdin).
        stdout: Where answers go (default: this process's stdout).
    """
    _telemetry.serving_stdio()  # network.transport=pipe on this client's spans
    source = stdin or sys.stdin.buffer
    sink = stdout or sys.stdout.buffer
    fast = sys.platform != "win32" and _is_pipe(source.fileno()) and _is_pipe(sink.fileno())
    if fast:
        sink.flush()  # nothing buffered may overtake what we write to the descriptor
        with _nonblocking(source.fileno(), sink.fileno()):
            await _serve_nonblocking(funnel, version, instructions, source, sink)
    else:
        with _thread_io(source, sink) as (read, write):
            await _serve_threaded(funnel, version, instructions, read, write)


async def _serve_nonblocking(
    funnel: Funnel, version: str, instructions: str | None, source: BinaryIO, sink: BinaryIO
) -> None:
    """Serve from the event loop: the client's chunks handled as they arrive, writes at once."""
    writer = _Writer(sink.fileno())

    def send_nowait(message: Message) -> None:
        data = _encode(message)
        if data is not None:
            writer.write(data)

    async def send(message: Message) -> None:
        send_nowait(message)

    session = McpServerSession(
        funnel, send, version=version, instructions=instructions, send_nowait=send_nowait
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(session.watch)
        tg.start_soon(writer.run, tg.cancel_scope)
        await read_chunks(source.fileno(), _chunk_handler(session, tg), size=_READ_SIZE)
        logger.info("the MCP client closed stdin; shutting down")
        session.close()
        await writer.drain()
        tg.cancel_scope.cancel()


async def _serve_threaded(
    funnel: Funnel, version: str, instructions: str | None, read: Reader, write: Writer
) -> None:
    """Serve through worker threads: every message a task, writes one at a time."""
    lock = anyio.Lock()

    async def send(message: Message) -> None:
        data = _encode(message)
        if data is not None:
            async with lock:
                await write(data)

    session = McpServerSession(funnel, send, version=version, instructions=instructions)
    async with anyio.create_task_group() as tg:
        tg.start_soon(session.watch)
        await _pump(read, _chunk_handler(session, tg))
        logger.info("the MCP client closed stdin; shutting down")
        session.close()
        tg.cancel_scope.cancel()
