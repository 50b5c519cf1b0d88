"""McpHttpEndpoint with no framework around it: plain uvicorn, the official SDK client, both eras."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from funnel_proxy import Funnel, McpHttpEndpoint, parse_config

pytestmark = pytest.mark.anyio

SERVERS = Path(__file__).resolve().parents[3] / "tests" / "servers"


@asynccontextmanager
async def served() -> AsyncIterator[tuple[str, McpHttpEndpoint]]:
    config = parse_config(
        {"servers": {"sdk": {"command": sys.executable, "args": [str(SERVERS / "sdk_server.py")]}}},
        environ={"PATH": os.environ["PATH"]},
    )
    async with Funnel(config, environ={"PATH": os.environ["PATH"]}) as funnel:
        endpoint = McpHttpEndpoint(funnel, version="test")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)  # connections queue here until uvicorn accepts them
        port = listener.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(endpoint, log_config=None, log_level="warning", lifespan="off")
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.serve, [listener])
                try:
                    yield f"http://127.0.0.1:{port}/mcp", endpoint
                finally:
                    endpoint.close_all()
                    server.should_exit = True
        finally:
            listener.close()


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
