"""A trivial MCP backend over stdio for the benchmarks (stdlib only, handshake era).

Usage: ``python backend.py [--tools N] [--server-index I] [--delay SECONDS] [--exit-after N]``

- ``echo`` answers ``{"content": [{"type": "text", "text": "Echo: <message>"}]}``.
- ``--tools N`` adds N synthetic tools with realistic names, descriptions and
  parameters (``create_issue``, ``list_repository`` …), so a funnel over 20 of these
  aggregates 5,000 tools worth searching. ``--server-index`` varies the vocabulary.
- ``--delay`` sleeps before reading anything: a backend that is slow to start.
- ``--exit-after N`` exits right after answering its N-th ``tools/call``: a backend that
  comes and goes.

It is as cheap as a stdio server can be in Python (one line in, one line out), so the
direct measurement is a floor and proxy overhead shows plainly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

_VERBS = (
    "create",
    "list",
    "get",
    "update",
    "delete",
    "search",
    "archive",
    "export",
    "import",
    "sync",
)
_NOUNS = (
    "issue",
    "repository",
    "pull_request",
    "branch",
    "commit",
    "comment",
    "label",
    "milestone",
    "release",
    "workflow",
    "deployment",
    "secret",
    "webhook",
    "project",
    "calendar_event",
    "email_message",
    "spreadsheet_row",
    "document",
    "folder",
    "invoice",
    "customer",
    "ticket",
    "dashboard",
    "metric",
    "alert",
)
_DOMAINS = (
    "GitHub",
    "GitLab",
    "Jira",
    "Linear",
    "Slack",
    "Google Drive",
    "Notion",
    "Stripe",
    "Salesforce",
    "Zendesk",
    "Datadog",
    "PagerDuty",
    "Sentry",
    "Confluence",
    "Asana",
    "Trello",
    "Dropbox",
    "Figma",
    "HubSpot",
    "Airtable",
)
_FIELDS = ("id", "title", "owner", "status", "limit", "query", "since", "tags")


def _synthetic_tools(count: int, server_index: int) -> list[dict[str, Any]]:
    domain = _DOMAINS[server_index % len(_DOMAINS)]
    tools: list[dict[str, Any]] = []
    for number in range(count):
        verb = _VERBS[number % len(_VERBS)]
        noun = _NOUNS[(number // len(_VERBS)) % len(_NOUNS)]
        round_ = number // (len(_VERBS) * len(_NOUNS))
        name = f"{verb}_{noun}" + (f"_v{round_ + 1}" if round_ else "")
        readable = noun.replace("_", " ")
        fields = [_FIELDS[(number + k) % len(_FIELDS)] for k in range(1 + number % 4)]
        tools.append(
            {
                "name": name,
                "description": (
                    f"{verb.capitalize()} a {readable} in {domain}. Returns the {readable} "
                    f"with its {', '.join(fields)} so the caller can act on it."
                ),
                "inputSchema": {
                    "type": "object",
                    "properties": {
                        f"{noun}_{field}": {"type": "string", "description": f"The {field}."}
                        for field in fields
                    },
                    "required": [f"{noun}_{fields[0]}"],
                },
            }
        )
    return tools


def server_name(index: int) -> str:
    """The name a config would give the server with ``--server-index index``."""
    return _DOMAINS[index % len(_DOMAINS)].lower().replace(" ", "")


_ECHO = {
    "name": "echo",
    "description": "Repeat a message back.",
    "inputSchema": {
        "type": "object",
        "properties": {"message": {"type": "string"}},
        "required": ["message"],
    },
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tools", type=int, default=0)
    parser.add_argument("--server-index", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--exit-after", type=int, default=0)
    args = parser.parse_args()
    if args.delay:
        time.sleep(args.delay)
    tools = [_ECHO, *_synthetic_tools(args.tools, args.server_index)]
    calls = 0
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        method = message.get("method")
        if "id" not in message or method is None:
            continue  # a notification or a response: nothing to answer
        result: dict[str, Any]
        if method == "initialize":
            result = {
                "protocolVersion": message.get("params", {}).get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "bench-backend", "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": tools}
        elif method == "tools/call":
            arguments = message.get("params", {}).get("arguments") or {}
            result = {"content": [{"type": "text", "text": f"Echo: {arguments.get('message')}"}]}
            calls += 1
        elif method == "ping":
            result = {}
        else:
            error = {"code": -32601, "message": f"Method not found: {method}"}
            out.write(json.dumps({"jsonrpc": "2.0", "id": message["id"], "error": error}) + "\n")
            out.flush()
            continue
        out.write(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}) + "\n")
        out.flush()
        if args.exit_after and calls >= args.exit_after:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
