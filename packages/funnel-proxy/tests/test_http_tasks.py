"""Tasks through the ``/mcp`` endpoint: routed per session (2025-11-25), hidden where no era fits.

server-everything (npm) behind funnel's McpHttpEndpoint, driven by bare JSON-RPC over
httpx2: two handshake-era sessions, each sees only its own tasks.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from support.asgi import serve_funnel

from funnel_proxy import Funnel, McpHttpEndpoint, parse_config

pytestmark = [pytest.mark.anyio, pytest.mark.npm]

EVERYTHING = (
    Path(__file__).resolve().parents[3]
    / "tools/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
)
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
TASKS: dict[str, Any] = {"tasks": {"list": {}, "cancel": {}}}
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": TASKS,
}


@asynccontextmanager
async def served() -> AsyncIterator[str]:
    if shutil.which("node") is None or not EVERYTHING.exists():
        pytest.skip("the npm test peers are not installed (run `make install`)")
    config = parse_config(
        {"servers": {"everything": {"command": "node", "args": [str(EVERYTHING), "stdio"]}}},
        environ={"PATH": os.environ["PATH"]},
    )
    async with serve_funnel(config, {"PATH": os.environ["PATH"]}) as (url, _):
        yield url


def _reply(response: httpx2.Response) -> dict[str, Any]:
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [
            json.loads(line[5:])
            for line in response.text.splitlines()
            if line.startswith("data:") and line[5:].strip()
        ]
        replies = [event for event in events if "id" in event and "method" not in event]
        assert len(replies) == 1, events
        reply: dict[str, Any] = replies[0]
        return reply
    decoded: dict[str, Any] = response.json()
    return decoded


class Session:
    def __init__(self, http: httpx2.AsyncClient, url: str) -> None:
        self.http, self.url, self.headers = http, url, dict(HEADERS)
        self.ids = iter(range(1, 1000))

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self.ids), "method": method}
        if params is not None:
            body["params"] = params
        response = await self.http.post(self.url, headers=self.headers, json=body, timeout=60)
        if "mcp-session-id" in response.headers:
            self.headers["mcp-session-id"] = response.headers["mcp-session-id"]
        return _reply(response)

    async def start(self) -> None:
        init = await self.call(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": TASKS,
                "clientInfo": {"name": "raw", "version": "1"},
            },
        )
        assert "tasks" in init["result"]["capabilities"], init
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        await self.http.post(self.url, headers=self.headers, json=note)

    async def tool_names(self) -> set[str]:
        return {tool["name"] for tool in (await self.call("tools/list"))["result"]["tools"]}


async def test_each_mcp_session_runs_and_sees_only_its_own_tasks() -> None:
    with anyio.fail_after(90):
        async with served() as url, httpx2.AsyncClient() as http:
            alice, bob = Session(http, url), Session(http, url)
            await alice.start()
            await bob.start()
            assert "everything__simulate-research-query" in await alice.tool_names()
            created = await alice.call(
                "tools/call",
                {
                    "name": "everything__simulate-research-query",
                    "arguments": {"topic": "rivers"},
                    "task": {"ttl": 60_000},
                },
            )
            task_id = created["result"]["task"]["taskId"]
            assert task_id.startswith("everything:")

            assert (await alice.call("tasks/get", {"taskId": task_id}))["result"]["taskId"] == (
                task_id
            )
            listed = (await alice.call("tasks/list"))["result"]["tasks"]
            assert [task["taskId"] for task in listed] == [task_id]
            # Another session cannot see, poll or cancel it.
            assert (await bob.call("tasks/list"))["result"]["tasks"] == []
            refused = await bob.call("tasks/cancel", {"taskId": task_id})
            assert refused["error"]["code"] == -32602

            final = await alice.call("tasks/result", {"taskId": task_id})
            text = "".join(item.get("text", "") for item in final["result"]["content"])
            assert "Research Report: rivers" in text


async def test_a_stateless_client_is_not_offered_tools_that_run_only_as_a_2025_task() -> None:
    with anyio.fail_after(60):
        async with served() as url, httpx2.AsyncClient() as http:
            legacy = Session(http, url)
            await legacy.start()  # server-everything's task tool is listed once it is known
            assert "everything__simulate-research-query" in await legacy.tool_names()
            body = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/list",
                "params": {"_meta": MODERN_META},
            }
            headers = {**HEADERS, "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}
            response = await http.post(url, headers=headers, json=body)
            tools = {tool["name"] for tool in _reply(response)["result"]["tools"]}
    assert "everything__echo" in tools
    assert "everything__simulate-research-query" not in tools


@asynccontextmanager
async def served_modern() -> AsyncIterator[str]:
    peer = str(Path(__file__).resolve().parents[3] / "tests" / "servers" / "tasks_modern.py")
    config = parse_config(
        {
            "servers": {
                "one": {"command": sys.executable, "args": [peer, "one"]},
                "two": {"command": sys.executable, "args": [peer, "two"]},
            }
        },
        environ={"PATH": os.environ["PATH"]},
    )
    async with Funnel(config, environ={"PATH": os.environ["PATH"]}) as funnel:
        endpoint = McpHttpEndpoint(funnel, version="test")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(endpoint, log_config=None, log_level="warning", lifespan="off")
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.serve, [listener])
                try:
                    yield f"http://127.0.0.1:{port}/mcp"
                finally:
                    endpoint.close_all()
                    server.should_exit = True
        finally:
            listener.close()


async def _modern(
    http: httpx2.AsyncClient, url: str, method: str, params: dict[str, Any], name: str | None
) -> dict[str, Any]:
    meta = {
        **MODERN_META,
        "io.modelcontextprotocol/clientCapabilities": {
            "extensions": {"io.modelcontextprotocol/tasks": {}}
        },
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": meta}}
    headers = {**HEADERS, "mcp-protocol-version": "2026-07-28", "mcp-method": method}
    if name is not None:
        headers["mcp-name"] = name
    return _reply(await http.post(url, headers=headers, json=body))


async def test_2026_tasks_of_two_backends_with_colliding_ids_are_told_apart() -> None:
    with anyio.fail_after(60):
        async with served_modern() as url, httpx2.AsyncClient() as http:
            discover = await _modern(http, url, "server/discover", {}, None)
            assert (
                "io.modelcontextprotocol/tasks" in discover["result"]["capabilities"]["extensions"]
            )
            shown = []
            for server in ("one", "two"):
                created = await _modern(
                    http,
                    url,
                    "tools/call",
                    {"name": f"{server}__job", "arguments": {"what": f"{server}'s work"}},
                    f"{server}__job",
                )
                result = created["result"]
                assert result["resultType"] == "task", result
                shown.append(result["taskId"])
            # Both backends chose id "1"; the client sees two ids, each mapped back.
            assert shown == ["one:1", "two:1"]
            for server, task_id in zip(("one", "two"), shown, strict=True):
                polled = (await _modern(http, url, "tasks/get", {"taskId": task_id}, task_id))[
                    "result"
                ]
                assert polled["taskId"] == task_id
                assert polled["status"] == "completed"
                assert polled["result"]["content"][0]["text"] == f"{server} did {server}'s work"
            cancelled = await _modern(http, url, "tasks/cancel", {"taskId": "two:1"}, "two:1")
            assert "result" in cancelled, cancelled
            again = await _modern(http, url, "tasks/get", {"taskId": "two:1"}, "two:1")
            assert again["result"]["status"] == "cancelled"
            unknown = await _modern(http, url, "tasks/get", {"taskId": "1"}, "1")
            assert unknown["error"]["code"] == -32602
