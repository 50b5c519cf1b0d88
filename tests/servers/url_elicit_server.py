"""A 2025-11-25 MCP server over stdio whose one tool asks for a URL-mode elicitation.

Test peer only, plain JSON lines (the SDK's server sends server-initiated requests only in
the handshake era, and negotiates the newer one with funnel). ``visit(url)`` sends the
client ``elicitation/create`` with ``mode: url`` and answers with the action the client
returned (or the error it got).
"""

from __future__ import annotations

import json
import sys
from typing import Any

VISIT = {
    "name": "visit",
    "description": "Ask the person to open a URL; report what they answered.",
    "inputSchema": {
        "type": "object",
        "properties": {"url": {"type": "string"}},
        "required": ["url"],
    },
}


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
    sys.stdout.flush()


def main() -> None:
    waiting: dict[str, Any] = {}  # our elicitation id -> the tools/call id it belongs to
    asked = 0
    for line in sys.stdin:
        message = json.loads(line)
        method, request_id = message.get("method"), message.get("id")
        if method == "initialize":
            send(
                {
                    "id": request_id,
                    "result": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "url-elicit-peer", "version": "1"},
                    },
                }
            )
        elif method == "tools/list":
            send({"id": request_id, "result": {"tools": [VISIT]}})
        elif method == "tools/call":
            asked += 1
            elicitation = f"visit-{asked}"
            waiting[elicitation] = request_id
            url = message["params"]["arguments"]["url"]
            params = {
                "mode": "url",
                "message": "Open this page to connect your account",
                "url": url,
                "elicitationId": elicitation,
            }
            send({"id": elicitation, "method": "elicitation/create", "params": params})
        elif method is None and request_id in waiting:
            call = waiting.pop(request_id)
            if "error" in message:
                text, failed = f"error: {message['error'].get('message')}", True
            else:
                text, failed = f"action: {message['result'].get('action')}", False
            result = {"content": [{"type": "text", "text": text}], "isError": failed}
            send({"id": call, "result": result})
        elif request_id is not None and method is not None:
            send({"id": request_id, "error": {"code": -32601, "message": f"no {method}"}})


if __name__ == "__main__":
    main()
