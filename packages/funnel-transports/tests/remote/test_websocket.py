"""The WebSocket transport against a small ``websockets`` MCP server and raw TCP peers."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.abc
import pytest
from websockets.utils import accept_key

from funnel_transports import (
    AuthRequired,
    ConnectError,
    ConnectionLost,
    MessageTooLarge,
    Notification,
    Response,
    TransportClosed,
    WebSocketTransport,
    from_raw,
)
from funnel_transports._websocket import websocket_url

pytestmark = pytest.mark.anyio


def bearer(token: str) -> Any:
    async def headers() -> Mapping[str, str]:
        return {"Authorization": f"Bearer {token}"}

    return headers


async def accept_then_ignore(stream: anyio.abc.SocketStream) -> None:
    """Complete the opening handshake, then never read or answer anything again."""
    async with stream:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive()
        match = re.search(rb"Sec-WebSocket-Key: *([^\r]+)", request, re.IGNORECASE)
        assert match is not None
        key = match.group(1).decode()
        await stream.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_key(key)}\r\nSec-WebSocket-Protocol: mcp\r\n\r\n".encode()
        )
        await anyio.sleep_forever()


async def never_answer(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        await anyio.sleep_forever()


def test_http_urls_map_to_websocket_urls() -> None:
    assert websocket_url("http://h:1/mcp") == "ws://h:1/mcp"
    assert websocket_url("https://h/mcp?x=1") == "wss://h/mcp?x=1"
    assert websocket_url("wss://h/mcp") == "wss://h/mcp"
    with pytest.raises(ValueError, match="WebSocket URL"):
        websocket_url("ftp://h/mcp")


async def test_handshake_carries_the_callback_headers_and_mcp_flows(
    ws_servers: Any, wire: Any
) -> None:
    async with ws_servers.mcp() as (url, app):
        async with WebSocketTransport(
            url, name="ws", headers=bearer(ws_servers.token)
        ) as transport:
            assert transport.subprotocol == "mcp"
            await wire.handshake(transport)
            tools = await wire.result(transport, "tools/list")
            assert next(tool["name"] for tool in tools["tools"]) == "echo"
            answer = await wire.call(
                transport,
                "tools/call",
                {"name": "echo", "arguments": {"message": "ws"}, "_meta": {"progressToken": "p1"}},
            )
            assert isinstance(answer, Response)
            assert from_raw(answer.result)["content"][0]["text"] == "Echo: ws"
            progress = [n for n in wire.notifications if n.method == "notifications/progress"]
            assert from_raw(progress[0].params)["progressToken"] == "p1"
        assert app.handshake_headers[-1]["Authorization"] == f"Bearer {ws_servers.token}"
        assert app.handshake_headers[-1]["Sec-WebSocket-Protocol"] == "mcp"


async def test_an_http_url_connects_over_websocket(ws_servers: Any, wire: Any) -> None:
    async with ws_servers.mcp() as (url, _):
        http_url = url.replace("ws://", "http://")
        async with WebSocketTransport(http_url, headers=bearer(ws_servers.token)) as transport:
            assert transport.name == "127.0.0.1"
            await wire.handshake(transport)


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_a_rejected_handshake_raises_auth_required_with_the_challenge(
    ws_servers: Any, token: str | None
) -> None:
    async with ws_servers.mcp() as (url, _):
        transport = WebSocketTransport(
            url, name="ws", headers=None if token is None else bearer(token)
        )
        with anyio.fail_after(5), pytest.raises(AuthRequired) as caught:
            await transport.__aenter__()
        assert caught.value.status == 401
        assert caught.value.challenge == 'Bearer realm="test"'


async def test_tokens_never_reach_the_logs(
    ws_servers: Any, wire: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        ws_servers.mcp() as (url, _),
        WebSocketTransport(url, headers=bearer(ws_servers.token)) as transport,
    ):
        await wire.handshake(transport)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("funnel_transports")]
    assert any("connected (WebSocket)" in line for line in ours)
    # The server side (websockets' own logger) prints headers; our side never does.
    assert not [line for line in ours if ws_servers.token in line]


async def test_a_dropped_socket_fails_the_pending_call_fast(ws_servers: Any, wire: Any) -> None:
    async with (
        ws_servers.mcp() as (url, _),
        WebSocketTransport(url, headers=bearer(ws_servers.token)) as transport,
    ):
        await wire.handshake(transport)
        with anyio.fail_after(5), pytest.raises(ConnectionLost):
            await wire.call(transport, "tools/call", {"name": "drop"})
        with pytest.raises(ConnectionLost):
            await transport.send(wire.request("tools/list"))


async def test_a_normal_close_by_the_server_ends_the_transport_cleanly(
    ws_servers: Any, wire: Any
) -> None:
    async with (
        ws_servers.mcp() as (url, _),
        WebSocketTransport(url, headers=bearer(ws_servers.token)) as transport,
    ):
        await wire.handshake(transport)
        with anyio.fail_after(5), pytest.raises(TransportClosed, match="bye"):
            await wire.call(transport, "tools/call", {"name": "bye"})


async def test_an_oversized_message_ends_the_connection_with_message_too_large(
    ws_servers: Any, wire: Any
) -> None:
    async with (
        ws_servers.mcp() as (url, _),
        WebSocketTransport(
            url, headers=bearer(ws_servers.token), max_message_size=4096
        ) as transport,
    ):
        await wire.handshake(transport)
        with anyio.fail_after(5), pytest.raises(MessageTooLarge):
            await wire.call(transport, "tools/call", {"name": "big", "arguments": {"size": 10000}})


async def test_a_peer_that_stops_answering_pings_is_declared_lost(ws_servers: Any) -> None:
    async with (
        ws_servers.raw(accept_then_ignore) as port,
        WebSocketTransport(
            f"ws://127.0.0.1:{port}/", ping_interval=0.05, ping_timeout=0.2
        ) as transport,
    ):
        with anyio.fail_after(5), pytest.raises(ConnectionLost, match="no pong"):
            await transport.receive()


async def test_a_silent_server_fails_the_handshake_within_the_connect_timeout(
    ws_servers: Any,
) -> None:
    async with ws_servers.raw(never_answer) as port:
        transport = WebSocketTransport(f"ws://127.0.0.1:{port}/", connect_timeout=0.3)
        with anyio.fail_after(5), pytest.raises(ConnectError, match="handshake"):
            await transport.__aenter__()


async def test_nothing_listening_is_a_connect_error() -> None:
    with anyio.fail_after(5):
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
        transport = WebSocketTransport(f"ws://127.0.0.1:{port}/")
        with pytest.raises(ConnectError, match="cannot reach"):
            await transport.__aenter__()


async def test_notifications_from_the_client_are_sent_as_text_frames(
    ws_servers: Any, wire: Any
) -> None:
    async with (
        ws_servers.mcp() as (url, _),
        WebSocketTransport(url, headers=bearer(ws_servers.token)) as transport,
    ):
        await wire.handshake(transport)
        await transport.send(Notification(method="notifications/roots/list_changed"))
        assert isinstance(await wire.call(transport, "tools/list"), Response)
