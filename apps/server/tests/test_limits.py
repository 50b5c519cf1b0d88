"""Per-tool call limits from ``rateLimits`` hold on every front door: /mcp, /ws, REST and stdio."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from websockets.asyncio.client import connect

from funnel_proxy import FunnelConfig
from funnel_server.testing import Served

pytestmark = pytest.mark.anyio

Serve = Callable[..., AbstractAsyncContextManager[Served]]
FUNNEL = str(Path(sys.executable).with_name("funnel-server"))


@pytest.fixture
def limited(demo_server: dict[str, Any]) -> dict[str, Any]:
    return {
        "servers": {"demo": demo_server},
        "rateLimits": {"tools": {"demo__echo": {"calls": 1, "perSeconds": 3600}}},
    }


@pytest.fixture
def limited_config(
    limited: dict[str, Any], make_config: Callable[[dict[str, Any]], FunnelConfig]
) -> FunnelConfig:
    return make_config(limited)


async def test_mcp_callers_get_a_json_rpc_error_once_the_limit_is_used_up(
    serve: Serve, limited_config: FunnelConfig
) -> None:
    async with (
        serve(limited_config) as served,
        httpx2.AsyncClient(headers=served.auth) as http,
        Client(
            streamable_http_client(f"{served.base}/mcp", http_client=http), mode="legacy"
        ) as client,
    ):
        first = await client.call_tool("demo__echo", {"message": "one"})
        with pytest.raises(MCPError) as caught:
            await client.call_tool("demo__echo", {"message": "two"})
        other = await client.call_tool("demo__add", {"a": 1, "b": 2})
    assert first.content[0].text == "one"  # type: ignore[union-attr]
    assert caught.value.error.code == -32029
    assert "Rate limit exceeded for demo__echo" in caught.value.error.message
    assert other.content[0].text == "3"  # type: ignore[union-attr]


async def test_the_limit_is_shared_by_ws_and_rest_callers(
    serve: Serve, limited_config: FunnelConfig
) -> None:
    async with (
        serve(limited_config) as served,
        connect(served.ws_url, additional_headers=served.auth, open_timeout=5) as ws,
        httpx.AsyncClient(base_url=served.base, headers=served.auth) as http,
    ):
        rest = await http.post("/api/tools/demo__echo/call", json={"arguments": {"message": "x"}})
        await ws.send(
            json.dumps(
                {"type": "execute", "id": 1, "tool": "demo__echo", "arguments": {"message": "y"}}
            )
        )
        messages = [json.loads(await ws.recv()) for _ in range(2)]
    assert rest.status_code == 200
    assert messages[0]["type"] == "tool.executing"
    assert messages[1]["type"] == "tool.error" and messages[1]["code"] == -32029


async def test_stdio_callers_are_limited_too(tmp_path: Path, limited: dict[str, Any]) -> None:
    config = tmp_path / ".mcp-funnel.json"
    config.write_text(json.dumps(limited))
    env = {
        "PATH": os.environ["PATH"],
        "MCP_FUNNEL_HOME": str(tmp_path / "home"),
        "FUNNEL_LOG_LEVEL": "WARNING",
        # These tests list every backend at once: wait for all of them, however busy
        # the machine (the default bound, 2 s, is for people).
        "FUNNEL_STARTUP_WAIT": "60",
    }
    server = StdioServerParameters(
        command=FUNNEL,
        args=["--stdio", "--config", str(config), "--port", "0"],
        env=env,
        cwd=str(tmp_path),
    )
    async with Client(server, mode="legacy") as client:
        await client.call_tool("demo__echo", {"message": "one"})
        with pytest.raises(MCPError) as caught:
            await client.call_tool("demo__echo", {"message": "two"})
    assert caught.value.error.code == -32029
    audit = [
        json.loads(line) for line in (tmp_path / "home" / "audit.log").read_text().splitlines()
    ]
    calls = [(e["client"], e["outcome"]) for e in audit if e.get("event") == "tool.call"]
    assert calls == [("stdio", "success"), ("stdio", "limited")]
