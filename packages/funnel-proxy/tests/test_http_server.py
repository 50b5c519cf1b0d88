"""McpHttpEndpoint with no framework around it: plain uvicorn, the official SDK client, both eras."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from support.asgi import serve_funnel

from funnel_proxy import McpHttpEndpoint, parse_config

pytestmark = pytest.mark.anyio

SERVERS = Path(__file__).resolve().parents[3] / "tests" / "servers"


@asynccontextmanager
async def served() -> AsyncIterator[tuple[str, McpHttpEndpoint]]:
    config = parse_config(
        {"servers": {"sdk": {"command": sys.executable, "args": [str(SERVERS / "sdk_server.py")]}}},
        environ={"PATH": os.environ["PATH"]},
    )
    async with serve_funnel(config, {"PATH": os.environ["PATH"]}) as (url, endpoint):
        yield url, endpoint


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_endpoint_serves_the_sdk_client_in_both_eras(mode: str) -> None:
    with anyio.fail_after(60):
        async with (
            served() as (url, endpoint),
            httpx2.AsyncClient() as http,
            Client(streamable_http_client(url, http_client=http), mode=mode) as client,
        ):
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert "sdk__echo" in names
            echo = await client.call_tool("sdk__echo", {"message": "no framework"})
            assert echo.content[0].text == "Echo: no framework"  # type: ignore[union-attr]
            assert endpoint.session_count == (1 if mode == "legacy" else 0)
