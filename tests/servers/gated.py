"""A handshake-era stdio MCP server whose tool ``gated`` answers when a test opens the gate.

Usage: ``python gated.py REPORT_PATH GATE_FIFO``. A ``tools/call`` of ``gated`` appends
``called`` to ``REPORT_PATH``, then blocks reading one line from the FIFO ``GATE_FIFO``
and answers with that line as text. So a test can hold a call in flight for exactly as
long as it wants (through a SIGTERM, say) without sleeping. Stdlib only; a test peer.
"""

from __future__ import annotations

import json
import sys

REPORT, GATE = sys.argv[1], sys.argv[2]


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
        if request_id is None:
            continue
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": request_id, "result": {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "gated", "version": "1.0"},
            }})  # fmt: skip
        elif method == "tools/list":
            tools = [{"name": "gated", "inputSchema": {"type": "object"}}]
            send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": tools}})
        elif method == "tools/call" and params.get("name") == "gated":
            with open(REPORT, "a", encoding="utf-8") as report:
                report.write("called\n")
            with open(GATE, encoding="utf-8") as gate:  # blocks until the test opens it
                text = gate.readline().strip()
            content = [{"type": "text", "text": text}]
            send({"jsonrpc": "2.0", "id": request_id, "result": {"content": content}})
        else:
            send({"jsonrpc": "2.0", "id": request_id,
                  "error": {"code": -32601, "message": f"Method not found: {method}"}})  # fmt: skip


if __name__ == "__main__":
    main()
