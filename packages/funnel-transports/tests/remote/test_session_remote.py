"""``ClientSession`` (auto mode) over each remote transport against real peers."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from funnel_transports import (
    ClientSession,
    SseTransport,
    StreamableHttpTransport,
    TransportError,
    WebSocketTransport,
)

pytestmark = pytest.mark.anyio


@pytest.mark.npm
async def test_auto_mode_falls_back_to_the_handshake_over_streamable_http(
    everything_http: str,
) -> None:
    async with (
        StreamableHttpTransport(everything_http, name="everything") as transport,
        ClientSession(transport, request_timeout=10) as session,
    ):
        assert session.era == "legacy"
        assert transport.protocol_version == session.protocol_version
        assert transport.session_id
        assert "echo" in {tool["name"] for tool in await session.list_tools()}
        result = await session.call_tool("echo", {"message": "hi"})
        assert result["content"][0]["text"] == "Echo: hi"


@pytest.mark.npm
async def test_auto_mode_over_legacy_sse(everything_sse: str) -> None:
    async with (
        SseTransport(everything_sse, name="everything") as transport,
        ClientSession(transport, request_timeout=10) as session,
    ):
        assert session.era == "legacy"
        result = await session.call_tool("echo", {"message": "sse"})
        assert result["content"][0]["text"] == "Echo: sse"


async def test_auto_mode_finds_the_stateless_era_and_reports_progress(servers: Any) -> None:
    sdk_app = servers.load("sdk_app")
    progress: list[dict[str, Any]] = []

    async def on_progress(params: dict[str, Any]) -> None:
        progress.append(params)

    async with (
        servers.streamable(sdk_app.build_app(), name="sdk") as transport,
        ClientSession(transport, request_timeout=10) as session,
    ):
        assert session.era == "modern"
        assert transport.protocol_version == "2026-07-28"
        assert transport.session_id is None
        assert {"echo", "slow"} <= {tool["name"] for tool in await session.list_tools()}
        result = await session.call_tool("slow", {"steps": 2}, on_progress=on_progress)
        assert result["content"][0]["text"] == "done after 2 steps"
        assert [p["progress"] for p in progress] == [1, 2]


async def test_session_over_websocket_and_a_dropped_socket_fails_the_call(ws_servers: Any) -> None:
    async def headers() -> dict[str, str]:
        return {"Authorization": f"Bearer {ws_servers.token}"}

    async with (
        ws_servers.mcp() as (url, _),
        WebSocketTransport(url, name="ws", headers=headers) as transport,
        ClientSession(transport, request_timeout=10) as session,
    ):
        assert session.era == "legacy"
        assert (await session.call_tool("echo", {"message": "w"}))["content"][0][
            "text"
        ] == "Echo: w"
        with anyio.fail_after(5), pytest.raises(TransportError):
            await session.call_tool("drop")
