"""Streamable HTTP and legacy SSE against servers that misbehave on purpose (``apps.py``)."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx
import pytest

from funnel_transports import (
    AuthRequired,
    ConnectError,
    ConnectionLost,
    ErrorResponse,
    HttpStatusError,
    Notification,
    Response,
    SessionExpired,
    SseTransport,
    StreamableHttpTransport,
    TransportClosed,
    from_raw,
    header_params,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def apps(servers: Any) -> Any:
    return servers.load("apps")


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


async def test_handshake_era_session_get_stream_and_delete(
    servers: Any, apps: Any, wire: Any
) -> None:
    app = apps.FaultApp()
    async with servers.uvicorn(app) as port:
        async with StreamableHttpTransport(
            f"http://127.0.0.1:{port}/mcp", name="fault"
        ) as transport:
            await wire.handshake(transport)
            assert transport.session_id == "s-1"
            # The GET stream opens after `initialized`, drops after one event (retry: 10 ms)
            # and is reconnected with Last-Event-ID: both notifications arrive.
            with anyio.fail_after(5):
                first = await transport.receive()
                second = await transport.receive()
            assert isinstance(first, Notification)
            assert isinstance(second, Notification)
            assert [first.method, second.method] == [
                "notifications/tools/list_changed",
                "notifications/resources/list_changed",
            ]
            answer = await wire.call(transport, "tools/call", call("sse_echo", message="x"))
            assert isinstance(answer, Response)
            assert from_raw(answer.result)["content"][0]["text"] == "Echo: x"
        posts = [r for r in app.requests if r["method"] == "tools/call"]
        assert posts[0]["headers"]["mcp-session-id"] == "s-1"
        assert posts[0]["headers"]["mcp-protocol-version"] == "2025-11-25"
        assert posts[0]["headers"]["mcp-method"] == "tools/call"
        assert posts[0]["headers"]["mcp-name"] == "sse_echo"
        assert "application/json" in posts[0]["headers"]["accept"]
        assert "text/event-stream" in posts[0]["headers"]["accept"]
        assert app.get_count == 2
        assert app.deleted == ["s-1"]


async def test_a_404_on_the_session_raises_session_expired_and_ends_the_inbox(
    servers: Any, apps: Any, wire: Any
) -> None:
    async with servers.streamable(apps.FaultApp(), get_stream=False) as transport:
        await wire.handshake(transport)
        await wire.call(transport, "tools/call", call("expire"))
        with pytest.raises(SessionExpired):
            await transport.send(wire.request("tools/call", call("echo")))
        with pytest.raises(SessionExpired):
            await transport.receive()


@pytest.mark.parametrize("status", [401, 403])
async def test_401_and_403_raise_auth_required_with_the_challenge(
    servers: Any, apps: Any, wire: Any, status: int
) -> None:
    async with servers.streamable(apps.FaultApp(), get_stream=False) as transport:
        await wire.handshake(transport)
        with pytest.raises(AuthRequired) as caught:
            await transport.send(wire.request("tools/call", call("status", status=status)))
        assert caught.value.status == status
        assert caught.value.challenge is not None
        assert caught.value.challenge.startswith("Bearer resource_metadata=")


async def test_500_raises_http_status_error(servers: Any, apps: Any, wire: Any) -> None:
    async with servers.streamable(apps.FaultApp(), get_stream=False) as transport:
        await wire.handshake(transport)
        with pytest.raises(HttpStatusError) as caught:
            await transport.send(
                wire.request("tools/call", call("status", status=500, body="boom"))
            )
        assert caught.value.status == 500
        assert "boom" in str(caught.value)


async def test_a_500_carrying_a_jsonrpc_error_is_delivered_as_the_answer(
    servers: Any, apps: Any, wire: Any
) -> None:
    async with servers.streamable(apps.FaultApp(), get_stream=False) as transport:
        await wire.handshake(transport)
        body = '{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal"}}'
        answer = await wire.call(transport, "tools/call", call("status", status=500, body=body))
        assert isinstance(answer, ErrorResponse)
        assert answer.error.code == -32603


async def test_429_with_a_long_retry_after_raises_at_once(
    servers: Any, apps: Any, wire: Any
) -> None:
    async with servers.streamable(apps.FaultApp(), get_stream=False) as transport:
        await wire.handshake(transport)
        with anyio.fail_after(5), pytest.raises(HttpStatusError) as caught:
            await transport.send(
                wire.request("tools/call", call("status", status=429, retry_after=120))
            )
        assert caught.value.status == 429
        assert caught.value.retry_after == 120


async def test_429_with_a_short_retry_after_is_retried(servers: Any, apps: Any, wire: Any) -> None:
    app = apps.FaultApp()
    async with servers.streamable(app, get_stream=False) as transport:
        await wire.handshake(transport)
        answer = await wire.call(transport, "tools/call", call("flaky", message="again"))
        assert isinstance(answer, Response)
    assert [r["method"] for r in app.requests].count("tools/call") == 2


async def test_a_4xx_for_a_request_becomes_a_jsonrpc_error_naming_the_server(
    servers: Any, apps: Any, wire: Any
) -> None:
    async with servers.streamable(apps.FaultApp(), name="flaky-srv", get_stream=False) as transport:
        await wire.handshake(transport)
        answer = await wire.call(
            transport, "tools/call", call("status", status=400, body="Bad Request: nope")
        )
        assert isinstance(answer, ErrorResponse)
        assert answer.error.code == -32600
        assert answer.error.message == "HTTP 400 from flaky-srv: Bad Request: nope"


async def test_a_4xx_for_a_notification_raises(servers: Any, apps: Any, wire: Any) -> None:
    async with servers.streamable(apps.FaultApp(), get_stream=False) as transport:
        await wire.handshake(transport)
        await wire.call(transport, "tools/call", call("expire"))
        # No session id any more → 404 without a session would be "no such endpoint".
        with pytest.raises(SessionExpired):
            await transport.send(Notification(method="notifications/roots/list_changed"))


@pytest.mark.parametrize("tool", ["early_close", "drop"])
async def test_a_stream_that_ends_before_the_response_fails_the_call_fast(
    servers: Any, apps: Any, wire: Any, tool: str
) -> None:
    async with servers.streamable(apps.FaultApp(), name="fault", get_stream=False) as transport:
        await wire.handshake(transport)
        answer = await wire.call(transport, "tools/call", call(tool), timeout=5)
        assert isinstance(answer, ErrorResponse)
        assert answer.error.code == -32000
        assert "connection to fault lost before the response" in answer.error.message
        assert [n.method for n in wire.notifications] == ["notifications/progress"]
        # The transport is still usable.
        assert isinstance(await wire.call(transport, "tools/call", call("echo")), Response)


async def test_malformed_sse_events_are_skipped_and_logged(
    servers: Any, apps: Any, wire: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="funnel_transports")
    async with servers.streamable(apps.FaultApp(), get_stream=False) as transport:
        await wire.handshake(transport)
        answer = await wire.call(transport, "tools/call", call("malformed", message="ok"))
        assert isinstance(answer, Response)
        assert from_raw(answer.result)["content"][0]["text"] == "Echo: ok"
    assert "dropped a malformed message" in caplog.text


@pytest.mark.parametrize("tool", ["slowloris", "slow_json"])
async def test_a_server_that_never_finishes_times_out(
    servers: Any, apps: Any, wire: Any, tool: str
) -> None:
    async with servers.streamable(apps.FaultApp(), read_timeout=0.3, get_stream=False) as transport:
        await wire.handshake(transport)
        answer = await wire.call(transport, "tools/call", call(tool), timeout=5)
        assert isinstance(answer, ErrorResponse)
        assert "timed out" in answer.error.message


async def test_a_message_over_the_limit_fails_the_request(
    servers: Any, apps: Any, wire: Any
) -> None:
    async with servers.streamable(
        apps.FaultApp(), max_message_size=400, get_stream=False
    ) as transport:
        await wire.handshake(transport)
        answer = await wire.call(transport, "tools/call", call("echo", message="x" * 1000))
        assert isinstance(answer, ErrorResponse)
        assert "limit is 400" in answer.error.message


async def test_nothing_listening_is_a_connect_error(wire: Any) -> None:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
    async with StreamableHttpTransport(f"http://127.0.0.1:{port}/mcp") as transport:
        with anyio.fail_after(5), pytest.raises(ConnectError):
            await transport.send(wire.request("tools/list"))


async def test_static_headers_and_httpx_auth_go_on_every_request(
    servers: Any, apps: Any, wire: Any
) -> None:
    class Token(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Any:
            request.headers["Authorization"] = "Bearer tkn"
            yield request

    app = apps.FaultApp()
    async with servers.streamable(
        app, headers={"X-Team": "blue"}, auth=Token(), get_stream=False
    ) as transport:
        await wire.handshake(transport)
    for request in app.requests:
        assert request["headers"]["authorization"] == "Bearer tkn"
        assert request["headers"]["x-team"] == "blue"


# ------------------------------------------------------------------ legacy HTTP+SSE


async def test_legacy_sse_posts_to_the_announced_endpoint(
    servers: Any, apps: Any, wire: Any
) -> None:
    async with (
        servers.uvicorn(apps.FaultApp()) as port,
        SseTransport(f"http://127.0.0.1:{port}/sse") as transport,
    ):
        assert transport.endpoint == f"http://127.0.0.1:{port}/messages?sid=1"
        await wire.handshake(transport, "2024-11-05")
        answer = await wire.call(transport, "tools/call", call("echo", message="legacy"))
        assert isinstance(answer, Response)


async def test_legacy_sse_refuses_an_endpoint_on_another_origin(servers: Any, apps: Any) -> None:
    async with servers.uvicorn(apps.FaultApp(endpoint="http://evil.example/messages")) as port:
        transport = SseTransport(f"http://127.0.0.1:{port}/sse")
        with anyio.fail_after(5), pytest.raises(ConnectError, match="another origin"):
            await transport.__aenter__()


async def test_legacy_sse_without_an_endpoint_event_times_out(servers: Any, apps: Any) -> None:
    async with servers.uvicorn(apps.FaultApp(endpoint=None)) as port:
        transport = SseTransport(f"http://127.0.0.1:{port}/sse", endpoint_timeout=0.3)
        with anyio.fail_after(5), pytest.raises(ConnectError, match="no endpoint event"):
            await transport.__aenter__()


async def test_legacy_sse_stream_end_fails_pending_requests_with_connection_lost(
    servers: Any, apps: Any, wire: Any
) -> None:
    async with servers.uvicorn(apps.FaultApp()) as port:
        transport = SseTransport(f"http://127.0.0.1:{port}/sse")
        async with transport:
            await wire.handshake(transport, "2024-11-05")
            with anyio.fail_after(5), pytest.raises(ConnectionLost):
                await wire.call(transport, "tools/call", call("end_stream"))
            with pytest.raises(ConnectionLost):
                await transport.receive()
        with pytest.raises(TransportClosed):
            await transport.receive()


async def test_legacy_sse_refused_get_is_typed(servers: Any, apps: Any) -> None:
    async with servers.uvicorn(apps.FaultApp()) as port:
        transport = SseTransport(f"http://127.0.0.1:{port}/nowhere")
        with anyio.fail_after(5), pytest.raises(HttpStatusError) as caught:
            await transport.__aenter__()
        assert caught.value.status == 404


async def test_initialize_after_a_modern_probe_starts_a_clean_handshake(
    servers: Any, apps: Any, wire: Any
) -> None:
    app = apps.FaultApp()
    async with servers.streamable(app, get_stream=False) as transport:
        transport.set_protocol_version("2026-07-28")  # what an auto-mode session probes with
        await wire.handshake(transport)
        assert transport.session_id == "s-1"
        await wire.call(transport, "tools/call", call("echo"))
    initialize, initialized, echo = app.requests
    assert "mcp-protocol-version" not in initialize["headers"]
    assert initialized["headers"]["mcp-protocol-version"] == "2025-11-25"
    assert echo["headers"]["mcp-session-id"] == "s-1"


async def test_annotated_parameters_are_mirrored_into_mcp_param_headers(
    servers: Any, apps: Any, wire: Any
) -> None:
    app = apps.FaultApp()
    async with (
        servers.uvicorn(app) as port,
        StreamableHttpTransport(
            f"http://127.0.0.1:{port}/mcp", name="fault", get_stream=False
        ) as transport,
    ):
        await wire.handshake(transport)
        transport.set_tool_headers(
            {
                "sse_echo": header_params(
                    {
                        "type": "object",
                        "properties": {
                            "message": {"type": "string", "x-mcp-header": "Message"},
                            "region": {"type": "string", "x-mcp-header": "Region"},
                        },
                    }
                )
            }
        )
        await wire.call(transport, "tools/call", call("sse_echo", message="héllo"))
    post = next(r for r in app.requests if r["method"] == "tools/call")
    assert post["headers"]["mcp-param-message"] == "=?base64?aMOpbGxv?="
    assert "mcp-param-region" not in post["headers"]
