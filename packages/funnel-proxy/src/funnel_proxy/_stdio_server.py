"""Serving the funnel to one MCP client over this process's stdin and stdout.

stdout carries MCP and nothing else: every log line goes to stderr (the app configures
logging that way), and responses are written whole, one per line, under a lock.
Each request runs in its own task, so a slow tool never delays the answers to others.

When stdin and stdout are pipes or sockets (as MCP clients connect them) on a POSIX
system, both are switched to non-blocking mode and driven by the event loop
(``anyio.wait_readable`` / ``wait_writable``): no worker thread per read or write, which
is what a proxied call would otherwise pay three times. Anywhere else (a terminal,
Windows) the blocking files are used through worker threads. The original blocking mode
is restored on the way out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import BinaryIO

import anyio

from funnel_proxy._dispatcher import McpServerSession
from funnel_proxy._funnel import Funnel
from funnel_transports import (
    DecodeError,
    LineFramer,
    Message,
    MessageTooLarge,
    ParseError,
    decode_message,
    encode_message,
)

__all__ = ["serve_stdio"]

logger = logging.getLogger("funnel_proxy.server")

_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
_READ_SIZE = 65536

Reader = Callable[[], Awaitable[bytes]]
Writer = Callable[[bytes], Awaitable[None]]


def _is_pipe(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


@contextlib.contextmanager
def _event_loop_io(stdin: BinaryIO, stdout: BinaryIO) -> Iterator[tuple[Reader, Writer]]:
    """Read and write the raw descriptors without threads, when that is safe."""
    in_fd, out_fd = stdin.fileno(), stdout.fileno()
    was_blocking = os.get_blocking(in_fd), os.get_blocking(out_fd)
    os.set_blocking(in_fd, False)
    os.set_blocking(out_fd, False)

    async def read() -> bytes:
        while True:
            try:
                return os.read(in_fd, _READ_SIZE)
            except BlockingIOError:
                await anyio.wait_readable(in_fd)

    async def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(out_fd, view) :]
            except BlockingIOError:
                await anyio.wait_writable(out_fd)

    try:
        yield read, write
    finally:
        os.set_blocking(in_fd, was_blocking[0])
        os.set_blocking(out_fd, was_blocking[1])


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
    source = stdin or sys.stdin.buffer
    sink = stdout or sys.stdout.buffer
    fast = sys.platform != "win32" and _is_pipe(source.fileno()) and _is_pipe(sink.fileno())
    if fast:
        sink.flush()  # nothing buffered may overtake what we write to the descriptor
    io = _event_loop_io(source, sink) if fast else _thread_io(source, sink)
    with io as (read, write):
        lock = anyio.Lock()

        async def send(message: Message) -> None:
            try:
                data = encode_message(message) + b"\n"
            except (TypeError, ValueError, OverflowError) as exc:
                logger.error(
                    "could not encode a %s for the client: %s", type(message).__name__, exc
                )
                return
            async with lock:
                await write(data)

        session = McpServerSession(funnel, send, version=version, instructions=instructions)
        framer = LineFramer(_MAX_MESSAGE_SIZE, peer="the client")
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.watch)
            while chunk := await read():
                try:
                    lines = framer.feed(chunk)
                except MessageTooLarge as exc:
                    logger.error("%s; closing the stdio session", exc)
                    break
                for line in lines:
                    try:
                        decoded = decode_message(line)
                    except DecodeError as exc:
                        tg.start_soon(session.handle, exc)
                        continue
                    except (RecursionError, UnicodeError, ValueError) as exc:
                        # The decoder is meant to be total; never let one line end the session.
                        tg.start_soon(session.handle, ParseError(f"unreadable message: {exc}"))
                        continue
                    for message in decoded if isinstance(decoded, list) else [decoded]:
                        tg.start_soon(session.handle, message)
            logger.info("the MCP client closed stdin; shutting down")
            tg.cancel_scope.cancel()
