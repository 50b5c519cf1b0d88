"""Remote backends behind the funnel: streamable HTTP and legacy SSE (server-everything
in its HTTP modes) and an HTTP server that demands a token, next to a stdio one."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from support.mcp_ws import WS_TOKEN, websocket_server
from support.peers import SERVERS, NodeServer, listening_socket

from funnel_transports import from_raw

pytestmark = pytest.mark.anyio

FUNNEL = str(Path(sys.executable).with_name("funnel-server"))


@pytest.fixture(scope="module")
def everything() -> Iterator[dict[str, str]]:
    servers = {"streamable-http": NodeServer("streamableHttp"), "sse": NodeServer("sse")}
    try:
        for server in servers.values():
            server.start()
        yield {
            "streamable-http": f"http://127.0.0.1:{servers['streamable-http'].port}/mcp",
            "sse": f"http://127.0.0.1:{servers['sse'].port}/sse",
        }
    finally:
        for server in servers.values():
            server.stop()


def funnel(tmp_path: Path, config: Mapping[str, object]) -> StdioServerParameters:
    path = tmp_path / ".mcp-funnel.json"
    path.write_text(json.dumps(config))
    env = {
        "PATH": os.environ["PATH"],
        "MCP_FUNNEL_HOME": str(tmp_path / "home"),
        "FUNNEL_LOG_LEVEL": "WARNING",
        # These tests list every backend at once: wait for all of them, however busy
        # the machine (the default bound, 2 s, is for people).
        "FUNNEL_STARTUP_WAIT": "60",
    }
    return StdioServerParameters(
        command=FUNNEL, args=["--stdio", "--config", str(path)], env=env, cwd=str(tmp_path)
    )


async def test_http_and_sse_backends_serve_like_stdio_ones(
    tmp_path: Path, everything: dict[str, str]
) -> None:
    config = {
        "servers": {
            "http": {
                "transport": {"type": "streamable-http", "url": everything["streamable-http"]}
            },
            "sse": {"transport": {"type": "sse", "url": everything["sse"]}},
            "local": {"command": sys.executable, "args": [str(SERVERS / "sdk_server.py")]},
        }
    }
    async with Client(funnel(tmp_path, config), mode="legacy") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"http__echo", "sse__echo", "local__echo"} <= names
        for prefix in ("http", "sse", "local"):
            result = await client.call_tool(f"{prefix}__echo", {"message": prefix})
            assert result.content[0].text == f"Echo: {prefix}"  # type: ignore[union-attr]


async def test_check_reports_the_status_of_remote_backends(
    tmp_path: Path, everything: dict[str, str]
) -> None:
    config = {
        "servers": {
            "http": {
                "transport": {"type": "streamable-http", "url": everything["streamable-http"]}
            },
            "down": {"transport": {"type": "streamable-http", "url": "http://127.0.0.1:9/mcp"}},
        },
        "autoReconnect": {"enabled": False},
    }
    path = tmp_path / ".mcp-funnel.json"
    path.write_text(json.dumps(config))
    env = {
        "PATH": os.environ["PATH"],
        "MCP_FUNNEL_HOME": str(tmp_path / "home"),
        "FUNNEL_LOG_LEVEL": "ERROR",
    }
    import subprocess

    done = subprocess.run(  # noqa: ASYNC221 - a CLI run to completion is the thing under test
        [FUNNEL, "--config", str(path), "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    rows = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()[1:]}
    assert rows == {"http": "connected", "down": "failed"}
    assert "cannot reach down" in done.stdout


async def test_a_server_that_refuses_our_token_is_auth_required_not_failed(tmp_path: Path) -> None:
    import anyio
    import uvicorn

    from funnel_proxy import Funnel, parse_config

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", b'Bearer error="invalid_token"'),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    sock = listening_socket()  # connections queue until uvicorn accepts them
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    config = parse_config(
        {
            "servers": {
                "locked": {
                    "transport": {"type": "streamable-http", "url": f"http://127.0.0.1:{port}/mcp"},
                    "auth": {"type": "bearer", "token": "wrong-token"},
                }
            }
        },
        environ={},
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: server.serve(sockets=[sock]))
        try:
            async with Funnel(config, environ={}) as running:
                state = running.states()[0]
        finally:
            server.should_exit = True
    sock.close()
    assert state.status == "auth_required"
    assert "wrong-token" not in (state.error or "")


@pytest.mark.parametrize(
    ("token", "status"), [(WS_TOKEN, "connected"), ("wrong-token", "auth_required")]
)
async def test_a_websocket_backend_authenticates_its_handshake_with_the_configured_bearer(
    token: str, status: str
) -> None:
    from funnel_proxy import Funnel, parse_config

    async with websocket_server() as (url, app):
        config = parse_config(
            {
                "servers": {
                    "ws": {
                        "transport": {"type": "websocket", "url": url},
                        "auth": {"type": "bearer", "token": token},
                    }
                },
                "autoReconnect": {"enabled": False},
            },
            environ={},
        )
        async with Funnel(config, environ={}) as running:
            state = running.states()[0]
            assert state.status == status
            if status == "connected":
                entry = running.resolve_tool("ws__echo")
                result = from_raw(await running.call_tool(entry, {"message": "over ws"}))
                assert result["content"][0]["text"] == "Echo: over ws"
    assert app.handshake_headers[0]["Authorization"] == f"Bearer {token}"
    assert token not in (state.error or "")


async def test_a_restarted_http_backend_is_served_again_without_a_manual_reconnect(
    tmp_path: Path,
) -> None:
    server = NodeServer("streamableHttp")
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/mcp"
        config = {"servers": {"http": {"transport": {"type": "streamable-http", "url": url}}}}
        async with Client(funnel(tmp_path, config), mode="legacy") as client:
            first = await client.call_tool("http__echo", {"message": "before"})
            assert first.content[0].text == "Echo: before"  # type: ignore[union-attr]
            # server-everything forgets every session when it restarts and answers the
            # old one with 400 "No valid session ID provided".
            server.kill()
            server.start()
            with anyio.fail_after(30):
                # The very first call succeeds: the expired session is renewed and the
                # call sent again, or a reconnect under way is waited for briefly.
                again = await client.call_tool("http__echo", {"message": "after"})
            assert again.content[0].text == "Echo: after"  # type: ignore[union-attr]
    finally:
        server.stop()
