"""The bare JSON-RPC driver: an MCP client over a pipe with nothing in it but the wire.

Theory of operation. A benchmark driver is part of every number it measures: a client
that spends 150 µs of its own per call makes a 90 µs server look like 240 µs and every
proxy look cheaper beside it. So this driver is as close to the bare pipe as Python gets:

- one process started with :class:`subprocess.Popen`, unbuffered pipes;
- the handshake done by hand (``initialize``, ``notifications/initialized``), then
  ``tools/list`` to learn the name the target gives ``echo``;
- each call one ``msgspec`` encode and one ``os.write``; responses read with ``poll`` and
  ``os.read`` into one buffer, split on newlines, their envelope decoded by ``msgspec``
  into a struct that keeps ``result`` raw;
- no threads, no event loop, no tasks.

Serial latency is the wall time from the ``write`` of one request to the decode of its
response; the next request goes only after it. Pipelined throughput keeps ``in_flight``
requests outstanding: whenever responses arrive, as many new requests are written in one
``write``. Every answer is checked *after* its timestamp is taken: the result's text must
be ``Echo: <the argument of that call>`` (each call has its own argument), and a result
with ``isError`` or a JSON-RPC error counts as a failure. FastMCP, for one, answers an
unknown tool with ``isError``, which a driver that only looks for an error would count as
a fast, successful call.

Messages the target sends on its own are skipped (notifications) or answered (a server
request: ``ping`` with ``{}``, anything else with -32601), as a real client would. Every
wait is bounded by a deadline; a target that stops answering raises :class:`PeerError`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

HANDSHAKE_VERSION: Final = "2025-11-25"
CLIENT_INFO: Final = {"name": "funnel-bench", "version": "1"}
_READ_SIZE: Final = 1 << 16


class PeerError(Exception):
    """The target did not answer as an MCP server must (or not in time)."""


class _Envelope(msgspec.Struct):
    """What the driver needs of any incoming message; ``result`` stays undecoded."""

    id: int | str | None = None
    method: str | None = None
    # An empty Raw: the member was absent (``Raw`` cannot be part of a union).
    result: msgspec.Raw = msgspec.Raw()
    error: msgspec.Raw = msgspec.Raw()


class _Content(msgspec.Struct):
    type: str = ""
    text: str | None = None


class _CallResult(msgspec.Struct, rename={"is_error": "isError"}):
    content: list[_Content] = []
    is_error: bool = False


class _Arguments(msgspec.Struct):
    message: str


class _CallParams(msgspec.Struct):
    name: str
    arguments: _Arguments


class _Call(msgspec.Struct):
    id: int
    params: _CallParams
    jsonrpc: str = "2.0"
    method: str = "tools/call"


_decode_envelope: Final = msgspec.json.Decoder(_Envelope).decode
_decode_call_result: Final = msgspec.json.Decoder(_CallResult).decode
_decode_any: Final = msgspec.json.Decoder().decode
_encode: Final = msgspec.json.Encoder().encode


def argument(request_id: int) -> str:
    """The ``message`` argument of call ``request_id`` (each call has its own)."""
    return f"m{request_id}"


@dataclass(slots=True)
class Checks:
    """How many answers were checked, and what was wrong with the ones that failed."""

    checked: int = 0
    failed: int = 0
    first_failure: str = ""

    def fail(self, why: str) -> None:
        """Count one failed answer (the first reason is kept for the report)."""
        self.failed += 1
        if not self.first_failure:
            self.first_failure = why[:200]

    def merge(self, other: Checks) -> None:
        """Add another tally to this one."""
        self.checked += other.checked
        self.failed += other.failed
        if not self.first_failure:
            self.first_failure = other.first_failure


def check_call(result: msgspec.Raw, error: msgspec.Raw, expected: str, checks: Checks) -> None:
    """Check one ``tools/call echo`` answer: ``Echo: <expected>``, not an error.

    Args:
        result: The response's raw ``result`` (empty when absent).
        error: The response's raw ``error`` (empty when absent).
        expected: The argument of the call.
        checks: The tally to count it in.
    """
    checks.checked += 1
    if error:
        checks.fail(f"JSON-RPC error {bytes(error)[:120]!r}")
        return
    if not result:
        checks.fail("a response with neither result nor error")
        return
    try:
        decoded = _decode_call_result(result)
    except msgspec.DecodeError as exc:
        checks.fail(f"undecodable result: {exc}")
        return
    text = decoded.content[0].text if decoded.content else None
    if decoded.is_error:
        checks.fail(f"isError result: {text!r}")
    elif text != f"Echo: {expected}":
        checks.fail(f"wrong text {text!r}, expected 'Echo: {expected}'")


def find_echo(tools: Sequence[Mapping[str, Any]]) -> str:
    """The name a target gives the backend's ``echo`` (``echo``, ``x__echo`` or ``x_echo``)."""
    names = [str(tool.get("name")) for tool in tools]
    if "echo" in names:
        return "echo"
    for name in names:
        if name.endswith(("__echo", "_echo")):
            return name
    raise PeerError(f"no echo tool among {names[:10]}")


@dataclass(slots=True)
class StdioPeer:
    """One MCP server over stdio, driven by hand.

    Args:
        argv: The command and its arguments.
        env: The complete environment of the process.
        name: A label for errors.
        stderr: Where the process's stderr goes (a file path), or ``None`` to discard it.
    """

    argv: Sequence[str]
    env: Mapping[str, str]
    name: str
    stderr: Path | None = None
    tool: str = ""
    process: subprocess.Popen[bytes] | None = None
    _buffer: bytearray = field(default_factory=bytearray)
    _lines: list[bytes] = field(default_factory=list)
    _next_id: int = 0

    @property
    def pid(self) -> int:
        """The process id (the peer must be started)."""
        assert self.process is not None
        return self.process.pid

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the process (no handshake yet)."""
        log = open(self.stderr, "ab") if self.stderr is not None else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=dict(self.env),
                bufsize=0,
                start_new_session=True,  # its children are stopped with it (killpg)
            )
        finally:
            if not isinstance(log, int):
                log.close()

    def handshake(self, timeout: float = 60.0) -> None:
        """``initialize`` and ``notifications/initialized``, by hand."""
        self.request(
            "initialize",
            {
                "protocolVersion": HANDSHAKE_VERSION,
                "capabilities": {},
                "clientInfo": CLIENT_INFO,
            },
            timeout=timeout,
        )
        self._write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')

    def open(self, timeout: float = 60.0) -> None:
        """Start, handshake, and find the ``echo`` tool."""
        self.start()
        self.handshake(timeout)
        self.tool = find_echo(self.list_tools(timeout))

    def list_tools(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Every tool of the target (following ``nextCursor``)."""
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            result = self.request(
                "tools/list", {} if cursor is None else {"cursor": cursor}, timeout=timeout
            )
            tools.extend(result.get("tools", []))
            cursor = result.get("nextCursor")
            if not cursor:
                return tools

    def close(self, timeout: float = 5.0) -> None:
        """Stop the process and its process group: stdin closed, then SIGTERM, then SIGKILL."""
        process = self.process
        if process is None:
            return
        self.process = None
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
        # Children the target left behind in its group (a backend of a proxy).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> StdioPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ wire

    def _write(self, data: bytes) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        fd = self.process.stdin.fileno()
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def _fill(self, deadline: float) -> None:
        """Wait for and read at least one more complete line into ``_lines``."""
        assert self.process is not None
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not self._lines:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerError(f"{self.name}: no answer in time")
            if not poller.poll(left * 1000):
                continue
            chunk = os.read(fd, _READ_SIZE)
            if not chunk:
                raise PeerError(f"{self.name}: the process closed its stdout")
            buffer = self._buffer
            buffer += chunk
            end = buffer.rfind(b"\n")
            if end >= 0:
                self._lines = bytes(buffer[:end]).split(b"\n")
                del buffer[: end + 1]

    def _next_response(self, deadline: float) -> _Envelope:
        """The next response; notifications skipped, server requests answered."""
        while True:
            if not self._lines:
                self._fill(deadline)
            line = self._lines.pop(0)
            if not line.strip():
                continue
            try:
                message = _decode_envelope(line)
            except msgspec.DecodeError as exc:
                raise PeerError(f"{self.name}: not JSON-RPC: {line[:120]!r}") from exc
            if message.method is None:
                return message
            if message.id is not None:  # a request from the server
                self._answer(message)

    def _answer(self, message: _Envelope) -> None:
        if message.method == "ping":
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message.id, "result": {}}
        else:
            reply = {
                "jsonrpc": "2.0",
                "id": message.id,
                "error": {"code": -32601, "message": "not supported by the bench driver"},
            }
        self._write(_encode(reply) + b"\n")

    def request(self, method: str, params: Mapping[str, Any], *, timeout: float = 60.0) -> Any:
        """One request, its result decoded (a JSON-RPC error raises :class:`PeerError`)."""
        self._next_id += 1
        request_id = self._next_id
        self._write(
            _encode({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            + b"\n"
        )
        deadline = time.monotonic() + timeout
        while True:
            response = self._next_response(deadline)
            if response.id != request_id:
                continue  # a late answer to an earlier call
            if response.error or not response.result:
                raise PeerError(f"{self.name}: {method} failed: {bytes(response.error)[:200]!r}")
            return _decode_any(response.result)

    def _call(self, request_id: int) -> bytes:
        return (
            _encode(_Call(request_id, _CallParams(self.tool, _Arguments(argument(request_id)))))
            + b"\n"
        )

    # ------------------------------------------------------------------ measurements

    def serial(self, count: int, checks: Checks, *, timeout: float = 30.0) -> list[int]:
        """``count`` calls one after another: the latency of each in nanoseconds."""
        latencies: list[int] = []
        clock = time.perf_counter_ns
        for _ in range(count):
            self._next_id += 1
            request_id = self._next_id
            data = self._call(request_id)
            deadline = time.monotonic() + timeout
            start = clock()
            self._write(data)
            response = self._next_response(deadline)
            while response.id != request_id:
                response = self._next_response(deadline)
            latencies.append(clock() - start)
            check_call(response.result, response.error, argument(request_id), checks)
        return latencies

    def pipelined(
        self, count: int, checks: Checks, *, in_flight: int = 64, timeout: float = 60.0
    ) -> float:
        """``count`` calls with ``in_flight`` outstanding: the wall time in seconds."""
        expected: dict[int | str, str] = {}
        sent = 0
        done = 0

        def batch(size: int) -> bytes:
            nonlocal sent
            parts = []
            for _ in range(size):
                self._next_id += 1
                request_id = self._next_id
                expected[request_id] = argument(request_id)
                parts.append(self._call(request_id))
                sent += 1
            return b"".join(parts)

        deadline = time.monotonic() + timeout
        start = time.perf_counter()
        self._write(batch(min(in_flight, count)))
        while done < count:
            self._fill(deadline)
            arrived = 0
            lines, self._lines = self._lines, []
            for line in lines:
                if not line.strip():
                    continue
                message = _decode_envelope(line)
                if message.method is not None:
                    if message.id is not None:
                        self._answer(message)
                    continue
                want = expected.pop(message.id, None) if message.id is not None else None
                if want is None:
                    continue  # a late answer to an earlier call
                check_call(message.result, message.error, want, checks)
                arrived += 1
            done += arrived
            more = min(arrived, count - sent)
            if more > 0:
                self._write(batch(more))
        return time.perf_counter() - start
