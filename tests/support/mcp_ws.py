"""A WebSocket MCP test server (subprotocol ``mcp``), bearer-protected.

Shared by the transport tests and the funnel's end-to-end tests (``support.mcp_ws``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from support.peers import listening_socket

WS_TOKEN = "s3cret-token"


class McpWebSocketServer:
    """Just enough MCP over a ``websockets`` server (subprotocol ``mcp``), bearer-protected.

    Tools: ``echo`` (progress first when asked), ``drop`` (aborts the TCP connection),
    ``bye`` (closes normally with 1000), ``big`` (answers ``size`` bytes of text).
    """

    def __init__(self) -> None:
        self.handshake_headers: list[dict[str, str]] = []

    def check_auth(self, connection: Any, request: Any) -> Any:
        self.handshake_headers.append(dict(request.headers.raw_items()))
        if request.headers.get("Authorization") != f"Bearer {WS_TOKEN}":
            response = connection.respond(401, "unauthorized\n")
            response.headers["WWW-Authenticate"] = 'Bearer realm="test"'
            return response
        return None

    async def handler(self, ws: Any) -> None:
        async for raw in ws:
            message = json.loads(raw)
            if "id" not in message or "method" not in message:
                continue
            answer = await self.answer(ws, message)
            if answer is not None:
                await ws.send(json.dumps(answer))

    async def answer(self, ws: Any, message: dict[str, Any]) -> dict[str, Any] | None:
        rid, method, params = message["id"], message["method"], message.get("params") or {}
        if method == "initialize":
            result: Any = {
                "protocolVersion": params["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "ws-test", "version": "1"},
            }
        elif method == "tools/list":
            result = {
                "tools": [
                    {"name": n, "inputSchema": {"type": "object"}}
                    for n in ("echo", "drop", "bye", "big")
                ]
            }
        elif method == "tools/call":
            name, arguments = params["name"], params.get("arguments") or {}
            token = (params.get("_meta") or {}).get("progressToken")
            if token is not None:
                progress = {"progressToken": token, "progress": 1, "total": 2}
                await ws.send(
                    json.dumps(
                        {"jsonrpc": "2.0", "method": "notifications/progress", "params": progress}
                    )
                )
            if name == "drop":
                ws.transport.abort()
                return None
            if name == "bye":
                await ws.close(1000, "bye")
                return None
            text = (
                "x" * int(arguments.get("size", 0))
                if name == "big"
                else f"Echo: {arguments.get('message')}"
            )
            result = {"content": [{"type": "text", "text": text}]}
        else:
            return {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {"code": -32601, "message": f"no {method}"},
            }
        return {"jsonrpc": "2.0", "id": rid, "result": result}


@contextlib.asynccontextmanager
async def websocket_server() -> AsyncIterator[tuple[str, McpWebSocketServer]]:
    """Serve :class:`McpWebSocketServer` on 127.0.0.1; yield its ws:// URL."""
    from websockets.asyncio.server import serve
    from websockets.typing import Subprotocol

    app = McpWebSocketServer()
    sock = listening_socket()
    port = sock.getsockname()[1]
    async with serve(
        app.handler,
        sock=sock,
        subprotocols=[Subprotocol("mcp")],
        process_request=app.check_auth,
    ) as server:
        try:
            yield f"ws://127.0.0.1:{port}/mcp", app
        finally:
            server.close()
