"""The dashboard's log view: the ring buffer (pure), ``GET /api/logs``, ``log`` on ``/ws``,
and run-time disable/enable over REST, with real stdio backends."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect

from funnel_proxy import FunnelConfig
from funnel_server._audit import audit
from funnel_server._logs import LogBuffer
from funnel_server.testing import Served

Serve = Callable[..., AbstractAsyncContextManager[Served]]


def record(
    name: str, msg: str, *args: object, func: str = "f", **extra: object
) -> logging.LogRecord:
    made = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None, func=func)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_records_become_entries_with_their_source_and_server() -> None:
    buffer = LogBuffer(capacity=10)
    buffer.handle(
        record("funnel_transports.stdio", "[%s] %s", "mem", "boot ok", func="_log_stderr")
    )
    buffer.handle(record("funnel_proxy.backend", "[%s] connected: %d tools", "mem", 3))
    buffer.handle(
        record(
            "funnel.audit",
            "tool.call outcome=success",
            event="tool.call",
            outcome="success",
            server="mem",
        )
    )
    buffer.handle(record("funnel_server", "config reloaded"))
    entries = buffer.entries()
    assert [(e.seq, e.source, e.server, e.message) for e in entries] == [
        (1, "stderr", "mem", "boot ok"),
        (2, "funnel", "mem", "connected: 3 tools"),
        (3, "audit", "mem", "tool.call outcome=success"),
        (4, "funnel", None, "config reloaded"),
    ]
    assert (entries[2].event, entries[2].outcome) == ("tool.call", "success")
    assert [e.seq for e in buffer.entries(server="mem", source="stderr")] == [1]
    assert [e.seq for e in buffer.entries(after=2)] == [3, 4]
    assert [e.seq for e in buffer.entries(limit=1)] == [4]


def test_the_buffer_is_bounded_and_masks_credentials() -> None:
    buffer = LogBuffer(capacity=3)
    for number in range(5):
        buffer.handle(record("funnel_proxy", "line %d", number))
    assert [e.message for e in buffer.entries()] == ["line 2", "line 3", "line 4"]
    assert buffer.last_seq == 5
    buffer.handle(
        record(
            "funnel_transports.stdio",
            "[%s] %s",
            "x",
            "Authorization: Bearer abc.def.ghi",
            func="_log_stderr",
        )
    )
    assert "abc.def.ghi" not in buffer.entries()[-1].message


def test_installing_captures_funnel_loggers_only_at_info_and_above() -> None:
    with LogBuffer() as buffer:
        logging.getLogger("funnel_proxy.backend").warning("[%s] disconnected", "a")
        logging.getLogger("funnel_proxy.backend").debug("[%s] too chatty", "a")
        logging.getLogger("httpx").warning("not ours")
        audit("server.disabled", outcome="success", server="a")
    logging.getLogger("funnel_proxy").warning("after uninstall")
    assert [(e.source, e.message) for e in buffer.entries()] == [
        ("funnel", "disconnected"),
        ("audit", "server.disabled outcome=success server=a"),
    ]


@pytest.fixture
def two_peers(
    make_config: Callable[[dict[str, Any]], FunnelConfig], servers_dir: Path
) -> FunnelConfig:
    peer = {"command": sys.executable, "args": [str(servers_dir / "pid_server.py"), "x"]}
    return make_config({"servers": {"a": peer, "b": peer}, "hideTools": ["b__x"]})


@pytest.mark.anyio
async def test_the_log_view_has_backend_stderr_and_audit_events_by_server(
    serve: Serve, two_peers: FunnelConfig
) -> None:
    async with (
        serve(two_peers) as served,
        httpx.AsyncClient(base_url=served.base, headers=served.auth) as http,
    ):
        call = await http.post("/api/tools/a__pid/call", json={"arguments": {}})
        assert call.status_code == 200
        pid = call.json()["result"]["content"][0]["text"]
        stderr = (await http.get("/api/logs", params={"server": "a", "source": "stderr"})).json()
        every = (await http.get("/api/logs", params={"server": "a"})).json()
        bad = await http.get("/api/logs", params={"source": "nope"})
    assert [e["message"] for e in stderr["entries"]] == [f"pid-peer {pid} ready"]
    assert {e["server"] for e in every["entries"]} == {"a"}
    audited = [e for e in every["entries"] if e["source"] == "audit"]
    assert [(e["event"], e["outcome"]) for e in audited] == [("tool.call", "success")]
    assert every["lastSeq"] >= audited[-1]["seq"]
    assert bad.status_code == 400


@pytest.mark.anyio
async def test_ws_log_subscribers_get_the_backlog_then_new_entries(
    serve: Serve, two_peers: FunnelConfig
) -> None:
    async with (
        serve(two_peers) as served,
        connect(served.ws_url, additional_headers=served.auth, open_timeout=5) as ws,
        httpx.AsyncClient(base_url=served.base, headers=served.auth) as http,
    ):
        await ws.send(json.dumps({"type": "subscribe", "events": ["log"]}))
        seen: list[dict[str, Any]] = []
        with anyio.fail_after(10):
            while not any(m.get("source") == "stderr" and m.get("server") == "b" for m in seen):
                seen.append(json.loads(await ws.recv()))
            assert all(m["type"] == "log" for m in seen)
            await http.post("/api/tools/a__x/call", json={"arguments": {}})
            while True:
                message = json.loads(await ws.recv())
                if message.get("source") == "audit":
                    break
    assert message["event"] == "tool.call" and message["server"] == "a"
    assert message["seq"] > seen[-1]["seq"]


@pytest.mark.anyio
async def test_hidden_tools_are_listed_with_their_reason(
    serve: Serve, two_peers: FunnelConfig
) -> None:
    async with (
        serve(two_peers) as served,
        httpx.AsyncClient(base_url=served.base, headers=served.auth) as http,
    ):
        tools = {t["name"]: t for t in (await http.get("/api/tools")).json()["tools"]}
        hidden_call = await http.post("/api/tools/b__x/call", json={"arguments": {}})
    assert (tools["b__x"]["exposed"], tools["b__x"]["reason"]) == (False, "hidden")
    assert (tools["a__x"]["exposed"], tools["a__x"]["reason"]) == (True, "default")
    assert hidden_call.status_code == 404, "a hidden tool stays uncallable"


@pytest.mark.anyio
async def test_a_server_is_disabled_and_enabled_over_rest(
    serve: Serve, two_peers: FunnelConfig
) -> None:
    async with (
        serve(two_peers) as served,
        httpx.AsyncClient(base_url=served.base, headers=served.auth) as http,
    ):
        b_pid = (await http.post("/api/tools/b__pid/call", json={})).json()["result"]["content"][0][
            "text"
        ]
        disabled = await http.post("/api/servers/a/disable")
        servers = {s["name"]: s for s in (await http.get("/api/servers")).json()["servers"]}
        tool_names = {t["name"] for t in (await http.get("/api/tools")).json()["tools"]}
        refused = await http.post("/api/tools/a__pid/call", json={})
        enabled = await http.post("/api/servers/a/enable")
        async with served.funnel.events() as events:
            with anyio.fail_after(10):
                while (
                    next(s for s in served.funnel.states() if s.name == "a").status != "connected"
                ):
                    await events.receive()
        again = await http.post("/api/tools/a__pid/call", json={})
        b_after = (await http.post("/api/tools/b__pid/call", json={})).json()["result"]["content"][
            0
        ]["text"]
        unknown = await http.post("/api/servers/nope/disable")
        audited = (await http.get("/api/logs", params={"source": "audit", "server": "a"})).json()
    assert disabled.status_code == 200 and disabled.json() == {"server": "a", "status": "disabled"}
    assert servers["a"]["status"] == "disabled" and servers["b"]["status"] == "connected"
    assert not any(name.startswith("a__") for name in tool_names)
    assert refused.status_code == 404
    assert enabled.json() == {"server": "a", "status": "connecting"}
    assert again.status_code == 200
    assert b_after == b_pid, "disabling a restarted another backend"
    assert unknown.status_code == 404
    assert [e["event"] for e in audited["entries"] if e["event"].startswith("server.")] == [
        "server.disabled",
        "server.enabled",
    ]


@pytest.mark.anyio
async def test_ws_status_subscribers_hear_servers_changed_when_one_is_disabled(
    serve: Serve, two_peers: FunnelConfig
) -> None:
    async with (
        serve(two_peers) as served,
        connect(served.ws_url, additional_headers=served.auth, open_timeout=5) as ws,
        httpx.AsyncClient(base_url=served.base, headers=served.auth) as http,
    ):
        await ws.send(json.dumps({"type": "subscribe", "events": ["server.status"]}))
        await http.post("/api/servers/b/disable")
        seen: list[dict[str, Any]] = []
        with anyio.fail_after(10):
            while not seen or seen[-1] != {
                "type": "server.status",
                "server": "b",
                "status": "disabled",
                "toolCount": 0,
            }:
                seen.append(json.loads(await ws.recv()))
    assert {"type": "servers.changed"} in seen
    assert not any(message["type"] == "log" for message in seen), "log was not subscribed"
