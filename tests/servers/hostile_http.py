"""A streamable-HTTP MCP backend whose faults are switched at run time: the HTTP side of
the fault suite.

Usage: ``python hostile_http.py``; it binds 127.0.0.1 on a free port and prints
``PORT <n>`` as its first line on stdout. ``POST /control {"mode": M}`` switches how it
answers ``tools/call`` from then on (``initialize``, ``tools/list`` and ``ping`` always
work, so a probe hits exactly the call path):

- ``normal``: a handshake-era server with one tool, ``echo``.
- ``forget``: forgets every session, as a server built on the TypeScript SDK's example
  routing does when it restarts, then answers an unknown ``Mcp-Session-Id`` with
  **400** "Bad Request: No valid session ID provided" (mode returns to ``normal``).
- ``expire``: forgets every session and answers unknown ones with 404, as the spec says.
- ``429``, ``500``, ``502``, ``503``: that status (429 with ``Retry-After: 1``).
- ``no-headers``: reads the request and never sends a byte back.
- ``drop``: sends SSE headers and a priming event, then closes the stream mid-call.
- ``garbage``: 200 ``application/json`` whose body is not JSON.
- ``slow-body``: sends the headers at once, then never the body.

``GET /control`` answers the number of ``tools/call`` requests seen. Stdlib only.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

state: dict[str, Any] = {"mode": "normal", "unknown": 400, "calls": 0}
sessions: set[str] = set()
lock = threading.Lock()
forever = threading.Event()  # never set: what a hanging answer waits on

NO_SESSION = {
    "jsonrpc": "2.0",
    "error": {"code": -32000, "message": "Bad Request: No valid session ID provided"},
    "id": None,
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Type" not in (headers or {}):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        if self.path == "/control":
            self.reply(200, json.dumps({"calls": state["calls"], "mode": state["mode"]}).encode())
        else:
            self.reply(405, b"", {"Allow": "POST, DELETE"})

    def do_DELETE(self) -> None:
        with lock:
            sessions.discard(self.headers.get("Mcp-Session-Id", ""))
        self.reply(200, b"")

    def do_POST(self) -> None:
        data = self.body()
        if self.path == "/control":
            mode = json.loads(data)["mode"]
            with lock:
                if mode in ("forget", "expire"):
                    sessions.clear()
                    state["unknown"] = 400 if mode == "forget" else 404
                    mode = "normal"
                state["mode"] = mode
            self.reply(200, b"{}")
            return
        try:
            message = json.loads(data)
        except ValueError:
            self.reply(
                400, b'{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}'
            )
            return
        method = message.get("method") if isinstance(message, dict) else None
        request_id = message.get("id") if isinstance(message, dict) else None
        if method == "initialize":
            session = uuid.uuid4().hex
            with lock:
                sessions.add(session)
            params = message.get("params") or {}
            result = {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "hostile-http", "version": "1.0"},
            }
            self.answer(request_id, result, {"Mcp-Session-Id": session})
            return
        if method == "server/discover":
            error = {"code": -32601, "message": "Method not found"}
            self.reply(
                200, json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()
            )
            return
        with lock:
            known = self.headers.get("Mcp-Session-Id") in sessions
        if not known:
            if state["unknown"] == 400:
                self.reply(400, json.dumps(NO_SESSION).encode())
            else:
                self.reply(404, b"", {"Content-Type": "text/plain"})
            return
        if request_id is None:
            self.reply(202, b"")
            return
        if method == "tools/list":
            tool = {"name": "echo", "inputSchema": {"type": "object"}}
            self.answer(request_id, {"tools": [tool]})
        elif method == "ping":
            self.answer(request_id, {})
        elif method == "tools/call":
            with lock:
                state["calls"] += 1
            self.call(request_id, message.get("params") or {})
        else:
            error = {"code": -32601, "message": f"Method not found: {method}"}
            self.reply(
                200, json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()
            )

    def answer(
        self, request_id: object, result: object, headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode()
        self.reply(200, body, headers)

    def call(self, request_id: object, params: dict[str, Any]) -> None:
        mode = state["mode"]
        if mode == "normal":
            arguments = params.get("arguments") or {}
            text = f"Echo: {arguments.get('message', '')}"
            self.answer(request_id, {"content": [{"type": "text", "text": text}]})
        elif mode in ("429", "500", "502", "503"):
            headers = {"Content-Type": "text/html"}
            if mode == "429":
                headers["Retry-After"] = "1"
            self.reply(
                int(mode), f"<html><body>{mode} from hostile</body></html>".encode(), headers
            )
        elif mode == "no-headers":
            forever.wait()
        elif mode == "slow-body":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.flush()
            forever.wait()
        elif mode == "drop":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(b"id: 1\ndata: \n\n")
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
        elif mode == "garbage":
            self.reply(200, b"this is {not json")


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    sys.stdout.write(f"PORT {server.server_address[1]}\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        time.sleep(0)


if __name__ == "__main__":
    main()
