"""Three funnel-server replicas sharing state in a real redis-server, behind real HAProxy.

Traffic goes through the balancer only (round robin, no stickiness): see ``conftest.py``
for the deployment and why HAProxy retries what it retries.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
import pytest
from support.peers import SERVERS
from support.replicas import AUTH, Cluster, ClusterFactory
from test_oauth_e2e import Peer, oidc, protected, token_grant_barrier

from funnel_auth.testing import follow_authorization

pytestmark = [pytest.mark.anyio]
__all__ = ["oidc", "protected"]  # the OAuth peers' fixtures, shared with test_oauth_e2e

MODERN = "2026-07-28"


def write_config(tmp: Path, **extra: Any) -> Path:
    config = tmp / ".mcp-funnel.json"
    servers = {"local": {"command": sys.executable, "args": [str(SERVERS / "sdk_server.py")]}}
    config.write_text(json.dumps({"servers": servers, **extra}))
    return config


def stateless_call(tool: str, arguments: dict[str, Any], request_id: int) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {
            "name": tool,
            "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }


def headers(tool: str) -> dict[str, str]:
    return {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }


async def call(http: httpx.AsyncClient, tool: str, arguments: dict[str, Any], n: int) -> Any:
    response = await http.post(
        "/mcp", json=stateless_call(tool, arguments, n), headers=headers(tool)
    )
    body = (
        response.json()
        if response.headers.get("content-type", "").startswith("application/json")
        else None
    )
    return response.status_code, body


def served_calls(cluster_tmp: Path, index: int) -> int:
    """Successful ``tool.call`` audit events in one replica's audit log."""
    path = cluster_tmp / f"home-{index}" / "audit.log"
    if not path.exists():
        return 0
    events = [json.loads(line) for line in path.read_text().splitlines()]
    return sum(1 for e in events if e.get("event") == "tool.call" and e.get("outcome") == "success")


async def test_a_stateless_client_loses_no_call_while_a_replica_is_killed(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    async with cluster(write_config(tmp_path), tmp_path) as c, c.client() as http:
        failures: list[Any] = []
        answered = 0
        for n in range(120):
            if n == 40:
                c.kill(1)  # SIGKILL: no drain, calls in flight on it are cut
            status, body = await call(http, "local__echo", {"message": f"m{n}"}, n)
            text = (body or {}).get("result", {}).get("content", [{}])[0].get("text")
            if status != 200 or text != f"Echo: m{n}":
                failures.append((n, status, body))
            else:
                answered += 1
        assert failures == [], c.logs()
        assert answered == 120
        # Round robin really spread the calls: every replica served some.
        assert all(served_calls(tmp_path, i) > 0 for i in range(3))
        # The survivors served every call after the kill.
        assert served_calls(tmp_path, 0) + served_calls(tmp_path, 2) >= 80


async def test_a_per_tool_limit_of_30_a_minute_allows_30_calls_across_replicas(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path, rateLimits={"tools": {"local__echo": {"calls": 30, "perSeconds": 60}}}
    )
    async with cluster(config, tmp_path) as c, c.client() as http:
        allowed = limited = 0
        for n in range(45):
            status, body = await call(http, "local__echo", {"message": "x"}, n)
            assert status == 200, body
            if "error" in body:
                assert body["error"]["code"] == -32029, body
                assert body["error"]["data"]["retryAfter"] >= 1
                limited += 1
            else:
                allowed += 1
        assert 28 <= allowed <= 32, (allowed, limited)
        assert allowed + limited == 45
        # Counted once across replicas: each replica admitted only part of them.
        per_replica = [served_calls(tmp_path, i) for i in range(3)]
        assert sum(per_replica) == allowed
        assert all(0 < count < 30 for count in per_replica), per_replica


async def test_sigterm_stops_accepting_and_lets_the_call_in_flight_finish(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    report, gate = tmp_path / "report", tmp_path / "gate"
    os.mkfifo(gate)
    config = tmp_path / ".mcp-funnel.json"
    gated = {"command": sys.executable, "args": [str(SERVERS / "gated.py"), str(report), str(gate)]}
    config.write_text(json.dumps({"servers": {"gated": gated}}))
    async with cluster(config, tmp_path, count=1, drain_timeout=20.0) as c:
        replica = c.replicas[0]
        async with httpx.AsyncClient(base_url=replica.base, headers=AUTH, timeout=30) as http:
            ready = await http.get("/api/health/ready")
            assert ready.status_code == 200
            assert ready.json() == {
                "status": "ready",
                "version": ready.json()["version"],
                "sharedState": "ok",
                "draining": False,
            }
            assert (await http.get("/api/health/live")).status_code == 200
            outcome: list[Any] = []

            async def in_flight() -> None:
                outcome.append(await call(http, "gated__gated", {}, 1))

            async with anyio.create_task_group() as tg:
                tg.start_soon(in_flight)
                # Other processes' files have no event to wait on: bounded polling.
                with anyio.fail_after(10):
                    while not report.exists() or "called" not in report.read_text():  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                replica.process.send_signal(signal.SIGTERM)
                with anyio.fail_after(10):
                    while "draining (at most 20 s)" not in replica.log():  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                # It no longer accepts connections…
                with anyio.fail_after(10):
                    while True:
                        try:
                            async with httpx.AsyncClient(base_url=replica.base) as fresh:
                                await fresh.get("/api/health")
                        except httpx.ConnectError:
                            break
                        await anyio.sleep(0.05)
                # …while the call in flight is still being served: open the gate.
                await anyio.to_thread.run_sync(gate.write_text, "finished\n")
            with anyio.fail_after(30):
                code = await replica.process.wait()
            assert code == 0, replica.log()
            [(status, body)] = outcome
            assert status == 200 and body["result"]["content"][0]["text"] == "finished", body


# --------------------------------------------------------------------------- OAuth


def audit_events(tmp: Path, index: int, event: str, **match: Any) -> int:
    path = tmp / f"home-{index}" / "audit.log"
    if not path.exists():
        return 0
    events = [json.loads(line) for line in path.read_text().splitlines()]
    return sum(
        1
        for e in events
        if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
    )


async def statuses(cluster: Cluster, server: str) -> list[str]:
    """``server``'s status on every replica (looked at directly, not through the balancer)."""
    out = []
    for replica in cluster.replicas:
        async with httpx.AsyncClient(base_url=replica.base, headers=AUTH, timeout=10) as http:
            listed = (await http.get("/api/servers")).json()["servers"]
        out.append(next(s["status"] for s in listed if s["name"] == server))
    return out


async def wait_statuses(cluster: Cluster, server: str, wanted: str) -> None:
    with anyio.fail_after(30):
        while set(await statuses(cluster, server)) != {wanted}:  # noqa: ASYNC110
            await anyio.sleep(0.05)  # bounded polling of other processes' state


@pytest.mark.npm
async def test_a_login_begun_on_one_replica_and_called_back_on_another_connects_every_replica(
    cluster: ClusterFactory, tmp_path: Path, oidc: Peer, protected: Peer
) -> None:
    config = tmp_path / ".mcp-funnel.json"
    config.write_text(
        json.dumps(
            {
                "servers": {
                    "protected": {
                        "transport": {"type": "streamable-http", "url": protected.url},
                        "auth": {"type": "oauth2-code"},
                    }
                }
            }
        )
    )
    async with cluster(config, tmp_path) as c:
        await wait_statuses(c, "protected", "auth_required")
        async with httpx.AsyncClient(base_url=c.url, timeout=15) as browser:
            # Round robin: three authorize requests reach three replicas, and every one
            # joins the one pending flow (same state), never a second login.
            locations = []
            for _ in range(3):
                start = await browser.get("/api/oauth/authorize/protected", headers=AUTH)
                assert start.status_code == 302, start.text
                locations.append(start.headers["location"])
            assert len(set(locations)) == 1, "one flow for the server, joined by all"
            query = dict(parse_qsl(urlsplit(locations[0]).query))
            assert query["redirect_uri"] == f"{c.url}/api/oauth/callback"
            # One replica began the login (its backend's 401 at start-up); the others joined.
            began = [i for i in range(3) if audit_events(tmp_path, i, "auth.flow_started")]
            assert len(began) == 1, c.logs()
            # The person logs in. Round robin is a fixed rotation: steer it so that the
            # callback lands on a replica that did not begin the login.
            callback = await follow_authorization(locations[0])
            assert callback.error is None, callback.error_description
            if (c.served_by(start) + 1) % 3 == began[0]:
                c.served_by(await browser.get("/api/health"))
            page = await browser.get("/api/oauth/callback", params=callback.params)
            assert page.status_code == 200, page.text
            assert c.served_by(page) != began[0]
        await wait_statuses(c, "protected", "connected")
        async with c.client() as http:
            for n in range(3):
                status, body = await call(http, "protected__whoami", {}, n)
                assert status == 200 and "error" not in body, body
                assert body["result"]["content"][0]["text"] == "authorized"
        # Exactly one authorization (one code grant at the AS, one completed flow) and
        # one client registration for all three replicas.
        await token_grant_barrier(oidc)
        grants = [e.get("grant_type") for e in oidc.events if e.get("event") == "grant"]
        assert grants == ["authorization_code", "client_credentials"], oidc.events
        completed = sum(audit_events(tmp_path, i, "auth.flow_completed") for i in range(3))
        registered = sum(
            audit_events(tmp_path, i, "auth.client_registered", outcome="success") for i in range(3)
        )
        assert (completed, registered) == (1, 1), c.logs()
        # Tokens and the registration are in Redis, sealed: no JSON field in the clear.
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(c.redis_url)
        try:
            keys = [key async for key in client.scan_iter(match="funnel:tok:*")]
            assert len(keys) >= 2, keys  # the tokens and the client registration at least
            for key in keys:
                value = await client.get(key)
                assert isinstance(value, bytes) and value.startswith(b"fs1"), key
                assert b"access_token" not in value and b"client_id" not in value
        finally:
            await client.aclose()
