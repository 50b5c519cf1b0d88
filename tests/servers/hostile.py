"""A stdio MCP backend that misbehaves on request: the backend side of the fault suite.

Usage: ``python hostile.py [MODE]``. Modes, for how it starts:

- ``normal`` (default): a handshake-era server; each tool below is one fault.
- ``hang-init``: reads everything, never answers ``initialize`` (a backend stuck starting).
- ``crash-init``: exits with status 7 on ``initialize``.
- ``deep-init``: answers ``initialize`` with one line of JSON nested 5,000 deep.

Tools (``tools/call``), each answering its call's ``id``:

- ``echo``: ``Echo: <message>``.
- ``crash``: exits with status 3 at once (the call is never answered).
- ``hang``: never answers (a backend stuck mid-call).
- ``giant``: answers with one line of 12 MB.
- ``deep``: answers with one line nested 5,000 deep (too deep for any JSON parser's stack).
- ``garbage``: prints non-JSON, broken JSON-RPC, invalid UTF-8 and a deep notification
  lines, then the answer.
- ``badutf8``: answers with a result whose text holds invalid UTF-8 bytes.
- ``drip``: answers, one byte at a time with a flush after each (a slow drip).
- ``freeze``: sends itself SIGSTOP (its parent must SIGCONT or kill it).
- ``flood``: sends ``count`` ``notifications/message`` and ``count`` progress
  notifications (when the call has a progress token), then the answer.
- ``listflood``: sends ``count`` ``notifications/tools/list_changed``, then the answer.
- ``cancelled``: the ids of every request the client cancelled so far, as JSON text.
- ``pid``: its process id.

Stdlib only; synchronous on purpose: a test peer, not an example.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

MODE = sys.argv[1] if len(sys.argv) > 1 else "normal"
DEPTH = 5000
cancelled: list[object] = []
lock = threading.Lock()
out = sys.stdout.buffer


def write(data: bytes) -> None:
    with lock:
        out.write(data)
        out.flush()


def send(message: dict[str, object]) -> None:
    write(json.dumps(message).encode() + b"\n")


def result(request_id: object, value: object) -> None:
    send({"jsonrpc": "2.0", "id": request_id, "result": value})


def text(value: str) -> dict[str, object]:
    return {"content": [{"type": "text", "text": value}]}


def tool(name: str) -> dict[str, object]:
    return {
        "name": name,
        "description": f"hostile {name}",
        "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}},
    }


TOOLS = [
    "echo",
    "crash",
    "hang",
    "giant",
    "deep",
    "garbage",
    "badutf8",
    "drip",
    "freeze",
    "flood",
    "listflood",
    "cancelled",
    "pid",
]


def deep_line(request_id: object) -> bytes:
    head = json.dumps({"jsonrpc": "2.0", "id": request_id}).encode()[:-1]
    return head + b',"result":' + b"[" * DEPTH + b"]" * DEPTH + b"}\n"


def call(request_id: object, name: object, arguments: dict[str, object], meta: object) -> None:
    if name == "echo":
        result(request_id, text(f"Echo: {arguments.get('message', '')}"))
    elif name == "crash":
        sys.stderr.write("crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    elif name == "hang":
        return
    elif name == "giant":
        result(request_id, text("g" * 12_000_000))
    elif name == "deep":
        write(deep_line(request_id))
    elif name == "garbage":
        write(b"this is not json\n")
        write(b'{"jsonrpc": "2.0", "method": 5}\n')
        write(b"[]\n")
        write(b'{"jsonrpc":"2.0","method":"notifications/message","params":{"x":"\xff\xfe"}}\n')
        write(
            b'{"jsonrpc":"2.0","method":"notifications/message","params":'
            + b"[" * DEPTH
            + b"]" * DEPTH
            + b"}\n"
        )
        write(b'{"jsonrpc":"2.0","id":"no-such-request","result":{}}\n')
        result(request_id, text("survived garbage"))
    elif name == "badutf8":
        head = json.dumps({"jsonrpc": "2.0", "id": request_id}).encode()[:-1]
        write(head + b',"result":{"content":[{"type":"text","text":"bad \xff\xc3 bytes"}]}}\n')
    elif name == "drip":
        line = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": text("dripped")})
        for byte in (line + "\n").encode():
            write(bytes([byte]))
    elif name == "freeze":
        os.kill(os.getpid(), signal.SIGSTOP)
        result(request_id, text("thawed"))
    elif name in ("flood", "listflood"):
        count = int(str(arguments.get("count", 10_000)))
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        chunk: list[bytes] = []
        for i in range(count):
            if name == "listflood":
                note: dict[str, object] = {
                    "jsonrpc": "2.0",
                    "method": "notifications/tools/list_changed",
                }
                chunk.append(json.dumps(note).encode() + b"\n")
                continue
            log = {
                "jsonrpc": "2.0",
                "method": "notifications/message",
                "params": {"level": "info", "data": f"flood {i} " + "x" * 200},
            }
            chunk.append(json.dumps(log).encode() + b"\n")
            if token is not None:
                progress = {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {"progressToken": token, "progress": i, "total": count},
                }
                chunk.append(json.dumps(progress).encode() + b"\n")
            if len(chunk) >= 200:
                write(b"".join(chunk))
                chunk = []
        write(b"".join(chunk))
        result(request_id, text(f"flooded {count}"))
    elif name == "cancelled":
        result(request_id, text(json.dumps(cancelled)))
    elif name == "pid":
        result(request_id, text(str(os.getpid())))
    else:
        send(
            {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {"code": -32602, "message": f"Unknown tool: {name}"},
            }
        )


def handle(message: dict[str, object]) -> None:
    method = message.get("method")
    request_id = message.get("id")
    params = message.get("params") or {}
    if not isinstance(params, dict):
        params = {}
    if method == "notifications/cancelled":
        cancelled.append(params.get("requestId"))
        return
    if request_id is None or method is None:
        return
    if method == "initialize":
        if MODE == "hang-init":
            return
        if MODE == "crash-init":
            os._exit(7)
        if MODE == "deep-init":
            write(deep_line(request_id))
            return
        result(
            request_id,
            {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {"listChanged": True}, "logging": {}},
                "serverInfo": {"name": f"hostile-{MODE}", "version": "1.0"},
            },
        )
    elif method == "ping":
        result(request_id, {})
    elif method == "tools/list":
        result(request_id, {"tools": [tool(name) for name in TOOLS]})
    elif method == "tools/call":
        arguments = params.get("arguments") or {}
        call(
            request_id,
            params.get("name"),
            arguments if isinstance(arguments, dict) else {},
            params.get("_meta"),
        )
    else:
        send(
            {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {"code": -32601, "message": f"Method not found: {method}"},
            }
        )


def main() -> None:
    sys.stderr.write(f"hostile server ({MODE}) ready, pid {os.getpid()}\n")
    sys.stderr.flush()
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            # Calls run in threads so that a hanging one does not block the others.
            threading.Thread(target=handle, args=(message,), daemon=True).start()


if __name__ == "__main__":
    main()
