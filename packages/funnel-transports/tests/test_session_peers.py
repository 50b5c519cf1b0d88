"""ClientSession against servers nobody here wrote (npm reference servers, the official SDK)
and against the scripted server for pagination and cancellation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from funnel_transports import (
    ClientSession,
    Notification,
    RequestTimeout,
    SessionMode,
    StdioTransport,
)

pytestmark = pytest.mark.anyio


async def test_server_everything_lists_calls_reports_progress_and_signals_list_changed(
    peers: Any,
) -> None:
    command, args = peers.node(peers.everything, "stdio")
    list_changed = anyio.Event()

    async def on_notification(message: Notification) -> None:
        if message.method == "notifications/tools/list_changed":
            list_changed.set()

    transport = StdioTransport(command, args, env=peers.base_env(), name="everything")
    async with transport, ClientSession(transport, notification_handler=on_notification) as session:
        # A handshake-era server: the auto probe falls back to initialize.
        assert session.era == "legacy"
        assert session.protocol_version == "2025-11-25"
        tools = {tool["name"] for tool in await session.list_tools()}
        assert {"echo", "get-sum", "trigger-long-running-operation"} <= tools
        assert await session.call_tool("echo", {"message": "hi"}) == {
            "content": [{"type": "text", "text": "Echo: hi"}]
        }
        progress: list[dict[str, Any]] = []

        async def on_progress(params: dict[str, Any]) -> None:
            progress.append(params)

        result = await session.call_tool(
            "trigger-long-running-operation", {"duration": 0.2, "steps": 3}, on_progress=on_progress
        )
        assert "completed" in result["content"][0]["text"]
        assert [p["progress"] for p in progress] == [1, 2, 3]
        with anyio.fail_after(5):
            await list_changed.wait()
    assert transport.returncode is not None


async def test_server_memory_creates_and_reads_entities(peers: Any, tmp_path: Path) -> None:
    command, args = peers.node(peers.memory)
    env = {**peers.base_env(), "MEMORY_FILE_PATH": str(tmp_path / "memory.jsonl")}
    transport = StdioTransport(command, args, env=env, name="memory")
    async with transport, ClientSession(transport) as session:
        assert "create_entities" in {tool["name"] for tool in await session.list_tools()}
        entity = {"name": "funnel", "entityType": "project", "observations": ["is an MCP proxy"]}
        await session.call_tool("create_entities", {"entities": [entity]})
        graph = await session.call_tool("read_graph")
    assert "is an MCP proxy" in json.dumps(graph)


@pytest.mark.parametrize(
    ("mode", "era", "version"),
    [
        ("auto", "modern", "2026-07-28"),
        ("modern", "modern", "2026-07-28"),
        ("legacy", "legacy", "2025-11-25"),
    ],
)
async def test_the_official_sdk_server_works_in_each_mode(
    peers: Any, mode: SessionMode, era: str, version: str
) -> None:
    command, args = peers.sdk_server()
    transport = StdioTransport(command, args, env=peers.base_env(), name="sdk")
    async with transport, ClientSession(transport, mode=mode) as session:
        assert (session.era, session.protocol_version) == (era, version)
        assert session.server_info is not None and session.server_info.name == "sdk-peer"
        assert {"echo", "add", "slow"} <= {tool["name"] for tool in await session.list_tools()}
        assert (await session.call_tool("add", {"a": 2, "b": 3}))["structuredContent"] == {
            "result": 5
        }
        steps: list[str] = []

        async def on_progress(params: dict[str, Any]) -> None:
            steps.append(params["message"])

        result = await session.call_tool("slow", {"steps": 3}, on_progress=on_progress)
        assert result["content"][0]["text"] == "done after 3 steps"
        assert steps == ["step 1", "step 2", "step 3"]
        prompts = await session.list_all("prompts/list", "prompts")
        assert [p["name"] for p in prompts] == ["greeting"]
        with pytest.raises(RequestTimeout):
            await session.call_tool("wait_forever", timeout=0.2)
        # The session is still usable after a timed-out call.
        assert (await session.call_tool("echo", {"message": "after"}))["content"][0][
            "text"
        ] == "Echo: after"


async def test_list_helpers_follow_every_page(peers: Any) -> None:
    command, args = peers.scripted("paged")
    transport = StdioTransport(command, args, env=peers.base_env(), name="paged")
    async with transport, ClientSession(transport) as session:
        tools = await session.list_tools()
    assert [tool["name"] for tool in tools] == [f"tool_{i:02d}" for i in range(25)]


async def test_a_cancelled_or_timed_out_call_is_cancelled_at_the_server(peers: Any) -> None:
    command, args = peers.scripted("normal")
    transport = StdioTransport(command, args, env=peers.base_env(), name="normal")
    async with transport, ClientSession(transport) as session:
        with anyio.move_on_after(0.1):
            await session.call_tool("block")
        with pytest.raises(RequestTimeout):
            await session.call_tool("block", timeout=0.1)
        cancelled = json.loads((await session.call_tool("cancelled"))["content"][0]["text"])
    # The probe and initialize took ids 1 and 2; the two blocked calls were 3 and 4.
    assert cancelled == [3, 4]
