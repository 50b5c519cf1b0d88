"""Handshake-era sessions across three replicas behind HAProxy (round robin, no stickiness).

The session id carries the session (sealed with the replicas' state key); the shared
Valkey/Redis carries what changes after ``initialize`` and the end of a session. Traffic
goes through the balancer only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from support.peers import SERVERS
from support.replicas import AUTH, ClusterFactory

pytestmark = [pytest.mark.anyio]

HANDSHAKE = "2025-11-25"
JSON = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def write_config(tmp: Path, server: str = "sdk_server.py") -> Path:
    config = tmp / ".mcp-funnel.json"
    servers = {"local": {"command": sys.executable, "args": [str(SERVERS / server)]}}
    config.write_text(json.dumps({"servers": servers}))
    return config


async def ended_everywhere(
    http: httpx.AsyncClient, headers: dict[str, str], replicas: set[str]
) -> None:
    """Ping until each of ``replicas`` answered 404; once it has, it must never serve again.

    The end reaches a replica's copy over the bus (at most once, in well under a second
    on loopback): the bound is the guarantee, never a pause.
    """
    gone: set[str] = set()
    with anyio.fail_after(10):
        n = 1000
        while gone != replicas:
            n += 1
            ping = {"jsonrpc": "2.0", "id": n, "method": "ping"}
            response = await http.post("/mcp", json=ping, headers=headers)
            replica = response.headers["x-replica"]
            if response.status_code == 404:
                gone.add(replica)
            else:
                assert response.status_code == 200, response.text
                assert replica not in gone, f"{replica} served an ended session again"


async def test_a_session_client_keeps_its_session_while_a_replica_is_killed(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    sent: set[str] = set()
    served: list[tuple[int, str]] = []  # (replica, method) of every answered request

    async def on_request(request: httpx2.Request) -> None:
        session_id = request.headers.get("mcp-session-id")
        if session_id:
            sent.add(session_id)

    async def on_response(response: httpx2.Response) -> None:
        replica = response.headers.get("x-replica")
        if replica:
            served.append((int(replica.removeprefix("r")), response.request.method))

    async with cluster(write_config(tmp_path), tmp_path) as c:
        failures: list[tuple[int, str]] = []
        killed_at = 0
        async with (
            httpx2.AsyncClient(
                headers=AUTH,
                timeout=30,
                event_hooks={"request": [on_request], "response": [on_response]},
            ) as http,
            Client(
                streamable_http_client(f"{c.url}/mcp", http_client=http), mode="legacy"
            ) as client,
        ):
            for n in range(60):
                if n == 20:
                    killed_at = len(served)
                    c.kill(1)  # SIGKILL: no drain; what it had in flight is cut
                try:
                    with anyio.fail_after(30):
                        result = await client.call_tool("local__echo", {"message": f"m{n}"})
                    text = result.content[0].text  # type: ignore[union-attr]
                    if text != f"Echo: m{n}":
                        failures.append((n, text))
                except Exception as exc:
                    failures.append((n, repr(exc)))
        # One call at a time: at most the one in flight on the dead replica fails.
        assert len(failures) <= 1, (failures, c.logs())
        # One session, one id, from the first request to the last.
        assert len(sent) == 1, sent
        session_id = next(iter(sent))
        assert session_id.startswith("s1.")
        posts_before = {replica for replica, method in served[:killed_at] if method == "POST"}
        posts_after = {replica for replica, method in served[killed_at:] if method == "POST"}
        # Round robin spread the session over every replica, then over the survivors.
        assert posts_before == {0, 1, 2}, served
        assert posts_after == {0, 2}, served
        # The client ended the session (DELETE on one replica): every survivor forgets it.
        async with httpx.AsyncClient(base_url=c.url, headers=AUTH, timeout=30) as raw:
            headers = {**JSON, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": HANDSHAKE}
            await ended_everywhere(raw, headers, {"r0", "r2"})


async def test_a_delete_on_one_replica_ends_the_session_on_every_replica(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    init: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE,
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }
    async with (
        cluster(write_config(tmp_path), tmp_path) as c,
        httpx.AsyncClient(base_url=c.url, headers=AUTH, timeout=30) as http,
    ):
        started = await http.post("/mcp", json=init, headers=JSON)
        session = {
            **JSON,
            "Mcp-Session-Id": started.headers["mcp-session-id"],
            "MCP-Protocol-Version": HANDSHAKE,
        }
        await http.post(
            "/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
        )
        # Every replica serves it (and so holds a copy) ...
        served = set()
        for n in range(1, 7):
            ping = await http.post(
                "/mcp", json={"jsonrpc": "2.0", "id": n, "method": "ping"}, headers=session
            )
            assert ping.status_code == 200, ping.text
            served.add(ping.headers["x-replica"])
        assert served == {"r0", "r1", "r2"}
        deleted = await http.delete("/mcp", headers=session)
        assert deleted.status_code == 204
        # ... and once one of them ended it, the bus drops every copy.
        await ended_everywhere(http, session, {"r0", "r1", "r2"})
        # A replica that never held it (restarted since) finds the end in the store.
        assert (await http.delete("/mcp", headers=session)).status_code == 404


async def sample(
    context: Any, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text="sampled"), model="m"
    )


async def test_a_backend_asks_the_session_client_whichever_replica_its_answer_reaches(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    # The backend's sampling request travels on the call's POST stream (the replica
    # running the call); the client answers in a new POST, which HAProxy sends to the
    # next replica in turn: that one passes the answer on over Redis.
    async with (
        cluster(write_config(tmp_path, "conformance_server.py"), tmp_path) as c,
        httpx2.AsyncClient(headers=AUTH, timeout=30) as http,
        Client(
            streamable_http_client(f"{c.url}/mcp", http_client=http),
            mode="legacy",
            sampling_callback=sample,
        ) as client,
    ):
        for n in range(6):
            with anyio.fail_after(30):
                result = await client.call_tool("local__test_sampling", {"prompt": f"p{n}"})
            assert result.content[0].text == "LLM response: sampled", c.logs()  # type: ignore[union-attr]
