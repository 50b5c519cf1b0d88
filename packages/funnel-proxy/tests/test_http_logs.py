"""A backend's log message during a handshake-era ``/mcp`` call rides that call's POST stream.

Without a GET stream the session had nowhere else to hear it; with one, the message
still comes with the call that caused it, before its result.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from support.asgi import serve_funnel

from funnel_proxy import McpHttpEndpoint, parse_config

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:.*(deprecated|removed) as of 2026-07-28"),
]

SERVERS = Path(__file__).resolve().parents[3] / "tests" / "servers"


@asynccontextmanager
async def served() -> AsyncIterator[tuple[str, McpHttpEndpoint]]:
    config = parse_config(
        {"servers": {"sdk": {"command": sys.executable, "args": [str(SERVERS / "sdk_server.py")]}}},
        environ={"PATH": os.environ["PATH"]},
    )
    async with serve_funnel(config, {"PATH": os.environ["PATH"]}) as (url, endpoint):
        yield url, endpoint


HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def _events(body: str) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("data:").strip())
        for line in body.splitlines()
        if line.startswith("data:") and line.removeprefix("data:").strip()
    ]


async def test_a_log_message_goes_on_the_post_stream_of_the_call_without_a_get_stream() -> None:
    with anyio.fail_after(60):
        async with served() as (url, _), httpx2.AsyncClient() as http:
            init = await http.post(
                url,
                headers=HEADERS,
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "raw", "version": "1"},
                    },
                },
            )
            session = {**HEADERS, "mcp-session-id": init.headers["mcp-session-id"]}
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            await http.post(url, headers=session, json=note)
            level = {"level": "info"}
            set_level = {"jsonrpc": "2.0", "id": 9, "method": "logging/setLevel", "params": level}
            assert "error" not in (await http.post(url, headers=session, json=set_level)).text
            call = await http.post(
                url,
                headers=session,
                json={
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {"name": "sdk__chatty", "arguments": {"message": "on my way"}},
                },
            )
    assert call.headers["content-type"].startswith("text/event-stream"), call.text
    events = _events(call.text)
    methods = [event.get("method", "result" if "result" in event else "?") for event in events]
    assert methods == ["notifications/message", "result"], events
    log = events[0]["params"]
    assert log["data"] == "on my way"
    assert log["logger"].startswith("sdk")


async def test_the_sdk_client_hears_the_log_message_before_the_calls_result() -> None:
    heard: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        heard.append(params)

    with anyio.fail_after(60):
        async with (
            served() as (url, _),
            httpx2.AsyncClient() as http,
            Client(
                streamable_http_client(url, http_client=http),
                mode="legacy",
                logging_callback=on_log,
            ) as client,
        ):
            await client.set_logging_level("info")
            result = await client.call_tool("sdk__chatty", {"message": "hello logs"})
            # Sent on the call's own stream, it is handled before the result is.
            assert [p.data for p in heard] == ["hello logs"]
    assert not result.is_error
