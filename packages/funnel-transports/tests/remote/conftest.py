"""Fixtures for the remote transports: real servers on 127.0.0.1 and a JSON-RPC helper.

Helpers reach tests through fixtures (``wire``, ``servers``) because pytest's importlib
import mode does not let a test import a conftest. Every server started here is stopped
here, in a ``finally``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import anyio.abc
import msgspec
import pytest
import uvicorn
from support.mcp_ws import WS_TOKEN, websocket_server
from support.peers import (
    NodeServer,
    free_port,
    listening_socket,
    stop_process,
    wait_for_port,
)

from funnel_transports import (
    ErrorResponse,
    Message,
    Notification,
    Request,
    Response,
    StreamableHttpTransport,
    Transport,
    from_raw,
    to_raw,
)

HERE = Path(__file__).resolve().parent
HANDSHAKE_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"


@pytest.fixture(scope="module")
def everything_http() -> Iterator[str]:
    """URL of a running server-everything in streamableHttp mode (shared by a module)."""
    server = NodeServer("streamableHttp")
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}/mcp"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def everything_sse() -> Iterator[str]:
    """URL of a running server-everything in (legacy) sse mode."""
    server = NodeServer("sse")
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}/sse"
    finally:
        server.stop()


@pytest.fixture
def node_server() -> Iterator[Callable[[str], NodeServer]]:
    """A factory of restartable server-everything processes, all stopped at teardown."""
    started: list[NodeServer] = []

    def make(mode: str) -> NodeServer:
        server = NodeServer(mode)
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()


class Servers:
    """In-process servers for tests: uvicorn on a pre-bound socket, test apps by path."""

    @contextlib.asynccontextmanager
    async def uvicorn(self, app: Any, *, lifespan: str = "auto") -> AsyncIterator[int]:
        """Serve an ASGI app on 127.0.0.1 in this task group; yield its port."""
        sock = listening_socket()
        port: int = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan=lifespan,  # type: ignore[arg-type]  # uvicorn types it as a Literal
            timeout_graceful_shutdown=1,
            timeout_keep_alive=1,
        )
        server = uvicorn.Server(config)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.serve, [sock])
                try:
                    yield port
                finally:
                    server.should_exit = True
        finally:
            sock.close()

    @contextlib.asynccontextmanager
    async def streamable(self, app: Any, **options: Any) -> AsyncIterator[StreamableHttpTransport]:
        """Serve ``app`` on uvicorn and yield a streamable HTTP transport to its ``/mcp``."""
        async with (
            self.uvicorn(app) as port,
            StreamableHttpTransport(f"http://127.0.0.1:{port}/mcp", **options) as transport,
        ):
            yield transport

    @staticmethod
    def load(name: str) -> ModuleType:
        """Import a helper module that lives beside the tests (e.g. ``apps``)."""
        spec = importlib.util.spec_from_file_location(f"remote_{name}", HERE / f"{name}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    @contextlib.contextmanager
    def subprocess(self, script: str, *args: str, port: int | None = None) -> Iterator[Process]:
        """Run ``script`` (beside the tests) with ``sys.executable`` on a port."""
        process = Process(HERE / script, list(args), port or free_port())
        try:
            process.start()
            yield process
        finally:
            process.stop()


class Process:
    """A Python test server in a child process that can be killed and restarted."""

    def __init__(self, script: Path, args: list[str], port: int) -> None:
        self.script = script
        self.args = args
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(self.script), str(self.port), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@pytest.fixture
def servers() -> Servers:
    return Servers()


class Wire:
    """Message-level MCP over any transport: requests by hand, the handshake by hand."""

    def __init__(self) -> None:
        self.next_id = 1
        self.notifications: list[Notification] = []

    def request(self, method: str, params: Any = None) -> Request:
        rid = self.next_id
        self.next_id += 1
        return Request(id=rid, method=method, params=to_raw(params if params is not None else {}))

    async def call(
        self, transport: Transport, method: str, params: Any = None, *, timeout: float = 10
    ) -> Response | ErrorResponse:
        """Send a request and wait for its answer, keeping notifications seen meanwhile."""
        request = self.request(method, params)
        with anyio.fail_after(timeout):
            await transport.send(request)
            return await self.answer(transport, request.id)

    async def answer(self, transport: Transport, rid: int | str) -> Response | ErrorResponse:
        while True:
            message: Message = await transport.receive()
            if isinstance(message, Response | ErrorResponse) and message.id == rid:
                return message
            if isinstance(message, Notification):
                self.notifications.append(message)

    async def result(self, transport: Transport, method: str, params: Any = None) -> Any:
        answer = await self.call(transport, method, params)
        assert isinstance(answer, Response), answer
        return from_raw(answer.result)

    async def handshake(self, transport: Transport, version: str = HANDSHAKE_VERSION) -> Any:
        """``initialize`` + ``notifications/initialized``, as a handshake-era client does."""
        result = await self.result(
            transport,
            "initialize",
            {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "funnel-tests", "version": "0"},
            },
        )
        transport.set_protocol_version(result["protocolVersion"])
        await transport.send(Notification(method="notifications/initialized"))
        return result

    @staticmethod
    def modern_params(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """``params`` with the per-request ``_meta`` of the 2026-07-28 era."""
        meta = {
            "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
            "io.modelcontextprotocol/clientInfo": {"name": "funnel-tests", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        return {**(params or {}), "_meta": meta}

    @staticmethod
    def decode(raw: msgspec.Raw) -> Any:
        return from_raw(raw)


@pytest.fixture
def wire() -> Wire:
    return Wire()


@contextlib.asynccontextmanager
async def raw_tcp_server(handle: Callable[[anyio.abc.SocketStream], Any]) -> AsyncIterator[int]:
    """A bare TCP server on 127.0.0.1 running ``handle`` per connection; yield the port."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield port
        finally:
            tg.cancel_scope.cancel()


@pytest.fixture
def ws_servers() -> Any:
    """Factories of the WebSocket test servers (async context managers)."""

    class Factories:
        mcp = staticmethod(websocket_server)
        raw = staticmethod(raw_tcp_server)
        token = WS_TOKEN

    return Factories
