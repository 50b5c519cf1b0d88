"""Legacy HTTP+SSE against the npm reference server ``server-everything`` (sse mode)."""

from __future__ import annotations

from typing import Any

import pytest

from funnel_transports import SseTransport

pytestmark = [pytest.mark.anyio, pytest.mark.npm]


async def test_endpoint_event_is_followed_and_calls_answer_on_the_stream(
    everything_sse: str, wire: Any
) -> None:
    async with SseTransport(everything_sse, name="everything") as transport:
        assert transport.endpoint is not None
        assert transport.endpoint.startswith(everything_sse.removesuffix("/sse"))
        assert "/message" in transport.endpoint
        await wire.handshake(transport)
        tools = await wire.result(transport, "tools/list")
        assert "echo" in {tool["name"] for tool in tools["tools"]}
        echo = await wire.result(
            transport, "tools/call", {"name": "echo", "arguments": {"message": "sse"}}
        )
        assert echo["content"][0]["text"] == "Echo: sse"
