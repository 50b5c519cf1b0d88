"""An MCP server (official SDK) that tells what trace context it received in ``_meta``.

Usage: ``python trace_server.py`` serves stdio; ``python trace_server.py http`` binds
127.0.0.1 on a free port, prints its MCP URL (``http://127.0.0.1:<port>/mcp``) as the
first stdout line and serves until stdin closes. With ``TRACE_SERVER_TOKEN`` set, every
HTTP request needs ``Authorization: Bearer <that token>`` (401 otherwise), so a test can
put a credential on the path and check that it never shows in telemetry.

Tools: ``meta`` answers ``{"traceparent": ..., "tracestate": ...}`` as JSON text (``null``
for a key that was not sent); ``fail`` reports a tool error (``isError``).

Test peer only: it is a server nobody on this project wrote the protocol side of.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("trace-peer")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@server.tool()
def meta(ctx: Context) -> str:
    """The trace context keys of this request's ``_meta``."""
    carrier: dict[str, Any] = dict(ctx.request_context.meta or {})  # a TypedDict
    return json.dumps({key: carrier.get(key) for key in ("traceparent", "tracestate")})


@server.tool()
def fail() -> str:
    """Always fail (a tool error, not a protocol error)."""
    raise ValueError("this tool always fails")


def _protected(app: Callable[[Scope, Receive, Send], Awaitable[None]], token: str) -> Any:
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await app(scope, receive, send)

    return guarded


async def _serve_http() -> None:
    import uvicorn

    app: Any = server.streamable_http_app()
    token = os.environ.get("TRACE_SERVER_TOKEN")
    if token:
        app = _protected(app, token)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    http = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_config=None, log_level="warning"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(http.serve, [sock])
        print(f"http://127.0.0.1:{port}/mcp", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
        http.should_exit = True


if __name__ == "__main__":
    if sys.argv[1:] == ["http"]:
        anyio.run(_serve_http)
    else:
        server.run("stdio")
