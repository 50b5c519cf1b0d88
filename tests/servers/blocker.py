"""A handshake-era stdio MCP server whose tool ``block`` never answers, and that says so.

Usage: ``python blocker.py REPORT_PATH``. Every ``tools/call`` of ``block`` appends
``called <id>`` to ``REPORT_PATH`` (a FIFO the test reads, or a file) and is never
answered; every ``notifications/cancelled`` appends ``cancelled <requestId>``. So a test
can wait for the call to reach the backend, hang up, and see the cancellation arrive,
without sleeping. Stdlib only; a test peer, not an example.
"""

from __future__ import annotations

import json
import sys

REPORT = sys.argv[1]


def report(line: str) -> None:
    with open(REPORT, "a", encoding="utf-8") as file:  # a FIFO or a file
        file.write(line + "\n")


def send(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        method, request_id = message.get("method"), message.get("id")
        params = message.get("params") or {}
        if method == "notifications/cancelled":
            report(f"cancelled {json.dumps(params.get('requestId'))}")
        elif request_id is None:
            continue
        elif method == "initialize":
            send({"jsonrpc": "2.0", "id": request_id, "result": {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "blocker", "version": "1.0"},
            }})  # fmt: skip
        elif method == "tools/list":
            tools = [{"name": "block", "inputSchema": {"type": "object"}}]
            send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": tools}})
        elif method == "tools/call" and params.get("name") == "block":
            report(f"called {json.dumps(request_id)}")
        else:
            send({"jsonrpc": "2.0", "id": request_id,
                  "error": {"code": -32601, "message": f"Method not found: {method}"}})  # fmt: skip


if __name__ == "__main__":
    main()
