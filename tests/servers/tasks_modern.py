"""A 2026-07-28 MCP server over stdio that answers with tasks (the tasks extension).

Test peer only, stdlib only. It offers one tool, ``job``: to a client whose per-request
capabilities include the ``io.modelcontextprotocol/tasks`` extension it answers with a
task (``resultType: "task"``, ids ``1``, ``2``, … as every such server would choose:
two copies collide), which ``tasks/get`` reports completed with the tool's result;
``tasks/cancel`` marks it cancelled. Without the extension it answers at once.
"""

from __future__ import annotations

import json
import sys
from typing import Any

EXTENSION = "io.modelcontextprotocol/tasks"
NAME = sys.argv[1] if len(sys.argv) > 1 else "tasks-peer"
tasks: dict[str, dict[str, Any]] = {}


def task_state(task_id: str) -> dict[str, Any]:
    task = tasks[task_id]
    state: dict[str, Any] = {
        "taskId": task_id,
        "status": task["status"],
        "createdAt": "2026-12-01T00:00:00Z",
        "lastUpdatedAt": "2026-12-01T00:00:00Z",
        "ttlMs": 60_000,
        "pollIntervalMs": 100,
    }
    if task["status"] == "completed":
        state["result"] = {"content": [{"type": "text", "text": f"{NAME} did {task['what']}"}]}
    return state


def answer(method: str, params: dict[str, Any]) -> dict[str, Any]:
    if method == "server/discover":
        return {
            "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {}, "extensions": {EXTENSION: {}}},
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": NAME, "version": "1"}},
        }
    if method == "tools/list":
        schema = {"type": "object", "properties": {"what": {"type": "string"}}}
        return {"tools": [{"name": "job", "inputSchema": schema}], "ttlMs": 0}
    if method == "tools/call":
        what = (params.get("arguments") or {}).get("what", "nothing")
        capabilities = (params.get("_meta") or {}).get(
            "io.modelcontextprotocol/clientCapabilities", {}
        )
        if EXTENSION not in (capabilities.get("extensions") or {}):
            return {"content": [{"type": "text", "text": f"{NAME} did {what} at once"}]}
        task_id = str(len(tasks) + 1)
        tasks[task_id] = {"status": "completed", "what": what}
        return {**task_state(task_id), "resultType": "task"}
    if method in ("tasks/get", "tasks/cancel"):
        wanted = params.get("taskId")
        if not isinstance(wanted, str) or wanted not in tasks:
            raise LookupError(f"unknown task {wanted!r}")
        if method == "tasks/cancel":
            tasks[wanted]["status"] = "cancelled"
            return {}
        return task_state(wanted)
    raise NotImplementedError(method)


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        if "id" not in message or "method" not in message:
            continue
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        try:
            result = answer(message["method"], message.get("params") or {})
            reply["result"] = {"resultType": "complete", **result}
        except LookupError as exc:
            reply["error"] = {"code": -32602, "message": str(exc)}
        except NotImplementedError as exc:
            reply["error"] = {"code": -32601, "message": f"Method not found: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
