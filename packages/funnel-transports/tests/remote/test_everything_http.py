"""Streamable HTTP against the npm reference server ``server-everything``."""

from __future__ import annotations

from typing import Any

import pytest

from funnel_transports import StreamableHttpTransport

pytestmark = [pytest.mark.anyio, pytest.mark.npm]


async def test_handshake_assigns_a_session_and_tools_list_works(
    everything_http: str, wire: Any
) -> None:
    async with StreamableHttpTransport(everything_http, name="everything") as transport:
        result = await wire.handshake(transport)
        assert result["protocolVersion"]
        assert transport.session_id
        tools = await wire.result(transport, "tools/list")
        names = {tool["name"] for tool in tools["tools"]}
        assert "echo" in names
        echo = await wire.result(
            transport, "tools/call", {"name": "echo", "arguments": {"message": "hi"}}
        )
        assert echo["content"][0]["text"] == "Echo: hi"
