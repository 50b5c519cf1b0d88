"""The funnel at run time, in process: backends as real child processes, the MCP
server side driven directly. Statuses, failure isolation, recovery, core tools."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from msgspec import Raw

from funnel_proxy import BackendUnavailable, Funnel, FunnelEvent, McpServerSession, parse_config
from funnel_transports import (
    ErrorResponse,
    Message,
    Notification,
    Request,
    Response,
    from_raw,
    to_raw,
)

pytestmark = pytest.mark.anyio

SERVERS = Path(__file__).resolve().parents[3] / "tests" / "servers"
FAST_RETRY = {"initialDelayMs": 20, "maxDelayMs": 100, "backoffMultiplier": 2, "jitter": 0}


def scripted(behaviour: str) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(SERVERS / "scripted.py"), behaviour]}


def sdk() -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(SERVERS / "sdk_server.py")]}


@asynccontextmanager
async def running(config: Mapping[str, Any], **options: Any) -> AsyncIterator[Funnel]:
    parsed = parse_config(dict(config), environ={"PATH": os.environ["PATH"]})
    async with Funnel(parsed, environ={"PATH": os.environ["PATH"]}, **options) as funnel:
        yield funnel


class Client:
    """The test as a downstream MCP client of an McpServerSession."""

    def __init__(self, funnel: Funnel) -> None:
        self.sent: list[Message] = []
        self.list_changed = anyio.Event()
        self.session = McpServerSession(funnel, self._send, version="test")
        self._next = 0

    async def _send(self, message: Message) -> None:
        self.sent.append(message)
        if (
            isinstance(message, Notification)
            and message.method == "notifications/tools/list_changed"
        ):
            self.list_changed.set()

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        self._next += 1
        await self.session.handle(
            Request(id=self._next, method=method, params=to_raw(params or {}))
        )
        reply = next(
            m
            for m in reversed(self.sent)
            if isinstance(m, Response | ErrorResponse) and m.id == self._next
        )
        if isinstance(reply, ErrorResponse):
            return {"error": {"code": reply.error.code, "message": reply.error.message}}
        return from_raw(reply.result)

    async def tool_names(self) -> list[str]:
        return [tool["name"] for tool in (await self.request("tools/list"))["tools"]]

    async def call(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        return await self.request("tools/call", {"name": name, "arguments": arguments or {}})


def text(result: Any) -> str:
    assert "content" in result, result
    return str(result["content"][0]["text"])


async def wait_for(funnel: Funnel, server: str, status: str) -> None:
    async with funnel.events() as events:
        if next(s for s in funnel.states() if s.name == server).status == status:
            return
        with anyio.fail_after(10):
            async for event in events:
                if (
                    event.kind == "status"
                    and event.state is not None
                    and event.state.name == server
                    and event.state.status == status
                ):
                    return


async def test_a_backend_that_cannot_start_fails_alone_and_says_why() -> None:
    config = {
        "servers": {"ghost": {"command": "no-such-mcp-server"}, "ok": scripted("normal")},
        "autoReconnect": {"enabled": False},
    }
    async with running(config) as funnel:
        states = {state.name: state for state in funnel.states()}
        assert states["ok"].status == "connected"
        assert states["ghost"].status == "failed"
        assert "command not found: no-such-mcp-server" in (states["ghost"].error or "")
        assert text(await Client(funnel).call("ok__echo", {"message": "fine"})) == "Echo: fine"


async def test_a_backend_that_crashes_mid_call_fails_fast_and_comes_back() -> None:
    config = {
        "servers": {"crashy": scripted("normal"), "steady": sdk()},
        "autoReconnect": FAST_RETRY,
    }
    async with running(config) as funnel:
        client = Client(funnel)
        with anyio.fail_after(10):
            crashed = await client.call("crashy__crash")
        assert crashed["error"]["code"] == -32000
        assert "crashy" in crashed["error"]["message"]
        assert "exited with status 3" in crashed["error"]["message"]
        assert (
            text(await client.call("steady__echo", {"message": "unaffected"})) == "Echo: unaffected"
        )
        await wait_for(funnel, "crashy", "connected")
        assert text(await client.call("crashy__echo", {"message": "back"})) == "Echo: back"


async def test_tools_of_a_backend_that_is_down_answer_with_its_status() -> None:
    config = {"servers": {"crashy": scripted("normal")}, "autoReconnect": {"enabled": False}}
    async with running(config) as funnel:
        client = Client(funnel)
        await client.call("crashy__crash")
        await wait_for(funnel, "crashy", "failed")
        assert "crashy__echo" not in await client.tool_names()
        answer = await client.call("crashy__echo", {"message": "anyone?"})
        assert answer["error"]["code"] == -32000
        assert answer["error"]["message"].startswith("server 'crashy' is failed")
        with pytest.raises(BackendUnavailable):
            funnel.resolve_tool("crashy__echo")


async def test_a_slow_backend_does_not_hold_up_start_up_and_joins_later() -> None:
    config = {"servers": {"slow": scripted("slow-start"), "fast": scripted("normal")}}
    async with running(config, ready_timeout=1.0) as funnel:
        states = {state.name: state.status for state in funnel.states()}
        assert states == {"slow": "connecting", "fast": "connected"}
        client = Client(funnel)
        assert "fast__echo" in await client.tool_names()
        await wait_for(funnel, "slow", "connected")
        assert "slow__echo" in await client.tool_names()


async def test_a_tools_list_change_is_one_coalesced_event() -> None:
    config = {
        "servers": {"a": scripted("normal"), "b": scripted("normal")},
        "exposeTools": ["a__echo"],
    }
    async with running(config) as funnel, funnel.events() as events:
        funnel.enable_tools(["a__crash", "b__echo", "b__crash"])
        with anyio.fail_after(5):
            event: FunnelEvent = await events.receive()
            while event.kind != "list_changed":
                event = await events.receive()
        assert event.lists == frozenset({"tools"})


async def test_core_tools_mode_lists_only_core_tools_and_reaches_the_rest_through_the_bridge() -> (
    None
):
    config = {
        "servers": {"srv": scripted("normal"), "sdk": sdk()},
        "exposeTools": [],
        "hideTools": ["srv__crash"],
    }
    async with running(config) as funnel:
        client = Client(funnel)
        listed = await client.tool_names()
        assert listed == [
            "bridge_tool_request",
            "discover_tools_by_words",
            "get_tool_schema",
            "load_toolset",
        ]

        found = text(
            await client.call("discover_tools_by_words", {"words": "add integers", "enable": True})
        )
        assert "sdk__add" in found.splitlines()[1]
        assert "Call them with bridge_tool_request" in found
        assert await client.tool_names() == listed, "the list never changes in core tools mode"

        schema = json.loads(text(await client.call("get_tool_schema", {"tool": "sdk__add"})))
        assert set(schema["inputSchema"]["properties"]) == {"a", "b"}
        bridged = await client.call(
            "bridge_tool_request", {"tool": "sdk__add", "arguments": {"a": 2, "b": 40}}
        )
        assert text(bridged) == "42"

        hidden = await client.call("bridge_tool_request", {"tool": "srv__crash"})
        assert hidden["isError"] is True
        assert "Unknown tool 'srv__crash'" in text(hidden)
        assert "srv__crash" not in text(
            await client.call("discover_tools_by_words", {"words": "crash"})
        )
        direct = await client.call("sdk__add", {"a": 1, "b": 1})
        assert direct["error"]["message"] == "Tool not found: sdk__add"


async def test_discovering_with_enable_exposes_the_tools_and_notifies_the_client() -> None:
    config = {
        "servers": {"sdk": sdk()},
        "exposeTools": ["sdk__echo"],
        "toolsets": {"math": ["sdk__add"]},
    }
    async with running(config) as funnel:
        client = Client(funnel)
        await client.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.session.watch)
            assert "sdk__add" not in await client.tool_names()
            loaded = text(await client.call("load_toolset", {"name": "math"}))
            assert "Enabled 1 tools" in loaded
            assert "sdk__add" in await client.tool_names()
            with anyio.fail_after(5):
                await client.list_changed.wait()
            tg.cancel_scope.cancel()
        unknown = await client.call("load_toolset", {"name": "nope"})
        assert unknown["isError"] is True
        assert "Unknown toolset 'nope' (toolsets: math)" in text(unknown)


async def test_progress_and_meta_pass_through_a_proxied_call() -> None:
    async with running({"servers": {"sdk": sdk()}}) as funnel:
        client = Client(funnel)
        result = await client.request(
            "tools/call",
            {"name": "sdk__slow", "arguments": {"steps": 2}, "_meta": {"progressToken": "tok-1"}},
        )
        assert text(result) == "done after 2 steps"
        progress = [
            from_raw(m.params)
            for m in client.sent
            if isinstance(m, Notification) and isinstance(m.params, Raw)
        ]
        assert [p["progressToken"] for p in progress] == ["tok-1", "tok-1"]
        assert [p["progress"] for p in progress] == [1, 2]


async def test_garbage_and_unknown_methods_get_errors_and_the_session_goes_on() -> None:
    async with running({"servers": {"srv": scripted("normal")}}) as funnel:
        client = Client(funnel)
        assert (await client.request("no/such/method"))["error"]["code"] == -32601
        bad = await client.request("tools/call", {"arguments": {}})
        assert bad["error"]["code"] == -32602
        assert text(await client.call("srv__echo", {"message": "still"})) == "Echo: still"
