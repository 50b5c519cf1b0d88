"""The stdio client transport: an MCP server as a child process.

Theory of operation: entering the transport spawns the command in a new process group
with *exactly* the environment it was given (a parent's secrets never leak to a child by
accident); on Linux the child also gets ``PR_SET_PDEATHSIG``, so it is told to stop even
when funnel itself is killed. The child's three pipes are switched to non-blocking mode
and driven straight from the event loop: stdout is read in the loop's readiness callback
(:func:`read_chunks`, one registration for the reader's life), stdin written at once while
the pipe has room. No worker thread, no task wakeup and no extra stream layer per message.

* **Reading.** One reader frames stdout into lines (:class:`LineFramer`), decodes each
  and hands it to the session, either through the :class:`Inbox` or, once the session
  attached itself, by a direct call from the readiness callback. A line that is not JSON-RPC is
  logged and skipped; a line over the size limit ends the connection with
  :class:`MessageTooLarge`, so pending requests fail at once instead of waiting for an
  answer that was just thrown away. A second task logs stderr as ``[server] line``.
* **Writing.** :meth:`StdioTransport.send_nowait` writes at once when the pipe has room and
  otherwise queues the bytes, in order, for a writer task that waits until the pipe drains;
  the queue is bounded (``max_queued``), and a child that stops reading its input fails
  the sends that would exceed it instead of growing memory without end.
  :meth:`StdioTransport.send` is the same with back-pressure: it waits while the queue is
  over half full.
* **Ending.** When stdout ends the process is reaped (a pidfd where the OS has one) and
  the inbox is closed with :class:`ConnectionLost` naming the exit status.

Shutdown is bounded and shielded from cancellation: close stdin and wait, then SIGTERM the
process group and wait, then SIGKILL it and reap. No zombie or orphaned grandchild
(``npx`` → ``node``) outlives the transport. :meth:`StdioTransport.aclose` may be called
from any task.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc
import anyio.lowlevel

from funnel_transports._batch import defer, write_batch
from funnel_transports._errors import (
    INTERNAL_ERROR,
    ConnectError,
    ConnectionLost,
    DecodeError,
    MessageTooLarge,
    TransportClosed,
    TransportError,
)
from funnel_transports._framing import LineFramer
from funnel_transports._inbox import Inbox, MessageSink
from funnel_transports._jsonrpc import (
    ErrorObject,
    ErrorResponse,
    Message,
    decode_message,
    encode_message,
)
from funnel_transports._readiness import read_chunks
from funnel_transports._tasks import TaskHost, hosted_tasks

__all__ = ["StdioTransport"]

logger = logging.getLogger("funnel_transports.stdio")

#: Default maximum size of one message from the server (8 MiB): room for large tool
#: results with embedded images, small enough that a runaway peer cannot exhaust memory.
DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
#: Default bound of bytes queued for a child that is slow to read its input.
DEFAULT_MAX_QUEUED = 32 * 1024 * 1024
_STDERR_LINE_LIMIT = 4096
_LOG_PREVIEW = 200
# A pipe holds 64 KiB: a larger read gets no more, and a buffer over glibc's mmap threshold
# (128 KiB) cost an mmap, an mremap and a munmap on every read.
_READ_SIZE: Final = 64 * 1024
_PR_SET_PDEATHSIG: Final = 1


def _preview(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text if len(text) <= _LOG_PREVIEW else text[:_LOG_PREVIEW] + "…"


def _death_signal_setter() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGTERM the child when funnel dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_death_signal() -> None:  # runs in the child between fork and exec
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)  # the parent died before the request took effect

    return set_death_signal


class StdioTransport:
    """Runs an MCP server as a child process and talks to it over stdin/stdout.

    Args:
        command: The program to run, looked up on the ``PATH`` of ``env``.
        args: Its arguments.
        env: The child's complete environment. Nothing is inherited implicitly: pass
            ``dict(os.environ)`` explicitly to hand down everything.
        cwd: Working directory of the child.
        name: The server's name for log lines and errors (default: the command's name).
        max_message_size: Largest message accepted from the server, in bytes.
        max_queued: Most bytes queued for a child that does not read its input fast
            enough; a send beyond it fails with :class:`ConnectionLost`.
        shutdown_timeout: Seconds each shutdown stage (stdin closed, SIGTERM) may take
            before the next, harsher one.
    """

    def __init__(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str],
        cwd: str | os.PathLike[str] | None = None,
        name: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_queued: int = DEFAULT_MAX_QUEUED,
        shutdown_timeout: float = 2.0,
    ) -> None:
        self._command = command
        self._args = tuple(args)
        self._env = dict(env)
        self._cwd = cwd
        self._name = name or Path(command).name
        self._max_message_size = max_message_size
        self._max_queued = max_queued
        self._shutdown_timeout = shutdown_timeout
        self._inbox = Inbox(self._name)
        self._process: subprocess.Popen[bytes] | None = None
        self._stdin_fd = -1
        self._queue: deque[memoryview] = deque()
        self._batched: list[bytes] = []
        self._queued = 0
        self._write_wake = anyio.Event()
        self._drained = anyio.Event()
        self._drained.set()
        self._write_error: TransportError | None = None
        self._host: TaskHost | None = None
        self._cm: Any = None
        self._stopped = False
        self._closing = False

    @property
    def name(self) -> str:
        """The server's name."""
        return self._name

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has been reaped."""
        return self._process.returncode if self._process is not None else None

    def set_protocol_version(self, version: str) -> None:
        """Stdio carries no per-message version header: nothing to do."""

    def attach(self, sink: MessageSink) -> None:
        """Deliver every inbound message by calling ``sink`` on the reader task.

        Messages already queued are delivered first, in order. :meth:`receive` then only
        reports the end of the connection.
        """
        self._inbox.attach(sink)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> StdioTransport:
        self._cm = self._lifespan()
        return await self._cm.__aenter__()  # type: ignore[no-any-return]

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._cm.__aexit__(*exc_info)  # type: ignore[no-any-return]

    @asynccontextmanager
    async def _lifespan(self) -> AsyncGenerator[StdioTransport, None]:
        process = self._spawn()
        try:
            async with hosted_tasks(f"{self._name} pipes") as host:
                self._host = host
                host.tg.start_soon(self._read_stdout, process, name=f"{self._name} stdout")
                host.tg.start_soon(self._read_stderr, process, name=f"{self._name} stderr")
                host.tg.start_soon(self._write_loop, name=f"{self._name} stdin")
                try:
                    yield self
                finally:
                    await self.aclose()
        finally:
            self._inbox.aclose_receiver()
            # Only now that no task waits on them may the descriptors be closed.
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()

    def _spawn(self) -> subprocess.Popen[bytes]:
        try:
            process = subprocess.Popen(  # noqa: S603 - the command is the user's configuration
                [self._command, *self._args],
                env=self._env,
                cwd=self._cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=sys.platform != "win32",
                preexec_fn=_death_signal_setter(),  # noqa: PLW1509 - prctl only, no locks taken
            )
        except OSError as exc:
            self._stopped = self._closing = True
            self._inbox.close(None)
            self._inbox.aclose_receiver()
            if isinstance(exc, FileNotFoundError):
                raise ConnectError(f"{self._name}: command not found: {self._command}") from exc
            if isinstance(exc, PermissionError):
                raise ConnectError(
                    f"{self._name}: command not executable: {self._command}"
                ) from exc
            raise ConnectError(f"{self._name}: cannot start {self._command}: {exc}") from exc
        pipes = (process.stdin, process.stdout, process.stderr)
        for pipe in pipes:
            assert pipe is not None  # noqa: S101 - opened with PIPE above
            os.set_blocking(pipe.fileno(), False)
        self._stdin_fd = pipes[0].fileno()  # type: ignore[union-attr]
        self._process = process
        logger.debug("[%s] started pid %s", self._name, process.pid)
        return process

    async def aclose(self) -> None:
        """Stop the child (bounded, shielded) and release everything; from any task."""
        self._closing = True
        if self._stopped:
            return
        self._stopped = True
        with anyio.CancelScope(shield=True):
            if self._process is not None:
                await self._stop_process(self._process)
            self._inbox.close(None)
        if self._host is not None:
            self._host.cancel()

    # ------------------------------------------------------------------ sending

    def send_nowait(self, message: Message) -> None:
        """Write one message as a line on the child's stdin, or queue it in order.

        Raises:
            TransportClosed: The transport is closed.
            ConnectionLost: The server is gone, closed its input, or has not read
                ``max_queued`` bytes already queued for it.
        """
        if self._closing or self._process is None:
            raise TransportClosed(f"{self._name}: transport closed")
        if self._write_error is not None:
            raise self._write_error
        inbox = self._inbox
        if inbox.closed:
            # The server is gone; say why rather than writing into a dead pipe.
            reason = inbox.reason
            raise ConnectionLost(str(reason) if reason else f"{self._name}: the server exited")
        data = encode_message(message) + b"\n"
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("[%s] → %s", self._name, _preview(data))
        if self._queue:
            self._enqueue(memoryview(data))
            return
        if self._batched or defer(self):
            # Within a reader's batch: written with the rest of the batch, in order.
            self._batched.append(data)
            return
        self._write_now(data)

    def flush(self) -> None:
        """Write what a batch collected, in one system call (see :func:`write_batch`)."""
        if not self._batched:
            return
        data = b"".join(self._batched)
        self._batched.clear()
        try:
            self._write_now(data)
        except TransportError as exc:
            logger.debug("[%s] %s", self._name, exc)

    def _write_now(self, data: bytes) -> None:
        if self._queue:
            self._enqueue(memoryview(data))
            return
        try:
            written = os.write(self._stdin_fd, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            raise self._broken(exc) from exc
        if written < len(data):
            self._enqueue(memoryview(data)[written:])

    async def send(self, message: Message) -> None:
        """Like :meth:`send_nowait`, waiting first while the queue is over half full."""
        while self._queued > self._max_queued // 2 and not self._closing:
            await self._drained.wait()
        self.send_nowait(message)
        await anyio.lowlevel.checkpoint()

    def _enqueue(self, data: memoryview) -> None:
        if self._queued + len(data) > self._max_queued:
            raise ConnectionLost(
                f"{self._name}: the server is not reading its input "
                f"({self._queued} bytes already queued)"
            )
        self._queue.append(data)
        self._queued += len(data)
        if self._drained.is_set():
            self._drained = anyio.Event()
        self._write_wake.set()

    def _broken(self, exc: OSError) -> ConnectionLost:
        error = ConnectionLost(f"{self._name}: cannot write to the server: it closed its input")
        if exc.errno in (errno.EPIPE, errno.EBADF, errno.EINVAL):
            self._write_error = error
        return error

    async def _write_loop(self) -> None:
        while True:
            await self._write_wake.wait()
            self._write_wake = anyio.Event()
            while self._queue:
                await anyio.wait_writable(self._stdin_fd)
                chunk = self._queue[0] if len(self._queue) == 1 else self._join_queue()
                try:
                    written = os.write(self._stdin_fd, chunk)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    logger.debug("[%s] writing failed: %s", self._name, exc)
                    self._broken(exc)
                    self._queue.clear()
                    self._queued = 0
                    break
                self._queued -= written
                if written == len(chunk):
                    self._queue.popleft()
                else:
                    self._queue[0] = chunk[written:]
            self._drained.set()

    def _join_queue(self) -> memoryview:
        joined = memoryview(b"".join(self._queue))
        self._queue.clear()
        self._queue.append(joined)
        return joined

    # ------------------------------------------------------------------ receiving

    async def receive(self) -> Message:
        """Return the next message from the server."""
        return await self._inbox.get()

    async def _read_stdout(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None  # noqa: S101 - opened with stdout=PIPE above
        fd = process.stdout.fileno()
        framer = LineFramer(self._max_message_size, peer=self._name)
        feed, deliver = framer.feed, self._deliver
        reason: TransportError | None = None

        def handle(chunk: bytes) -> None:
            with write_batch():
                for line in feed(chunk):
                    deliver(line)

        try:
            await read_chunks(fd, handle, size=_READ_SIZE)
        except MessageTooLarge as exc:
            logger.error("[%s] %s; closing the connection", self._name, exc)
            reason = exc
            self._signal(process, signal.SIGTERM)
        except OSError:
            pass
        if reason is None and not self._closing:
            await self._wait(process, self._shutdown_timeout)
            status = process.returncode
            what = (
                "the server exited" if status is None else f"the server exited with status {status}"
            )
            logger.warning("[%s] %s", self._name, what)
            reason = ConnectionLost(f"{self._name}: {what}")
        self._inbox.close(reason)

    def _deliver(self, line: bytes) -> None:
        try:
            decoded = decode_message(line)
        except DecodeError as exc:
            logger.warning(
                "[%s] skipped output that is not JSON-RPC (%s): %s", self._name, exc, _preview(line)
            )
            self._answer_unreadable(line, exc)
            return
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("[%s] ← %s", self._name, _preview(line))
        if isinstance(decoded, list):
            for item in decoded:
                if isinstance(item, DecodeError):
                    logger.warning("[%s] skipped invalid batch element: %s", self._name, item)
                else:
                    self._inbox.put(item)
        else:
            self._inbox.put(decoded)

    def _answer_unreadable(self, line: bytes, exc: DecodeError) -> None:
        """An answer that could not be read still ends its request, with an error.

        Only when its beginning shows a response (``result`` or ``error``, no ``method``):
        the id of a request *from* the server must never be taken for one of ours.
        """
        head = line[:256]
        if exc.request_id is None or b'"method"' in head:
            return
        if b'"result"' not in head and b'"error"' not in head:
            return
        self._inbox.put(
            ErrorResponse(
                id=exc.request_id,
                error=ErrorObject(
                    code=INTERNAL_ERROR,
                    message=f"{self._name} sent an answer funnel could not read: {exc}",
                ),
            )
        )

    async def _read_stderr(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None  # noqa: S101 - opened with stderr=PIPE above
        fd = process.stderr.fileno()
        pending = b""
        try:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    await anyio.wait_readable(fd)
                    continue
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._log_stderr(line)
                if len(pending) > _STDERR_LINE_LIMIT:
                    self._log_stderr(pending)
                    pending = b""
        except OSError:
            pass
        if pending:
            self._log_stderr(pending)

    def _log_stderr(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if line.strip():
            logger.info("[%s] %s", self._name, line[:_STDERR_LINE_LIMIT])

    # ------------------------------------------------------------------ stopping

    async def _stop_process(self, process: subprocess.Popen[bytes]) -> None:
        try:
            await self._stop_leader(process)
        finally:
            if sys.platform != "win32":
                # Whatever the server left running in its process group (a grandchild
                # it spawned and did not wait for) belongs to it and goes with it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGTERM)

    async def _stop_leader(self, process: subprocess.Popen[bytes]) -> None:
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        if await self._wait(process, self._shutdown_timeout):
            return
        logger.info("[%s] did not exit after stdin closed; terminating", self._name)
        self._signal(process, signal.SIGTERM)
        if await self._wait(process, self._shutdown_timeout):
            return
        logger.warning("[%s] did not exit after SIGTERM; killing", self._name)
        self._signal(process, signal.SIGKILL if sys.platform != "win32" else signal.SIGTERM)
        await self._wait(process, self._shutdown_timeout)

    @staticmethod
    async def _wait(process: subprocess.Popen[bytes], seconds: float) -> bool:
        """Wait up to ``seconds`` for the process to exit and reap it."""
        if process.poll() is not None:
            return True
        with anyio.move_on_after(seconds):
            pidfd = _pidfd(process.pid)
            if pidfd is not None:
                try:
                    while process.poll() is None:
                        await anyio.wait_readable(pidfd)
                finally:
                    os.close(pidfd)
            else:
                await anyio.to_thread.run_sync(process.wait, abandon_on_cancel=True)
        return process.poll() is not None

    def _signal(self, process: subprocess.Popen[bytes], sig: int) -> None:
        if process.poll() is not None:
            return
        try:
            if sys.platform != "win32":
                # The child leads its own process group: signal the whole group so that
                # grandchildren (npx → node, uv → python) go too.
                os.killpg(process.pid, sig)
            elif sig == signal.SIGTERM:
                process.terminate()
            else:
                process.kill()
        except ProcessLookupError:
            pass


def _pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None
