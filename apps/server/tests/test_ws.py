"""``/ws`` with a real ``websockets`` client: execute, progress, cancel, errors, isolation, events."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from funnel_proxy import FunnelConfig
from funnel_server.testing import Served

pytestmark = pytest.mark.anyio

Serve = Callable[..., AbstractAsyncContextManager[Served]]


def open_ws(served: Served, **headers: str) -> Any:
    return connect(served.ws_url, additional_headers={**served.auth, **headers}, open_timeout=5)


async def send(ws: ClientConnection, message: dict[str, Any] | str) -> None:
    await ws.send(message if isinstance(message, str) else json.dumps(message))


async def receive(ws: ClientConnection, *types: str) -> dict[str, Any]:
    """The next message of one of ``types`` (others are skipped), within 10 s."""
    with anyio.fail_after(10):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if not types or message["type"] in types:
                return message


async def test_execute_reports_progress_then_the_result(
    serve: Serve, sdk_config: FunnelConfig
) -> None:
    async with serve(sdk_config) as served, open_ws(served) as ws:
        await send(
            ws, {"type": "execute", "id": "a", "tool": "sdk__slow", "arguments": {"steps": 3}}
        )
        assert await receive(ws) == {"type": "tool.executing", "id": "a", "tool": "sdk__slow"}
        progress = [await receive(ws) for _ in range(3)]
        result = await receive(ws)
    assert [p["type"] for p in progress] == ["tool.progress"] * 3
    assert [(p["progress"], p["total"], p["message"]) for p in progress] == [
        (1.0, 3.0, "step 1"),
        (2.0, 3.0, "step 2"),
        (3.0, 3.0, "step 3"),
    ]
    assert result["type"] == "tool.result" and result["id"] == "a"
    assert result["result"]["content"][0]["text"] == "done after 3 steps"
    assert result["durationMs"] >= 0


async def test_a_running_execution_can_be_cancelled(serve: Serve, sdk_config: FunnelConfig) -> None:
    async with serve(sdk_config) as served, open_ws(served) as ws:
        await send(ws, {"type": "execute", "id": 7, "tool": "sdk__wait_forever"})
        assert (await receive(ws))["type"] == "tool.executing"
        await send(ws, {"type": "cancel", "id": 7})
        cancelled = await receive(ws)
        await send(ws, {"type": "cancel", "id": 7})
        unknown = await receive(ws)
    assert cancelled == {"type": "tool.error", "id": 7, "error": "cancelled", "code": -32800}
    assert unknown == {"type": "error", "message": "no running execution 7"}


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("not json", "invalid message"),
        ("[1, 2]", "invalid message"),
        ({"type": "explode"}, "invalid message"),
        ({"type": "execute", "tool": "demo__echo"}, "invalid message"),
        ({"type": "execute", "id": 1, "tool": "demo__echo", "arguments": [1]}, "invalid message"),
        ({"type": "subscribe", "events": ["everything"]}, "unknown event kinds"),
    ],
)
async def test_a_malformed_message_gets_an_error_and_the_socket_stays_open(
    serve: Serve, message: dict[str, Any] | str, expected: str
) -> None:
    async with serve() as served, open_ws(served) as ws:
        await send(ws, message)
        error = await receive(ws)
        await send(
            ws,
            {
                "type": "execute",
                "id": "ok",
                "tool": "demo__echo",
                "arguments": {"message": "still here"},
            },
        )
        result = await receive(ws, "tool.result")
    assert error["type"] == "error" and error["message"].startswith(expected)
    assert result["result"]["content"][0]["text"] == "still here"


async def test_unknown_and_hidden_tools_are_refused(serve: Serve, sdk_config: FunnelConfig) -> None:
    async with serve(sdk_config) as served, open_ws(served) as ws:
        await send(
            ws, {"type": "execute", "id": 1, "tool": "demo__word_count", "arguments": {"text": "x"}}
        )
        hidden = await receive(ws)
        await send(ws, {"type": "execute", "id": 2, "tool": "nobody__nothing"})
        unknown = await receive(ws)
    assert hidden == {
        "type": "tool.error",
        "id": 1,
        "error": "Tool not found: demo__word_count",
        "code": -32602,
    }
    assert unknown["type"] == "tool.error" and unknown["id"] == 2


async def test_results_go_only_to_the_client_that_asked(
    serve: Serve, sdk_config: FunnelConfig
) -> None:
    async with serve(sdk_config) as served, open_ws(served) as alice, open_ws(served) as bob:
        await send(bob, {"type": "subscribe", "events": ["*"]})
        await send(
            alice,
            {
                "type": "execute",
                "id": "x",
                "tool": "sdk__echo",
                "arguments": {"message": "for alice"},
            },
        )
        await send(
            bob,
            {
                "type": "execute",
                "id": "x",
                "tool": "sdk__echo",
                "arguments": {"message": "for bob"},
            },
        )
        alice_result = await receive(alice, "tool.result")
        seen_by_bob: list[dict[str, Any]] = []
        while True:
            message = await receive(bob)
            seen_by_bob.append(message)
            if message["type"] == "tool.result":
                break
    assert alice_result["result"]["content"][0]["text"] == "Echo: for alice"
    tool_messages = [m for m in seen_by_bob if m["type"].startswith("tool.")]
    assert [m["type"] for m in tool_messages] == ["tool.executing", "tool.result"]
    assert tool_messages[-1]["result"]["content"][0]["text"] == "Echo: for bob"


async def test_subscribers_get_status_snapshots_and_changes(serve: Serve) -> None:
    async with serve() as served, open_ws(served) as watcher, open_ws(served) as bystander:
        await send(watcher, {"type": "subscribe", "events": ["server.status"]})
        snapshot = await receive(watcher)
        served.funnel.reconnect("demo")
        changes = [await receive(watcher)]
        while changes[-1]["status"] != "connected" or len(changes) == 1:
            changes.append(await receive(watcher))
        await send(watcher, {"type": "unsubscribe", "events": ["server.status"]})
        # The bystander never subscribed: the first message it gets is the answer to its ping.
        await send(bystander, {"type": "cancel", "id": "none"})
        first_for_bystander = await receive(bystander)
    assert snapshot == {
        "type": "server.status",
        "server": "demo",
        "status": "connected",
        "toolCount": 5,
    }
    assert "reconnecting" in [change["status"] for change in changes]
    assert changes[-1] == snapshot, "back to connected, without an error"
    assert first_for_bystander["type"] == "error"


async def test_executions_per_socket_are_bounded(serve: Serve, sdk_config: FunnelConfig) -> None:
    async with serve(sdk_config, max_ws_executions=1) as served, open_ws(served) as ws:
        await send(ws, {"type": "execute", "id": 1, "tool": "sdk__wait_forever"})
        await receive(ws, "tool.executing")
        await send(ws, {"type": "execute", "id": 1, "tool": "sdk__wait_forever"})
        duplicate = await receive(ws)
        await send(ws, {"type": "execute", "id": 2, "tool": "sdk__wait_forever"})
        refused = await receive(ws)
    assert duplicate == {"type": "error", "message": "execution 1 is already running"}
    assert refused["type"] == "tool.error" and refused["id"] == 2
    assert "at most 1" in refused["error"]


async def test_the_socket_needs_the_token_and_a_local_origin(serve: Serve) -> None:
    async with serve() as served:
        with pytest.raises(InvalidStatus) as anonymous:
            async with connect(served.ws_url, open_timeout=5):
                pass
        with pytest.raises(InvalidStatus) as foreign:
            async with open_ws(served, Origin="https://evil.example"):
                pass
        async with open_ws(served, Origin=f"http://127.0.0.1:{served.port}") as ws:
            await send(ws, {"type": "subscribe", "events": ["tools.changed"]})
            await send(ws, {"type": "cancel", "id": 0})
            assert (await receive(ws))["type"] == "error"
    assert anonymous.value.response.status_code == 401
    assert foreign.value.response.status_code == 403


async def test_core_tools_run_over_ws_and_the_bridge_reaches_a_tool_that_is_not_listed(
    serve: Serve, sdk_config: FunnelConfig
) -> None:
    async with serve(sdk_config) as served, open_ws(served) as ws:
        await send(
            ws,
            {
                "type": "execute",
                "id": "d",
                "tool": "discover_tools_by_words",
                "arguments": {"words": "word count"},
            },
        )
        found = await receive(ws, "tool.result", "tool.error")
        await send(
            ws,
            {
                "type": "execute",
                "id": "b",
                "tool": "bridge_tool_request",
                "arguments": {"tool": "demo__word_count", "arguments": {"text": "one two"}},
            },
        )
        bridged = await receive(ws, "tool.result", "tool.error")
    assert found["type"] == "tool.result"
    assert "demo__word_count" in found["result"]["content"][0]["text"]
    assert bridged["type"] == "tool.result"
    assert bridged["result"]["content"][0]["text"].startswith("2 words")
