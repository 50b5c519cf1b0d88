"""The fault suite's harness (``tests/faults``): ``funnel-server`` as a process, driven byte
by byte.

Every probe talks to a real ``funnel-server`` started as a user starts it (``--stdio``,
or HTTP on 127.0.0.1 with ``FUNNEL_API_TOKEN``), in front of real backends: the npm
``server-everything`` over stdio (the healthy one that must keep answering) and the
misbehaving servers of ``tests/servers/hostile.py`` and ``hostile_http.py``. The client
side is raw bytes, not an SDK, so that anything at all can be sent.

Processes are module-scoped (a probe costs milliseconds, not a start-up); a probe that
kills the process fails, and the next probe gets a fresh one. Every wait is bounded with
``anyio.fail_after``; every process started here is stopped here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from support.peers import EVERYTHING, SERVERS, free_port

FUNNEL = str(Path(sys.executable).with_name("funnel-server"))
API_TOKEN = "fault-suite-token-4f1c9a0b7e2d"
HOSTILE = str(SERVERS / "hostile.py")
HOSTILE_HTTP = str(SERVERS / "hostile_http.py")
#: What the healthy backend's echo answers (server-everything).
ECHO_OK = "Echo: still here"
#: Bound of one probe's exchange, and of a backend call past a 2 s backend timeout.
PROBE = 10.0
CALL = 8.0
#: Bound for a backend to be reconnected after it crashed or was dropped.
RECOVERY = 30.0


def node() -> str:
    found = shutil.which("node")
    if found is None or not EVERYTHING.exists():
        pytest.skip("the npm test peers are not installed (run `make install`)")
    return found


def healthy_backend() -> dict[str, Any]:
    return {"command": node(), "args": [str(EVERYTHING), "stdio"]}


def hostile_backend(mode: str = "normal") -> dict[str, Any]:
    return {"command": sys.executable, "args": [HOSTILE, mode]}


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def error_code(reply: dict[str, Any]) -> int | None:
    error = reply.get("error")
    return error.get("code") if isinstance(error, dict) else None


def error_text(reply: dict[str, Any]) -> str:
    """The text of an error reply, or of a tool result with ``isError``."""
    error = reply.get("error")
    if isinstance(error, dict):
        return f"{error.get('message')} {json.dumps(error.get('data'))}"
    result = reply.get("result")
    if isinstance(result, dict) and result.get("isError"):
        return json.dumps(result.get("content"))
    return ""


def result_text(reply: dict[str, Any]) -> str:
    result = reply.get("result")
    assert isinstance(result, dict), f"expected a result, got {reply}"
    content = result.get("content") or [{}]
    return str(content[0].get("text"))


# ------------------------------------------------------------------ funnel processes


class FunnelProcess:
    """``funnel-server`` in a temp dir with a config; restartable after it died."""

    def __init__(self, tmp: Path, config: dict[str, Any], *, stdio: bool) -> None:
        self.tmp = tmp
        self.stdio = stdio
        self.config_path = tmp / ".mcp-funnel.json"
        self.config_path.write_text(json.dumps(config))
        self.port = free_port()
        self.runs = 0
        self.process: anyio.abc.Process | None = None
        self._stderr: Any = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr_path(self) -> Path:
        return self.tmp / f"funnel-{self.runs}.stderr"

    def stderr_text(self) -> str:
        return "\n".join(
            (self.tmp / f"funnel-{run}.stderr").read_text(errors="replace")
            for run in range(1, self.runs + 1)
        )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        self.runs += 1
        self.port = free_port()
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "MCP_FUNNEL_HOME": str(self.tmp / "home"),
            "MCP_FUNNEL_TOKEN_STORE": "file",
            "FUNNEL_API_TOKEN": API_TOKEN,
        }
        command = [FUNNEL, "--config", str(self.config_path), "--port", str(self.port)]
        if self.stdio:
            command.append("--stdio")
        self._stderr = self.stderr_path.open("w")
        self.process = await anyio.open_process(
            [*command, "--log-level", "INFO"],
            env=env,
            cwd=self.tmp,
            stdin=subprocess.PIPE if self.stdio else subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.stdio else subprocess.DEVNULL,
            stderr=self._stderr,
        )
        if not self.stdio:
            await self._wait_healthy()

    async def _wait_healthy(self) -> None:
        async with httpx.AsyncClient(base_url=self.base) as http:
            with anyio.fail_after(30):
                while True:
                    assert self.alive, f"funnel-server exited:\n{self.stderr_text()[-3000:]}"
                    try:
                        if (await http.get("/api/health")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.05)  # bounded readiness polling

    async def stop(self) -> None:
        process, self.process = self.process, None
        with anyio.CancelScope(shield=True):
            if process is not None:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.aclose()
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None

    def assert_no_traceback(self) -> None:
        text = self.stderr_text()
        assert "Traceback (most recent call last)" not in text, text[-4000:]


class StdioSession:
    """A raw MCP client on funnel's stdin/stdout: lines in, replies routed by id."""

    def __init__(self, funnel: FunnelProcess, tg: anyio.abc.TaskGroup) -> None:
        self.funnel = funnel
        self._tg = tg
        self._next = 0
        self._replies: dict[object, dict[str, Any]] = {}
        self._arrived = anyio.Event()
        self.orphans: list[dict[str, Any]] = []  # replies with "id": null
        self.notifications: list[dict[str, Any]] = []
        self.log: list[tuple[str, object]] = []  # ("reply"|"note", id/token) in order
        self.invalid_utf8_lines = 0
        self.keep_notifications = True
        self.eof = False  # funnel closed its stdout: it is ending, whatever returncode says

    @property
    def serving(self) -> bool:
        return self.funnel.alive and not self.eof

    async def start(self, init_timeout: float = 60) -> None:
        self.eof = False
        await self.funnel.start()
        assert self.funnel.process is not None
        self._tg.start_soon(self._read, self.funnel.process)
        reply = await self.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "fault-suite", "version": "1"},
            },
            timeout=init_timeout,
        )
        assert "result" in reply, reply
        await self.notify("notifications/initialized")

    async def ensure(self) -> None:
        """Start a fresh process if the last probe killed this one."""
        if not self.serving:
            await self.funnel.stop()
            self._replies.clear()
            self.orphans.clear()
            await self.start()

    async def _read(self, process: anyio.abc.Process) -> None:
        assert process.stdout is not None
        buffer = bytearray()
        try:
            async for chunk in process.stdout:
                buffer += chunk
                while (end := buffer.find(b"\n")) != -1:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    self._line(line)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        self.eof = True
        self._arrived.set()

    def _line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            self.invalid_utf8_lines += 1
        decoded = json.loads(line)  # funnel must only ever print JSON on stdout
        for message in decoded if isinstance(decoded, list) else [decoded]:
            if "method" in message:
                if message.get("method") == "notifications/progress":
                    self.log.append(("note", message["params"].get("progressToken")))
                if self.keep_notifications:
                    self.notifications.append(message)
            elif message.get("id") is None:
                self.orphans.append(message)
            else:
                self.log.append(("reply", message["id"]))
                self._replies[message["id"]] = message
        self._arrived.set()
        self._arrived = anyio.Event()

    def new_id(self, prefix: str = "r") -> str:
        self._next += 1
        return f"{prefix}-{self._next}"

    async def send(self, data: bytes) -> None:
        process = self.funnel.process
        assert process is not None
        assert process.stdin is not None
        try:
            await process.stdin.send(data if data.endswith(b"\n") else data + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise AssertionError(self._why(f"cannot write to funnel's stdin ({exc!r})")) from None

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self.send(json.dumps(message).encode())

    def _why(self, what: str) -> str:
        tail = "\n".join(self.funnel.stderr_text().splitlines()[-15:])
        state = "alive" if self.serving else "EXITED"
        return f"{what}; funnel-server {state}; its stderr ends:\n{tail}"

    async def _until(self, ready: Any, timeout: float, what: str) -> None:
        try:
            with anyio.fail_after(timeout):
                while not ready():
                    if not self.serving:
                        raise AssertionError(self._why(f"{what}: funnel-server exited"))
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(self._why(f"{what}: nothing within {timeout:g} s")) from None

    async def reply_to(self, request_id: object, timeout: float = PROBE) -> dict[str, Any]:
        """Wait for the reply with this id (bounded)."""
        await self._until(lambda: request_id in self._replies, timeout, f"reply to {request_id}")
        return self._replies.pop(request_id)

    async def answer(self, request_id: object, timeout: float = PROBE) -> dict[str, Any]:
        """Wait for the reply with this id or, failing that, one with a null id."""
        await self._until(
            lambda: request_id in self._replies or self.orphans, timeout, f"answer to {request_id}"
        )
        if request_id in self._replies:
            return self._replies.pop(request_id)
        return self.orphans.pop(0)

    async def request(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = PROBE
    ) -> dict[str, Any]:
        request_id = self.new_id()
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(json.dumps(message).encode())
        return await self.reply_to(request_id, timeout)

    async def call(
        self, tool: str, arguments: dict[str, Any] | None = None, *, timeout: float = PROBE
    ) -> dict[str, Any]:
        return await self.request(
            "tools/call", {"name": tool, "arguments": arguments or {}}, timeout=timeout
        )

    async def heal(self, *servers: str) -> None:
        """Reconnect backends through the REST API, so one probe's damage is not the next's.

        Not part of any assertion: a probe that leaves a backend broken has failed on its
        own; this only keeps the probes after it independent.
        """
        if not self.funnel.alive:
            return
        async with httpx.AsyncClient(base_url=self.funnel.base, timeout=PROBE) as http:
            for server in servers:
                with contextlib.suppress(httpx.HTTPError):
                    await http.post(
                        f"/api/servers/{server}/reconnect",
                        headers={"Authorization": f"Bearer {API_TOKEN}"},
                    )

    async def until_answers(self, tool: str, expected: str, timeout: float = RECOVERY) -> None:
        """Call ``tool`` until it answers ``expected`` (a backend reconnecting), bounded."""
        last: dict[str, Any] = {}
        try:
            with anyio.fail_after(timeout):
                while True:
                    last = await self.call(tool, {"message": "back"}, timeout=timeout)
                    if "result" in last and result_text(last) == expected:
                        return
                    await anyio.sleep(0.2)  # polling interval of a bounded recovery loop
        except TimeoutError:
            raise AssertionError(self._why(f"{tool} never recovered; last: {last}")) from None

    async def assert_serving(self) -> None:
        """The process is alive, has printed no traceback, and the healthy backend answers."""
        assert self.serving, f"funnel-server exited:\n{self.funnel.stderr_text()[-3000:]}"
        reply = await self.call("healthy__echo", {"message": "still here"})
        assert result_text(reply) == ECHO_OK, reply
        self.funnel.assert_no_traceback()
        assert self.invalid_utf8_lines == 0, "funnel printed invalid UTF-8 on stdout"


@contextlib.asynccontextmanager
async def running_stdio(
    tmp: Path, config: dict[str, Any], *, init_timeout: float = 60
) -> AsyncIterator[StdioSession]:
    """A started ``funnel-server --stdio`` and its raw session, stopped at the end."""
    funnel = FunnelProcess(tmp, config, stdio=True)
    async with anyio.create_task_group() as tg:
        session = StdioSession(funnel, tg)
        try:
            await session.start(init_timeout)
            yield session
        finally:
            await funnel.stop()
            tg.cancel_scope.cancel()


# ------------------------------------------------------------------ the HTTP backend


class HttpBackend:
    """``hostile_http.py`` as a process: a streamable-HTTP backend with switchable faults."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, HOSTILE_HTTP],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().decode()  # printed before it serves
        assert first.startswith("PORT "), first
        self.port = int(first.split()[1])
        self.url = f"http://127.0.0.1:{self.port}/mcp"

    def mode(self, mode: str) -> None:
        response = httpx.post(f"http://127.0.0.1:{self.port}/control", json={"mode": mode})
        response.raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# ------------------------------------------------------------------ the hostile corpus

PARSE, INVALID, PARAMS = -32700, -32600, -32602
#: Codes a clear refusal of bad input may carry.
REFUSALS = frozenset({PARSE, INVALID, PARAMS})


def _deep(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + closer * depth


def _call(arguments: bytes, tool: bytes = b'"healthy__echo"', extra: bytes = b"") -> bytes:
    return (
        b'{"jsonrpc":"2.0","id":"__ID__","method":"tools/call","params":{"name":'
        + tool
        + b',"arguments":'
        + arguments
        + extra
        + b"}}"
    )


class Hostile:
    """One hostile message from a client.

    Attributes:
        name: The probe's id in the test report.
        data: The bytes; ``__ID__`` is replaced by a fresh request id.
        codes: The JSON-RPC error codes that are a correct answer; empty when the message
            needs no answer (a notification, a stray response) or any answer will do.
        addressed: Whether the answer must carry the request's id (it is readable);
            otherwise it may carry ``null``.
        ok: A successful result is acceptable too (lenient input, e.g. unusual ``_meta``).
    """

    def __init__(
        self,
        name: str,
        data: bytes,
        codes: frozenset[int] = frozenset(),
        *,
        addressed: bool = True,
        ok: bool = False,
        answered: bool = True,
    ) -> None:
        self.name = name
        self.data = data
        self.codes = codes
        self.addressed = addressed
        self.ok = ok
        self.answered = answered

    def __repr__(self) -> str:
        return self.name


CORPUS: list[Hostile] = [
    Hostile("not-json", b"hello, funnel", frozenset({PARSE}), addressed=False),
    Hostile(
        "truncated-json",
        b'{"jsonrpc":"2.0","id":"__ID__","method":"pi',
        frozenset({PARSE}),
        addressed=False,
    ),
    Hostile(
        "nul-in-string",
        b'{"jsonrpc":"2.0","id":"__ID__","method":"ping\x00"}',
        frozenset({PARSE}),
        addressed=False,
    ),
    Hostile(
        "invalid-utf8-in-arguments",
        _call(b'{"message":"\xff\xfe bad"}'),
        frozenset({PARSE}),
        addressed=False,
    ),
    Hostile(
        "invalid-utf8-in-method",
        b'{"jsonrpc":"2.0","id":"__ID__","method":"p\xc3ng"}',
        frozenset({PARSE}),
        addressed=False,
    ),
    Hostile("overlong-utf8", _call(b'{"message":"\xc0\xaf"}'), frozenset({PARSE}), addressed=False),
    Hostile(
        "utf8-surrogate-bytes",
        _call(b'{"message":"\xed\xa0\x80"}'),
        frozenset({PARSE}),
        addressed=False,
    ),
    Hostile("deep-params-5000", _call(_deep(5000)), frozenset({PARSE}), addressed=False),
    Hostile(
        "deep-object-20000",
        _call(_deep(20000, b'{"a":', b"}").replace(b"}", b"1}", 1)),
        frozenset({PARSE}),
        addressed=False,
    ),
    Hostile(
        "deep-arguments-600",
        _call(b'{"message":"m","x":' + _deep(600) + b"}"),
        frozenset({PARSE, PARAMS}),
        addressed=False,
    ),
    Hostile("deep-top-level-100000", _deep(100_000), frozenset({PARSE, INVALID}), addressed=False),
    Hostile(
        "jsonrpc-1.0", b'{"jsonrpc":"1.0","id":"__ID__","method":"ping"}', frozenset({INVALID})
    ),
    Hostile("no-jsonrpc-member", b'{"id":"__ID__","method":"ping"}', frozenset({INVALID})),
    Hostile(
        "method-is-number", b'{"jsonrpc":"2.0","id":"__ID__","method":5}', frozenset({INVALID})
    ),
    Hostile(
        "id-is-object",
        b'{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}',
        frozenset({INVALID}),
        addressed=False,
    ),
    Hostile(
        "id-is-null",
        b'{"jsonrpc":"2.0","id":null,"method":"ping"}',
        frozenset({INVALID}),
        addressed=False,
    ),
    Hostile(
        "id-is-float-1e400",
        b'{"jsonrpc":"2.0","id":1e400,"method":"ping"}',
        frozenset({INVALID}),
        addressed=False,
    ),
    Hostile(
        "params-is-string",
        b'{"jsonrpc":"2.0","id":"__ID__","method":"tools/call","params":"x"}',
        frozenset({INVALID, PARAMS}),
    ),
    Hostile(
        "result-and-method",
        b'{"jsonrpc":"2.0","id":"__ID__","method":"ping","result":{}}',
        frozenset({INVALID}),
    ),
    Hostile("json-scalar", b"42", frozenset({INVALID}), addressed=False),
    Hostile("json-string", b'"tools/call"', frozenset({INVALID}), addressed=False),
    Hostile("empty-batch", b"[]", frozenset({INVALID}), addressed=False),
    Hostile("batch-of-numbers", b"[1,2,3]", frozenset({INVALID}), addressed=False),
    Hostile("tool-name-is-number", _call(b"{}", tool=b"5"), frozenset({PARAMS})),
    Hostile(
        "tool-name-missing",
        b'{"jsonrpc":"2.0","id":"__ID__","method":"tools/call","params":{"arguments":{}}}',
        frozenset({PARAMS}),
    ),
    Hostile(
        "tools-call-without-params",
        b'{"jsonrpc":"2.0","id":"__ID__","method":"tools/call"}',
        frozenset({PARAMS}),
    ),
    Hostile("arguments-is-array", _call(b"[1,2]"), frozenset({PARAMS})),
    Hostile("arguments-is-string", _call(b'"message"'), frozenset({PARAMS})),
    Hostile("unknown-tool", _call(b"{}", tool=b'"nobody__nothing"'), frozenset({PARAMS})),
    Hostile(
        "huge-tool-name", _call(b"{}", tool=b'"' + b"n" * 1_000_000 + b'"'), frozenset({PARAMS})
    ),
    Hostile(
        "meta-is-number",
        _call(b'{"message":"m"}', extra=b',"_meta":5'),
        frozenset({PARAMS}),
        ok=True,
    ),
    Hostile(
        "progress-token-is-object",
        _call(b'{"message":"m"}', extra=b',"_meta":{"progressToken":{"a":1}}'),
        frozenset({PARAMS}),
        ok=True,
    ),
    Hostile(
        "missing-meta-on-list",
        b'{"jsonrpc":"2.0","id":"__ID__","method":"tools/list","params":{}}',
        ok=True,
    ),
    Hostile(
        "meta-version-is-number",
        b'{"jsonrpc":"2.0","id":"__ID__","method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":5}}}',
        frozenset({PARAMS, INVALID, -32022, -32020}),
    ),
    Hostile(
        "meta-is-array",
        b'{"jsonrpc":"2.0","id":"__ID__","method":"tools/list","params":{"_meta":[1]}}',
        frozenset({PARAMS, INVALID}),
        ok=True,
    ),
    Hostile(
        "lone-surrogate-escape",
        _call(b'{"message":"\\ud800"}'),
        frozenset({PARSE, PARAMS}),
        addressed=False,
    ),
    Hostile(
        "duplicate-keys",
        b'{"jsonrpc":"2.0","id":"__ID__","id":"__ID__","method":"ping"}',
        frozenset({INVALID}),
        ok=True,
    ),
    Hostile(
        "unknown-method",
        b'{"jsonrpc":"2.0","id":"__ID__","method":"no/such/method"}',
        frozenset({-32601}),
    ),
    Hostile("stray-response", b'{"jsonrpc":"2.0","id":"__ID__","result":{}}', answered=False),
    Hostile(
        "stray-error",
        b'{"jsonrpc":"2.0","id":"__ID__","error":{"code":1,"message":"x"}}',
        answered=False,
    ),
    Hostile(
        "unknown-notification",
        b'{"jsonrpc":"2.0","method":"notifications/bogus","params":{"x":1}}',
        answered=False,
    ),
    Hostile(
        "cancel-unknown-request",
        b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"nope"}}',
        answered=False,
    ),
    Hostile(
        "cancel-with-bad-params",
        b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":[1]}',
        answered=False,
    ),
]
"""Hostile client input, the same for every client boundary (stdio lines, /mcp bodies)."""

#: A line over funnel's 8 MiB stdio limit, with a readable id at its start.
HUGE = _call(b'{"message":"' + b"h" * (9 * 1024 * 1024) + b'"}')


def materialise(probe: Hostile, request_id: str) -> bytes:
    return probe.data.replace(b"__ID__", request_id.encode())
