"""Streamable HTTP in the stateless 2026-07-28 era against the official SDK's server."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from funnel_transports import (
    ConnectError,
    ErrorResponse,
    Notification,
    Response,
    StreamableHttpTransport,
    from_raw,
)

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"


@pytest.fixture
def sdk_app(servers: Any) -> Any:
    return servers.load("sdk_app")


async def test_discover_list_and_call_without_a_session(
    servers: Any, sdk_app: Any, wire: Any
) -> None:
    async with servers.streamable(sdk_app.build_app(), name="sdk") as transport:
        discover = await wire.result(transport, "server/discover", wire.modern_params())
        assert MODERN in discover["supportedVersions"]
        transport.set_protocol_version(MODERN)
        tools = await wire.result(transport, "tools/list", wire.modern_params())
        assert {"echo", "slow", "hang", "grüße"} <= {tool["name"] for tool in tools["tools"]}
        echo = await wire.result(
            transport,
            "tools/call",
            wire.modern_params({"name": "echo", "arguments": {"message": "m"}}),
        )
        assert echo["content"][0]["text"] == "Echo: m"
        # The SDK validates Mcp-Name against the body: a non-ASCII name must be Base64'd.
        greet = await wire.result(
            transport, "tools/call", wire.modern_params({"name": "grüße", "arguments": {}})
        )
        assert greet["content"][0]["text"] == "hallo"
        assert transport.session_id is None


async def test_progress_notifications_arrive_before_the_result(
    servers: Any, sdk_app: Any, wire: Any
) -> None:
    async with servers.streamable(sdk_app.build_app()) as transport:
        transport.set_protocol_version(MODERN)
        params = wire.modern_params({"name": "slow", "arguments": {"steps": 3}})
        params["_meta"]["progressToken"] = "tok"
        answer = await wire.call(transport, "tools/call", params)
        assert isinstance(answer, Response)
        assert from_raw(answer.result)["content"][0]["text"] == "done after 3 steps"
        progress = [
            from_raw(n.params) for n in wire.notifications if n.method == "notifications/progress"
        ]
        assert [p["progress"] for p in progress] == [1, 2, 3]
        assert all(p["progressToken"] == "tok" for p in progress)


async def test_an_unknown_method_is_delivered_as_the_servers_jsonrpc_error(
    servers: Any, sdk_app: Any, wire: Any
) -> None:
    async with servers.streamable(sdk_app.build_app()) as transport:
        answer = await wire.call(transport, "no/such/method", wire.modern_params())
        assert isinstance(answer, ErrorResponse)
        assert answer.error.code == -32601


async def test_an_unsupported_version_comes_back_as_the_modern_error(
    servers: Any, sdk_app: Any, wire: Any
) -> None:
    async with servers.streamable(sdk_app.build_app()) as transport:
        params = wire.modern_params()
        params["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2099-01-01"
        answer = await wire.call(transport, "tools/list", params)
        assert isinstance(answer, ErrorResponse)
        assert answer.error.code == -32022


async def test_cancelling_closes_the_response_stream_and_sends_nothing(
    servers: Any, sdk_app: Any, wire: Any
) -> None:
    async with servers.streamable(sdk_app.build_app()) as transport:
        transport.set_protocol_version(MODERN)
        params = wire.modern_params({"name": "hang", "arguments": {}})
        params["_meta"]["progressToken"] = 1
        request = wire.request("tools/call", params)
        with anyio.fail_after(5):
            await transport.send(request)
            first = await transport.receive()
            assert isinstance(first, Notification)
            assert first.method == "notifications/progress"
            await transport.send(
                Notification(
                    method="notifications/cancelled",
                    params=wire_params({"requestId": request.id}),
                )
            )
            # The transport keeps working and reports nothing for the cancelled request.
            echo = await wire.call(
                transport,
                "tools/call",
                wire.modern_params({"name": "echo", "arguments": {"message": "after"}}),
            )
        assert isinstance(echo, Response)
        assert not [n for n in wire.notifications if n.method != "notifications/progress"]


async def test_a_server_restart_is_invisible_in_the_stateless_era(servers: Any, wire: Any) -> None:
    with servers.subprocess("sdk_app.py") as server:
        async with StreamableHttpTransport(f"http://127.0.0.1:{server.port}/mcp") as transport:
            transport.set_protocol_version(MODERN)
            params = wire.modern_params({"name": "hang", "arguments": {}})
            params["_meta"]["progressToken"] = 1
            request = wire.request("tools/call", params)
            with anyio.fail_after(10):
                await transport.send(request)
                assert isinstance(await transport.receive(), Notification)  # the call is running
                server.kill()
                lost = await wire.answer(transport, request.id)
                assert isinstance(lost, ErrorResponse)
                assert "lost" in lost.error.message
                with pytest.raises(ConnectError):
                    await transport.send(wire.request("tools/list", wire.modern_params()))
                server.start()
                again = await wire.result(transport, "tools/list", wire.modern_params())
            assert "echo" in {tool["name"] for tool in again["tools"]}


def wire_params(value: Any) -> Any:
    from funnel_transports import to_raw

    return to_raw(value)
