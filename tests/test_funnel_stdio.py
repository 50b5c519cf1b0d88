"""End to end: the official MCP SDK client drives ``funnel-server --stdio`` with real
servers behind it (server-everything and server-memory from npm, an SDK server)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio

FUNNEL = str(Path(sys.executable).with_name("funnel-server"))


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / ".mcp-funnel.json"
    path.write_text(json.dumps(config))
    return path


def params(config: Path, tmp_path: Path) -> StdioServerParameters:
    env = {
        "PATH": os.environ["PATH"],
        "MCP_FUNNEL_HOME": str(tmp_path / "home"),
        "FUNNEL_LOG_LEVEL": "WARNING",
        # These tests list every backend at once: wait for all of them, however busy
        # the machine (the default bound, 2 s, is for people).
        "FUNNEL_STARTUP_WAIT": "60",
    }
    return StdioServerParameters(
        command=FUNNEL, args=["--stdio", "--config", str(config)], env=env, cwd=str(tmp_path)
    )


@pytest.fixture
def config(tmp_path: Path, everything_js: Path, memory_js: Path, servers_dir: Path) -> Path:
    return write_config(
        tmp_path,
        {
            "servers": {
                "everything": {"command": "node", "args": [str(everything_js), "stdio"]},
                "memory": {
                    "command": "node",
                    "args": [str(memory_js)],
                    "env": {"MEMORY_FILE_PATH": str(tmp_path / "memory.jsonl")},
                },
                "sdk": {"command": sys.executable, "args": [str(servers_dir / "sdk_server.py")]},
            },
            "hideTools": ["everything__get-env", "everything__toggle-*"],
        },
    )


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_an_sdk_client_lists_and_calls_namespaced_tools_through_the_funnel(
    config: Path, tmp_path: Path, mode: str
) -> None:
    async with Client(params(config, tmp_path), mode=mode) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert {"everything__echo", "memory__create_entities", "sdk__add"} <= set(names)
        backend_tools = [name for name in names if "__" in name]
        assert backend_tools == sorted(backend_tools), "tools are listed in a deterministic order"
        assert names[: -len(backend_tools)] == [
            "bridge_tool_request",
            "discover_tools_by_words",
            "get_tool_schema",
            "load_toolset",
        ]
        assert "everything__get-env" not in names
        assert not any(name.startswith("everything__toggle-") for name in names)

        echo = await client.call_tool("everything__echo", {"message": "through the funnel"})
        assert echo.content[0].text == "Echo: through the funnel"  # type: ignore[union-attr]
        added = await client.call_tool("sdk__add", {"a": 20, "b": 22})
        assert added.content[0].text == "42"  # type: ignore[union-attr]

        entity = {"name": "funnel", "entityType": "project", "observations": ["proxies MCP"]}
        await client.call_tool("memory__create_entities", {"entities": [entity]})
        graph = await client.call_tool("memory__read_graph", {})
        assert "proxies MCP" in graph.content[0].text  # type: ignore[union-attr]

        prompts = [prompt.name for prompt in (await client.list_prompts()).prompts]
        assert "sdk__greeting" in prompts
        greeting = await client.get_prompt("sdk__greeting", {"name": "Ada"})
        assert "Hello, Ada!" in json.dumps(greeting.model_dump(mode="json"))
        memo = await client.read_resource("memo://hello")
        assert memo.contents[0].text == "hello from the sdk peer"  # type: ignore[union-attr]


async def test_hidden_and_unknown_tools_cannot_be_called(config: Path, tmp_path: Path) -> None:
    async with Client(params(config, tmp_path), mode="legacy") as client:
        for name in ("everything__get-env", "nobody__nothing"):
            # MCP answers an unknown tool with a protocol error (-32602), not a tool result.
            with pytest.raises(MCPError) as caught:
                await client.call_tool(name, {})
            assert caught.value.error.code == -32602
            assert caught.value.error.message == f"Tool not found: {name}"
        # The session survives the errors.
        assert (await client.call_tool("everything__echo", {"message": "ok"})).content[
            0
        ].text == "Echo: ok"  # type: ignore[union-attr]


async def test_a_backend_that_cannot_start_does_not_stop_the_others(
    tmp_path: Path, servers_dir: Path
) -> None:
    config = write_config(
        tmp_path,
        {
            "servers": {
                "ghost": {"command": "no-such-mcp-server-binary"},
                "sdk": {"command": sys.executable, "args": [str(servers_dir / "sdk_server.py")]},
            }
        },
    )
    async with Client(params(config, tmp_path), mode="legacy") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "sdk__echo" in names
        assert not any(name.startswith("ghost__") for name in names)


async def test_a_stdio_backend_sees_only_the_environment_it_was_given(
    tmp_path: Path, everything_js: Path
) -> None:
    config = write_config(
        tmp_path,
        {
            "servers": {
                "everything": {
                    "command": "node",
                    "args": [str(everything_js), "stdio"],
                    "env": {"GRANTED": "yes"},
                }
            }
        },
    )
    server = params(config, tmp_path)
    assert server.env is not None
    server.env["FUNNEL_PARENT_SECRET"] = "must-not-leak"
    async with Client(server, mode="legacy") as client:
        result = await client.call_tool("everything__get-env", {})
    seen = result.content[0].text  # type: ignore[union-attr]
    assert '"GRANTED": "yes"' in seen
    assert "PATH" in seen
    assert "FUNNEL_PARENT_SECRET" not in seen
    assert "must-not-leak" not in seen


@pytest.fixture
def math_toolset(tmp_path: Path, servers_dir: Path) -> Path:
    return write_config(
        tmp_path,
        {
            "servers": {
                "sdk": {"command": sys.executable, "args": [str(servers_dir / "sdk_server.py")]}
            },
            "exposeTools": ["sdk__echo"],
            "toolsets": {"math": ["sdk__add"]},
        },
    )


async def test_a_handshake_era_client_hears_list_changed_when_a_toolset_is_loaded(
    tmp_path: Path, math_toolset: Path
) -> None:
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if "tools/list_changed" in repr(message):
            changed.set()

    async with Client(
        params(math_toolset, tmp_path), mode="legacy", message_handler=on_message
    ) as client:
        assert "sdk__add" not in {tool.name for tool in (await client.list_tools()).tools}
        loaded = await client.call_tool("load_toolset", {"name": "math"})
        assert "Enabled 1 tools" in loaded.content[0].text  # type: ignore[union-attr]
        with anyio.fail_after(10):
            await changed.wait()
        assert "sdk__add" in {tool.name for tool in (await client.list_tools()).tools}


async def test_a_stateless_era_client_hears_list_changed_through_its_subscription(
    tmp_path: Path, math_toolset: Path
) -> None:
    async with Client(params(math_toolset, tmp_path)) as client:
        assert "sdk__add" not in {tool.name for tool in (await client.list_tools()).tools}
        async with client.listen(tools_list_changed=True) as subscription:
            assert subscription.honored.tools_list_changed
            await client.call_tool("load_toolset", {"name": "math"})
            with anyio.fail_after(10):
                event = await anext(subscription)
        assert "tools" in type(event).__name__.lower() or "tools" in repr(event).lower()
        assert "sdk__add" in {tool.name for tool in (await client.list_tools()).tools}
