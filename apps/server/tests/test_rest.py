"""The REST API, inbound auth, Host/Origin checks and tool-call limits, on a real server."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from funnel_proxy import FunnelConfig
from funnel_server.testing import Served

Serve = Callable[..., AbstractAsyncContextManager[Served]]

pytestmark = pytest.mark.anyio


async def test_health_is_open_and_says_the_version(serve: Serve) -> None:
    async with serve(version="9.9.9") as served, httpx.AsyncClient(base_url=served.base) as http:
        response = await http.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": "9.9.9"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/servers"),
        ("POST", "/api/servers/demo/reconnect"),
        ("POST", "/api/servers/demo/disable"),
        ("POST", "/api/servers/demo/enable"),
        ("GET", "/api/logs"),
        ("GET", "/api/tools"),
        ("POST", "/api/tools/demo__echo/call"),
        ("GET", "/api/oauth/authorize/demo"),
        ("GET", "/schema/openapi.json"),
        ("POST", "/mcp"),
        ("GET", "/mcp"),
        ("DELETE", "/mcp"),
    ],
)
async def test_every_route_but_health_and_the_callback_needs_the_token(
    serve: Serve, method: str, path: str
) -> None:
    async with serve() as served, httpx.AsyncClient(base_url=served.base) as http:
        missing = await http.request(method, path, json={})
        wrong = await http.request(method, path, json={}, headers={"Authorization": "Bearer nope"})
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="funnel"'
        assert response.json()["detail"].startswith("Unauthorized")


async def test_servers_lists_every_backend_with_its_status(serve: Serve) -> None:
    async with serve() as served, httpx.AsyncClient(base_url=served.base) as http:
        response = await http.get("/api/servers", headers=served.auth)
    assert response.status_code == 200
    [demo] = response.json()["servers"]
    assert demo["name"] == "demo" and demo["status"] == "connected"
    assert demo["transport"] == "stdio" and demo["toolCount"] == 5
    assert demo["authRequired"] is False and demo["error"] is None


async def test_tools_shows_exposed_and_hidden_tools_and_why(
    serve: Serve, sdk_config: FunnelConfig
) -> None:
    async with serve(sdk_config) as served, httpx.AsyncClient(base_url=served.base) as http:
        response = await http.get("/api/tools", headers=served.auth)
    tools = {tool["name"]: tool for tool in response.json()["tools"]}
    assert tools["demo__echo"]["exposed"] is True
    assert tools["demo__echo"]["reason"] == "allowlist"
    assert tools["demo__echo"]["description"] == "Repeat a message back."
    assert tools["demo__echo"]["inputSchema"]["required"] == ["message"]
    assert tools["demo__word_count"]["exposed"] is False
    assert tools["demo__word_count"]["reason"] == "allowlist"
    # hideTools removes a tool from the surface; the API still lists it, and why.
    assert (tools["demo__new_uuid"]["exposed"], tools["demo__new_uuid"]["reason"]) == (
        False,
        "hidden",
    )
    assert tools["sdk__slow"]["server"] == "sdk" and tools["sdk__slow"]["original"] == "slow"


async def test_calling_an_exposed_tool_returns_its_result(
    serve: Serve, sdk_config: FunnelConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "funnel.audit")
    async with serve(sdk_config) as served, httpx.AsyncClient(base_url=served.base) as http:
        added = await http.post(
            "/api/tools/demo__add/call",
            json={"arguments": {"a": 31337, "b": 11}},
            headers=served.auth,
        )
        hidden = await http.post(
            "/api/tools/demo__word_count/call",
            json={"arguments": {"text": "x"}},
            headers=served.auth,
        )
        unknown = await http.post("/api/tools/nope__x/call", json={}, headers=served.auth)
        garbage = await http.post(
            "/api/tools/demo__add/call", json={"argumentz": {}}, headers=served.auth
        )
    assert added.status_code == 200
    assert added.json()["result"]["content"] == [{"type": "text", "text": "31348"}]
    assert added.json()["durationMs"] >= 0
    assert hidden.status_code == 404 and unknown.status_code == 404
    assert garbage.status_code == 400
    [event] = [r for r in caplog.records if getattr(r, "event", None) == "tool.call"]
    assert (event.tool, event.server, event.client, event.outcome) == (  # type: ignore[attr-defined]
        "demo__add",
        "demo",
        "rest",
        "success",
    )
    audit_text = " ".join(
        f"{r.getMessage()} {vars(r)}" for r in caplog.records if r.name == "funnel.audit"
    )
    assert "31337" not in audit_text, "arguments are not in the audit log"


async def test_reconnect_accepts_known_servers_only(serve: Serve) -> None:
    async with serve() as served, httpx.AsyncClient(base_url=served.base) as http:
        accepted = await http.post("/api/servers/demo/reconnect", headers=served.auth)
        missing = await http.post("/api/servers/ghost/reconnect", headers=served.auth)
    assert accepted.status_code == 202 and accepted.json()["server"] == "demo"
    assert missing.status_code == 404


async def test_the_openapi_schema_describes_the_api(serve: Serve) -> None:
    async with serve() as served, httpx.AsyncClient(base_url=served.base) as http:
        schema = (await http.get("/schema/openapi.json", headers=served.auth)).json()
    paths = schema["paths"]
    for path in (
        "/api/health",
        "/api/servers",
        "/api/servers/{name}/reconnect",
        "/api/tools",
        "/api/tools/{name}/call",
        "/api/oauth/authorize/{server}",
        "/api/oauth/callback",
    ):
        assert path in paths, path
    assert "CallRequest" in str(paths["/api/tools/{name}/call"]["post"]["requestBody"])


async def test_a_burst_of_bad_tokens_is_refused_with_429_and_retry_after(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        serve(failed_auth_attempts=3) as served,
        httpx.AsyncClient(base_url=served.base) as http,
    ):
        statuses = []
        for attempt in range(5):
            response = await http.get(
                "/api/servers", headers={"Authorization": f"Bearer guess-{attempt}"}
            )
            statuses.append(response.status_code)
        limited = response
        health = await http.get("/api/health")
    assert statuses == [401, 401, 401, 429, 429]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert health.status_code == 200
    outcomes = [
        getattr(r, "outcome", None)
        for r in caplog.records
        if getattr(r, "event", "") == "inbound.auth_failed"
    ]
    assert outcomes == ["denied"] * 3 + ["limited"], "one audit event per refused burst"
    assert "guess-" not in caplog.text and served.token not in caplog.text


async def test_ten_wrong_tokens_never_lock_out_the_right_one(serve: Serve) -> None:
    # Every local client is 127.0.0.1: a limit that refused the address would let any
    # local process lock out every other one. The credential is judged first.
    ping = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    mcp_headers = {"Accept": "application/json, text/event-stream"}
    async with serve() as served, httpx.AsyncClient(base_url=served.base) as http:
        wrong = [
            await http.get("/api/servers", headers={"Authorization": f"Bearer guess-{n}"})
            for n in range(10)
        ]
        limited_api = await http.get("/api/servers", headers={"Authorization": "Bearer again"})
        limited_mcp = await http.post(
            "/mcp", json=ping, headers={**mcp_headers, "Authorization": "Bearer again"}
        )
        api = await http.get("/api/servers", headers=served.auth)
        mcp = await http.post("/mcp", json=ping, headers={**mcp_headers, **served.auth})
        cookie = (await http.get("/", params={"token": served.token})).headers["set-cookie"]
        dashboard = await http.get("/", headers={"Cookie": cookie.split(";", 1)[0]})
    assert [r.status_code for r in wrong] == [401] * 10
    assert limited_api.status_code == 429 and limited_mcp.status_code == 429
    assert api.status_code == 200, api.text
    assert mcp.status_code == 200, mcp.text
    assert dashboard.status_code == 200


async def test_a_foreign_origin_or_host_is_refused(serve: Serve) -> None:
    async with serve() as served, httpx.AsyncClient(base_url=served.base) as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        foreign = await http.post(
            "/mcp", json=body, headers={**served.auth, "Origin": "https://evil.example"}
        )
        rebound = await http.get(
            "/api/servers", headers={**served.auth, "Host": f"evil.example:{served.port}"}
        )
        open_route = await http.get("/api/health", headers={"Host": "evil.example"})
        local = await http.get(
            "/api/servers", headers={**served.auth, "Origin": f"http://localhost:{served.port}"}
        )
    assert foreign.status_code == 403 and rebound.status_code == 403
    assert open_route.status_code == 403
    assert local.status_code == 200


async def test_the_dashboard_link_swaps_the_token_for_a_cookie(serve: Serve) -> None:
    async with serve() as served, httpx.AsyncClient(base_url=served.base) as http:
        login = await http.get("/", params={"token": served.token})
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert served.token not in cookie
        assert login.headers["referrer-policy"] == "no-referrer"
        page = await http.get("/")
        api = await http.get("/api/servers")
        async with httpx.AsyncClient(base_url=served.base) as stranger:
            anonymous = await stranger.get("/", headers={"Cookie": "funnel_session=forged"})
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert api.status_code == 200
    assert anonymous.status_code == 401 and "Sign in" in anonymous.text
    assert served.token not in page.text


async def test_signing_in_goes_on_only_to_a_local_path(serve: Serve) -> None:
    async with serve() as served, httpx.AsyncClient(base_url=served.base) as http:
        local = await http.get(
            "/", params={"token": served.token, "next": "/api/oauth/authorize/x"}
        )
        offsite = await http.get("/", params={"token": served.token, "next": "//evil.example/"})
        wrong = await http.get("/", params={"token": "wrong-token"})
    assert local.headers["location"] == "/api/oauth/authorize/x"
    assert offsite.headers["location"] == "/"
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers


async def test_configured_tool_limits_apply_to_rest_calls(
    serve: Serve,
    make_config: Callable[[dict[str, Any]], FunnelConfig],
    demo_server: dict[str, Any],
) -> None:
    config = make_config(
        {
            "servers": {"demo": demo_server},
            "rateLimits": {"tools": {"demo__echo": {"calls": 2, "perSeconds": 60}}},
        }
    )
    async with serve(config) as served, httpx.AsyncClient(base_url=served.base) as http:
        call = {"arguments": {"message": "hi"}}
        statuses = [
            (
                await http.post("/api/tools/demo__echo/call", json=call, headers=served.auth)
            ).status_code
            for _ in range(2)
        ]
        refused = await http.post("/api/tools/demo__echo/call", json=call, headers=served.auth)
        other = await http.post(
            "/api/tools/demo__add/call", json={"arguments": {"a": 1, "b": 1}}, headers=served.auth
        )
    assert statuses == [200, 200]
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    assert "Rate limit exceeded for demo__echo" in refused.json()["detail"]
    assert other.status_code == 200


async def test_core_tools_are_callable_over_rest_but_never_reach_a_hidden_tool(
    serve: Serve, sdk_config: FunnelConfig
) -> None:
    async with serve(sdk_config) as served, httpx.AsyncClient(base_url=served.base) as http:
        schema = await http.post(
            "/api/tools/get_tool_schema/call",
            json={"arguments": {"tool": "sdk__add"}},
            headers=served.auth,
        )
        hidden = await http.post(
            "/api/tools/bridge_tool_request/call",
            json={"arguments": {"tool": "demo__new_uuid"}},
            headers=served.auth,
        )
    assert schema.status_code == 200
    assert '"a"' in schema.json()["result"]["content"][0]["text"]
    assert hidden.status_code == 200
    assert hidden.json()["result"]["isError"] is True
    assert "Unknown tool 'demo__new_uuid'" in hidden.json()["result"]["content"][0]["text"]


@asynccontextmanager
async def fifo_lines(path: Path) -> AsyncIterator[Callable[[], Any]]:
    """A FIFO at ``path`` and a function that awaits its next line (no sleeping, no threads)."""
    os.mkfifo(path)
    # Read-write: opening never blocks, and the reader never sees end-of-file between
    # the writer's opens.
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    buffer = b""

    async def next_line() -> str:
        nonlocal buffer
        while b"\n" not in buffer:
            await anyio.wait_readable(fd)
            buffer += os.read(fd, 4096)
        line, _, buffer = buffer.partition(b"\n")
        return line.decode()

    try:
        yield next_line
    finally:
        os.close(fd)


async def test_a_client_that_hangs_up_cancels_the_backend_call(
    serve: Serve,
    make_config: Callable[[dict[str, Any]], FunnelConfig],
    servers_dir: Path,
    tmp_path: Path,
) -> None:
    report = tmp_path / "report"
    blocker = [str(servers_dir / "blocker.py"), str(report)]
    config = make_config({"servers": {"b": {"command": sys.executable, "args": blocker}}})
    body = json.dumps({"arguments": {}}).encode()
    async with fifo_lines(report) as next_line, serve(config) as served:
        with anyio.fail_after(10):
            stream = await anyio.connect_tcp("127.0.0.1", served.port)
            await stream.send(
                b"POST /api/tools/b__block/call HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"Authorization: Bearer {served.token}\r\n".encode()
                + b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            called = await next_line()
            assert called.startswith("called "), called
            await stream.aclose()  # the client hangs up before the answer
            cancelled = await next_line()
    assert cancelled == "cancelled " + called.removeprefix("called ")
