"""Live reconfiguration of a running funnel with real stdio backends (official SDK peers):
only what changed restarts, filters apply without restarts, clients hear list_changed."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from funnel_proxy import Funnel, FunnelConfig, McpServerSession, ProxyError, parse_config
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

PID_SERVER = Path(__file__).resolve().parents[3] / "tests" / "servers" / "pid_server.py"
ENV = {"PATH": os.environ["PATH"]}
CORE = ["bridge_tool_request", "discover_tools_by_words", "get_tool_schema", "load_toolset"]


def peer(*tools: str) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(PID_SERVER), *tools]}


def config(servers: dict[str, Any], **top: Any) -> FunnelConfig:
    return parse_config({"servers": servers, **top}, environ=ENV)


class Client:
    """The test as a downstream MCP client of an McpServerSession."""

    def __init__(self, funnel: Funnel) -> None:
        self.sent: list[Message] = []
        self.list_changed = anyio.Event()
        self.session = McpServerSession(funnel, self._send, version="test")
        self._next = 0

    async def _send(self, message: Message) -> None:
        self.sent.append(message)
        if isinstance(message, Notification) and message.method.endswith("tools/list_changed"):
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
        assert isinstance(reply, Response), reply
        return from_raw(reply.result)

    async def tool_names(self) -> list[str]:
        return [tool["name"] for tool in (await self.request("tools/list"))["tools"]]

    async def call(self, name: str) -> Any:
        return await self.request("tools/call", {"name": name, "arguments": {}})


def text(result: Any) -> str:
    return str(result["content"][0]["text"])


async def wait_for(funnel: Funnel, server: str, status: str) -> None:
    async with funnel.events() as events:
        with anyio.fail_after(10):
            while next(s for s in funnel.states() if s.name == server).status != status:
                await events.receive()


@asynccontextmanager
async def running(initial: FunnelConfig) -> AsyncIterator[tuple[Funnel, Client]]:
    """A funnel and an initialized client that hears its list changes."""
    funnel = Funnel(initial, environ=ENV)
    client = Client(funnel)
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.session.watch)
        async with funnel:
            await client.request(
                "initialize",
                {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            )
            yield funnel, client
        tg.cancel_scope.cancel()


async def announced(client: Client, expected: list[str]) -> None:
    """Wait until a ``list_changed`` brings ``expected`` (the tools after the core tools)."""
    with anyio.fail_after(10):
        while True:
            await client.list_changed.wait()
            client.list_changed = anyio.Event()
            names = await client.tool_names()
            if names[len(CORE) :] == expected:
                return


async def pid(client: Client, server: str) -> int:
    return int(text(await client.call(f"{server}__pid")))


async def test_a_new_config_restarts_only_the_servers_that_changed() -> None:
    old = config({"keep": peer(), "change": peer(), "drop": peer()})
    async with running(old) as (funnel, client):
        before = {name: await pid(client, name) for name in ("keep", "change", "drop")}
        new = config({"keep": peer(), "change": peer("extra"), "fresh": peer()})
        async with funnel.events() as events:
            report = await funnel.apply_config(new)
            assert (report.added, report.removed, report.restarted, report.unchanged) == (
                ("fresh",),
                ("drop",),
                ("change",),
                ("keep",),
            )
            with anyio.fail_after(10):
                while (await events.receive()).kind != "servers_changed":
                    pass
        await announced(client, ["change__extra", "change__pid", "fresh__pid", "keep__pid"])
        assert [state.name for state in funnel.states()] == ["keep", "change", "fresh"]
        assert await pid(client, "keep") == before["keep"], "an untouched backend was restarted"
        assert await pid(client, "change") != before["change"]
        with pytest.raises(ProcessLookupError):
            os.kill(before["drop"], 0)  # the removed backend's process is gone


async def test_filter_changes_apply_at_once_without_restarting_anything() -> None:
    async with running(config({"a": peer("x", "y")})) as (funnel, client):
        before = await pid(client, "a")
        report = await funnel.apply_config(config({"a": peer("x", "y")}, hideTools=["a__x"]))
        assert report.filters_changed and report.unchanged == ("a",)
        await announced(client, ["a__pid", "a__y"])
        assert await pid(client, "a") == before


async def test_a_backend_can_be_disabled_and_enabled_at_run_time() -> None:
    async with running(config({"a": peer(), "b": peer()})) as (funnel, client):
        b_pid = await pid(client, "b")
        a_pid = await pid(client, "a")
        state = await funnel.set_disabled("a", disabled=True)
        assert state.status == "disabled"
        await announced(client, ["b__pid"])
        with pytest.raises(ProcessLookupError):
            os.kill(a_pid, 0)
        # A reload keeps a run-time disable.
        await funnel.apply_config(config({"a": peer(), "b": peer()}, hideTools=["b__nothing"]))
        assert next(s for s in funnel.states() if s.name == "a").status == "disabled"
        assert (await funnel.set_disabled("a", disabled=False)).status == "connecting"
        await wait_for(funnel, "a", "connected")
        assert await pid(client, "a") != a_pid
        assert await pid(client, "b") == b_pid
        with pytest.raises(KeyError):
            await funnel.set_disabled("nope", disabled=True)


async def test_a_server_disabled_in_the_file_is_enabled_by_the_file_only() -> None:
    async with running(config({"a": {**peer(), "disabled": True}})) as (funnel, _client):
        with pytest.raises(ProxyError, match="disabled in the config file"):
            await funnel.set_disabled("a", disabled=False)
        await funnel.apply_config(config({"a": peer()}))
        await wait_for(funnel, "a", "connected")
