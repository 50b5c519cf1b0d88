"""A tiny handshake-era MCP server over stdio whose misbehaviour is chosen on the command line.

Usage: ``python scripted.py BEHAVIOUR [...]`` with behaviours:

- ``normal``: a well-behaved server with tools ``echo`` and ``crash`` and ``block``.
- ``garbage``: prints non-JSON lines and broken JSON-RPC around every answer.
- ``silent``: reads everything and never answers anything.
- ``huge-line``: answers ``tools/list`` with one line of 10 MB.
- ``stubborn``: ignores stdin closing and SIGTERM (only SIGKILL ends it).
- ``paged``: serves 25 tools over pages of 10.
- ``env``: the tool ``env`` returns the environment it sees.
- ``slow-start``: a normal server that takes 3 seconds before it reads anything.

Every server answers ``server/discover`` with -32601 (it is handshake-era) and reports the
ids of cancelled requests through the ``cancelled`` tool. Stdlib only; synchronous on
purpose: this is a test peer, not an example.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

BEHAVIOUR = sys.argv[1] if len(sys.argv) > 1 else "normal"
cancelled: list[object] = []
lock = threading.Lock()


def send(message: dict[str, object]) -> None:
    with lock:
        if BEHAVIOUR == "garbage":
            sys.stdout.write("this is not json\n")
            sys.stdout.write('{"jsonrpc": "2.0", "method": 5}\n')
            sys.stdout.write("[]\n")
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def result(request_id: object, value: dict[str, object]) -> None:
    send({"jsonrpc": "2.0", "id": request_id, "result": value})


def error(request_id: object, code: int, message: str) -> None:
    send({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}})


def tool(name: str, description: str = "") -> dict[str, object]:
    return {"name": name, "description": description, "inputSchema": {"type": "object"}}


def text(value: str) -> dict[str, object]:
    return {"content": [{"type": "text", "text": value}]}


def handle(message: dict[str, object]) -> None:
    method = message.get("method")
    request_id = message.get("id")
    params = message.get("params") or {}
    assert isinstance(params, dict)
    if method == "notifications/cancelled":
        cancelled.append(params.get("requestId"))
        return
    if request_id is None:
        return
    if BEHAVIOUR == "silent":
        return
    if method == "server/discover":
        error(request_id, -32601, "Method not found")
    elif method == "initialize":
        result(
            request_id,
            {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": f"scripted-{BEHAVIOUR}", "version": "1.0"},
            },
        )
    elif method == "ping":
        result(request_id, {})
    elif method == "tools/list":
        if BEHAVIOUR == "huge-line":
            result(request_id, {"tools": [tool("big", "x" * 10_000_000)]})
        elif BEHAVIOUR == "paged":
            start = int(str(params.get("cursor") or 0))
            page = [tool(f"tool_{i:02d}") for i in range(start, min(start + 10, 25))]
            next_cursor = str(start + 10) if start + 10 < 25 else None
            body: dict[str, object] = {"tools": page}
            if next_cursor:
                body["nextCursor"] = next_cursor
            result(request_id, body)
        else:
            result(
                request_id,
                {"tools": [tool("echo"), tool("crash"), tool("block"), tool("cancelled")]},
            )
    elif method == "tools/call":
        name = params.get("name")
        arguments = params.get("arguments") or {}
        assert isinstance(arguments, dict)
        if name == "echo":
            result(request_id, text(f"Echo: {arguments.get('message', '')}"))
        elif name == "crash":
            sys.stderr.write("crashing on purpose\n")
            sys.stderr.flush()
            os._exit(3)
        elif name == "block":
            return  # never answered
        elif name == "cancelled":
            result(request_id, text(json.dumps(cancelled)))
        elif name == "env":
            result(request_id, text(json.dumps(dict(os.environ))))
        else:
            error(request_id, -32602, f"Unknown tool: {name}")
    else:
        error(request_id, -32601, f"Method not found: {method}")


def main() -> None:
    if BEHAVIOUR == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if BEHAVIOUR == "slow-start":
        time.sleep(3)
    sys.stderr.write(f"scripted server ({BEHAVIOUR}) ready\n")
    sys.stderr.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        handle(json.loads(line))
    if BEHAVIOUR == "stubborn":
        while True:  # ignore the closed stdin; only SIGKILL ends us
            time.sleep(3600)


if __name__ == "__main__":
    main()
