"""The stdio client transport: an MCP server as a child process.

Theory of operation: entering the transport spawns the command in a new process group
with *exactly* the environment it was given (a parent's secrets never leak to a child by
accident) and starts two reader tasks in the transport's task group. The stdout reader
frames newline-delimited JSON (:class:`LineFramer`), decodes each line and queues it in
the :class:`Inbox`; a line that is not JSON-RPC is logged and skipped, a line over the
size limit ends the connection with :class:`MessageTooLarge` so that pending requests
fail at once instead of waiting for an answer that was just thrown away. The stderr
reader logs each line as ``[server] line``. When stdout ends, the process is reaped and
the inbox is closed with :class:`ConnectionLost` naming the exit status.

Shutdown is bounded and shielded from cancellation: close stdin and wait, then SIGTERM
the process group and wait, then SIGKILL it and reap. No zombie or orphaned grandchild
(``npx`` → ``node``) outlives the transport.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import anyio.abc
from anyio.streams.text import TextReceiveStream

from funnel_transports._errors import (
    ConnectError,
    ConnectionLost,
    DecodeError,
    MessageTooLarge,
    TransportClosed,
    TransportError,
)
from funnel_transports._framing import LineFramer
from funnel_transports._inbox import Inbox
from funnel_transports._jsonrpc import Message, decode_message, encode_message

__all__ = ["StdioTransport"]

logger = logging.getLogger("funnel_transports.stdio")

#: Default maximum size of one message from the server (8 MiB): room for large tool
#: results with embedded images, small enough that a runaway peer cannot exhaust memory.
DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
_STDERR_LINE_LIMIT = 4096
_LOG_PREVIEW = 200


def _preview(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text if len(text) <= _LOG_PREVIEW else text[:_LOG_PREVIEW] + "…"


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
        shutdown_timeout: float = 2.0,
    ) -> None:
        self._command = command
        self._args = tuple(args)
        self._env = dict(env)
        self._cwd = cwd
        self._name = name or Path(command).name
        self._max_message_size = max_message_size
        self._shutdown_timeout = shutdown_timeout
        self._inbox = Inbox(self._name)
        self._process: anyio.abc.Process | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._send_lock = anyio.Lock()
        self._closing = False
        self._closed = False

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

    async def __aenter__(self) -> Self:
        try:
            self._process = await anyio.open_process(
                [self._command, *self._args],
                env=self._env,
                cwd=self._cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=sys.platform != "win32",
            )
        except OSError as exc:
            self._closed = self._closing = True
            self._inbox.close(None)
            self._inbox.aclose_receiver()
            if isinstance(exc, FileNotFoundError):
                raise ConnectError(f"{self._name}: command not found: {self._command}") from exc
            if isinstance(exc, PermissionError):
                raise ConnectError(
                    f"{self._name}: command not executable: {self._command}"
                ) from exc
            raise ConnectError(f"{self._name}: cannot start {self._command}: {exc}") from exc
        logger.debug("[%s] started pid %s", self._name, self._process.pid)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._read_stdout, self._process)
        self._task_group.start_soon(self._read_stderr, self._process)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def send(self, message: Message) -> None:
        """Write one message as a line on the child's stdin."""
        if self._closing or self._process is None or self._process.stdin is None:
            raise TransportClosed(f"{self._name}: transport closed")
        if self._inbox.closed:
            # The server is gone; say why rather than writing into a dead pipe.
            reason = self._inbox.reason
            raise ConnectionLost(str(reason) if reason else f"{self._name}: the server exited")
        data = encode_message(message) + b"\n"
        try:
            async with self._send_lock:
                await self._process.stdin.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise ConnectionLost(
                f"{self._name}: cannot write to the server: it closed its input"
            ) from exc
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("[%s] → %s", self._name, _preview(data))

    async def receive(self) -> Message:
        """Return the next message from the server."""
        return await self._inbox.get()

    async def aclose(self) -> None:
        """Stop the child (bounded, shielded) and release everything."""
        if self._closed:
            return
        self._closed = True
        self._closing = True
        with anyio.CancelScope(shield=True):
            if self._process is not None:
                await self._stop_process(self._process)
            self._inbox.close(None)
        if self._task_group is not None:
            # The readers end by themselves once the process is gone; cancelling only
            # makes that certain. The group is exited here, outside the shield, because
            # a cancel scope must be exited in the scope it was entered in.
            self._task_group.cancel_scope.cancel()
            await self._task_group.__aexit__(None, None, None)
        self._inbox.aclose_receiver()
        if self._process is not None:
            with anyio.CancelScope(shield=True):
                await self._process.aclose()

    async def _stop_process(self, process: anyio.abc.Process) -> None:
        try:
            await self._stop_leader(process)
        finally:
            if sys.platform != "win32":
                # Whatever the server left running in its process group (a grandchild
                # it spawned and did not wait for) belongs to it and goes with it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGTERM)

    async def _stop_leader(self, process: anyio.abc.Process) -> None:
        if process.stdin is not None:
            await process.stdin.aclose()
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
    async def _wait(process: anyio.abc.Process, seconds: float) -> bool:
        with anyio.move_on_after(seconds):
            await process.wait()
            return True
        return False

    def _signal(self, process: anyio.abc.Process, sig: int) -> None:
        if process.returncode is not None:
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

    async def _read_stdout(self, process: anyio.abc.Process) -> None:
        assert process.stdout is not None  # noqa: S101 - opened with stdout=PIPE above
        framer = LineFramer(self._max_message_size, peer=self._name)
        reason: TransportError | None = None
        try:
            async for chunk in process.stdout:
                for line in framer.feed(chunk):
                    self._deliver(line)
        except MessageTooLarge as exc:
            logger.error("[%s] %s; closing the connection", self._name, exc)
            reason = exc
            self._signal(process, signal.SIGTERM)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        if reason is None and not self._closing:
            with anyio.move_on_after(self._shutdown_timeout):
                await process.wait()
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

    async def _read_stderr(self, process: anyio.abc.Process) -> None:
        assert process.stderr is not None  # noqa: S101 - opened with stderr=PIPE above
        pending = ""
        try:
            async for text in TextReceiveStream(process.stderr, errors="replace"):
                pending += text
                *lines, pending = pending.split("\n")
                for line in lines:
                    self._log_stderr(line)
                if len(pending) > _STDERR_LINE_LIMIT:
                    self._log_stderr(pending)
                    pending = ""
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        if pending:
            self._log_stderr(pending)

    def _log_stderr(self, line: str) -> None:
        line = line.rstrip("\r")
        if line.strip():
            logger.info("[%s] %s", self._name, line[:_STDERR_LINE_LIMIT])
