"""Two McpHttpEndpoint replicas with one state key, behind a round-robin front, on uvicorn.

Each replica is a separate :class:`Funnel` with its own backend process (the SDK test
peer); the front is a plain ASGI app that hands each HTTP request to the next replica in
turn, as a load balancer without stickiness does. The official SDK client (handshake era,
``mode="legacy"``) sees one server.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from funnel_proxy import Funnel, McpHttpEndpoint, SessionSharing, parse_config
from funnel_proxy._http_server import Receive, Scope, Send
from funnel_proxy._session_ticket import SessionTicket, seal_ticket
from funnel_tokenstore import StateKeys

pytestmark = pytest.mark.anyio

SERVERS = Path(__file__).resolve().parents[3] / "tests" / "servers"
KEYS = StateKeys([os.urandom(32)]).derive("mcp-sessions")
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@dataclass
class Front:
    """Round robin over the replicas, counting what each served."""

    replicas: list[McpHttpEndpoint]
    served: list[list[str]] = field(default_factory=list)
    turn: int = 0
    pinned: int | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        index = self.turn % len(self.replicas) if self.pinned is None else self.pinned
        self.turn += 1
        while len(self.served) < len(self.replicas):
            self.served.append([])
        self.served[index].append(scope["method"])
        await self.replicas[index](scope, receive, send)


@asynccontextmanager
async def replica(
    keys: StateKeys | None = KEYS, sharing: SessionSharing | None = None, echo: str = "Echo"
) -> AsyncIterator[McpHttpEndpoint]:
    environ = {"PATH": os.environ["PATH"], "SDK_PEER_ECHO": echo}
    config = parse_config(
        {
            "servers": {
                "sdk": {
                    "command": sys.executable,
                    "args": [str(SERVERS / "sdk_server.py")],
                    "env": {"SDK_PEER_ECHO": echo},
                }
            }
        },
        environ=environ,
    )
    async with Funnel(config, environ=environ) as funnel:
        endpoint = McpHttpEndpoint(funnel, version="test", state_keys=keys, sharing=sharing)
        async with endpoint.replicate():
            try:
                yield endpoint
            finally:
                endpoint.close_all()


@asynccontextmanager
async def serve(front: Front) -> AsyncIterator[str]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(front, log_config=None, log_level="warning", lifespan="off")
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [listener])
            try:
                yield f"http://127.0.0.1:{port}/mcp"
            finally:
                for endpoint in front.replicas:
                    endpoint.close_all()  # ends GET streams so uvicorn can stop
                server.should_exit = True
    finally:
        listener.close()


@asynccontextmanager
async def replicas(
    count: int = 2, sharing: list[SessionSharing] | None = None
) -> AsyncIterator[tuple[str, Front]]:
    async with AsyncExitStack() as stack:
        endpoints = [
            await stack.enter_async_context(
                replica(sharing=sharing[i] if sharing else None, echo=f"Echo{i}")
            )
            for i in range(count)
        ]
        front = Front(endpoints)
        url = await stack.enter_async_context(serve(front))
        yield url, front


def _text(result: Any) -> str:
    return str(result.content[0].text)


async def test_a_session_initialized_on_one_replica_is_served_by_the_other_from_its_next_request() -> (
    None
):
    with anyio.fail_after(60):
        async with (
            replicas() as (url, front),
            httpx2.AsyncClient() as http,
            Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
        ):
            echoes = {
                _text(await client.call_tool("sdk__echo", {"message": "hi"})) for _ in range(6)
            }
            tools = await client.list_tools()
        # Each replica's own backend answered: the calls really were spread over both.
        assert echoes == {"Echo0: hi", "Echo1: hi"}
        assert "sdk__echo" in {tool.name for tool in tools.tools}
        assert all("POST" in served for served in front.served)
        assert front.served[0][0] == "POST"  # initialize went to replica 0 ...
        assert all(endpoint.session_count <= 1 for endpoint in front.replicas)


async def test_a_session_survives_the_replica_that_started_it() -> None:
    with anyio.fail_after(60):
        async with replicas() as (url, front), httpx2.AsyncClient() as http:
            front.pinned = 0
            response = await http.post(url, json=INIT, headers=HEADERS)
            session_id = response.headers["mcp-session-id"]
            assert session_id.startswith("s1.")
            headers = {
                **HEADERS,
                "mcp-session-id": session_id,
                "mcp-protocol-version": "2025-11-25",
            }
            await http.post(
                url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
            )
            # Replica 0 dies: everything it held is gone. Replica 1 has never seen the session.
            front.replicas[0].close_all()
            front.pinned = 1
            assert front.replicas[1].session_count == 0
            call = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "sdk__echo", "arguments": {"message": "still here"}},
            }
            answer = await http.post(url, json=call, headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.headers["mcp-session-id"] == session_id
            assert answer.json()["result"]["content"][0]["text"] == "Echo1: still here"
            assert front.replicas[1].session_count == 1


async def test_ids_that_do_not_open_are_unknown_sessions_never_errors() -> None:
    with anyio.fail_after(60):
        async with replicas(count=1) as (url, front), httpx2.AsyncClient() as http:
            response = await http.post(url, json=INIT, headers=HEADERS)
            good = response.headers["mcp-session-id"]
            other_keys = StateKeys([os.urandom(32)]).derive("mcp-sessions")
            elsewhere = seal_ticket(
                SessionTicket(
                    number=os.urandom(16),
                    protocol_version="2025-11-25",
                    client_info={},
                    capabilities={},
                    expires=4e9,
                ),
                other_keys,
            )
            tampered = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
            ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
            for session_id in (elsewhere, tampered, "s1.garbage", "random-old-style-id"):
                for method in ("POST", "GET", "DELETE"):
                    answer = await http.request(
                        method,
                        url,
                        json=ping if method == "POST" else None,
                        headers={**HEADERS, "mcp-session-id": session_id},
                    )
                    assert answer.status_code == 404, (method, session_id, answer.text)
            still = await http.post(url, json=ping, headers={**HEADERS, "mcp-session-id": good})
            assert still.status_code == 200
            assert front.replicas[0].session_count == 1


async def test_without_state_keys_ids_are_random_and_held_by_one_process() -> None:
    with anyio.fail_after(60):
        async with AsyncExitStack() as stack:
            endpoints = [
                await stack.enter_async_context(replica(keys=None, echo=f"Echo{i}"))
                for i in range(2)
            ]
            front = Front(endpoints, pinned=0)
            url = await stack.enter_async_context(serve(front))
            http = await stack.enter_async_context(httpx2.AsyncClient())
            response = await http.post(url, json=INIT, headers=HEADERS)
            session_id = response.headers["mcp-session-id"]
            assert not session_id.startswith("s1.")
            front.pinned = 1
            ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
            answer = await http.post(
                url, json=ping, headers={**HEADERS, "mcp-session-id": session_id}
            )
            assert answer.status_code == 404
