"""End to end: editing the config of a running ``funnel-server --stdio`` changes what an
official SDK client sees, announced by ``list_changed``; untouched backends keep their
process."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.anyio

FUNNEL = str(Path(sys.executable).with_name("funnel-server"))


def peer(servers_dir: Path, *tools: str) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(servers_dir / "pid_server.py"), *tools]}


def write(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)  # as editors save: a new file renamed over the old one


async def test_a_config_edit_reaches_an_sdk_client_and_restarts_only_what_changed(
    tmp_path: Path, servers_dir: Path
) -> None:
    path = tmp_path / ".mcp-funnel.json"
    write(path, {"servers": {"keep": peer(servers_dir), "change": peer(servers_dir)}})
    params = StdioServerParameters(
        command=FUNNEL,
        args=["--stdio", "--config", str(path), "--port", "0"],
        env={
            "PATH": os.environ["PATH"],
            "MCP_FUNNEL_HOME": str(tmp_path / "home"),
            "FUNNEL_LOG_LEVEL": "WARNING",
        },
        cwd=str(tmp_path),
    )
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        nonlocal changed
        if "tools/list_changed" in repr(message):
            changed.set()

    async def names(client: Client) -> list[str]:
        return [tool.name for tool in (await client.list_tools()).tools if "__" in tool.name]

    async def pid(client: Client, server: str) -> int:
        result = await client.call_tool(f"{server}__pid", {})
        return int(result.content[0].text)  # type: ignore[union-attr]

    async def until_listed(client: Client, expected: list[str]) -> None:
        nonlocal changed
        with anyio.fail_after(20):
            while True:
                await changed.wait()
                changed = anyio.Event()
                if await names(client) == expected:
                    return

    async with Client(params, mode="legacy", message_handler=on_message) as client:
        assert await names(client) == ["change__pid", "keep__pid"]
        keep, change = await pid(client, "keep"), await pid(client, "change")
        changed = anyio.Event()

        write(
            path,
            {
                "servers": {
                    "keep": peer(servers_dir),
                    "change": peer(servers_dir, "extra", "secret"),
                    "fresh": peer(servers_dir),
                },
                "hideTools": ["change__secret"],
            },
        )
        await until_listed(client, ["change__extra", "change__pid", "fresh__pid", "keep__pid"])
        assert await pid(client, "keep") == keep, "an untouched backend was restarted"
        assert await pid(client, "change") != change

        # A filter-only edit restarts nothing.
        write(
            path,
            {
                "servers": {
                    "keep": peer(servers_dir),
                    "change": peer(servers_dir, "extra", "secret"),
                    "fresh": peer(servers_dir),
                },
                "hideTools": ["change__*"],
            },
        )
        await until_listed(client, ["fresh__pid", "keep__pid"])
        assert await pid(client, "keep") == keep
