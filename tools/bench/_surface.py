"""``tools/list`` and discovery search over 5,000 aggregated tools.

Theory of operation: 20 copies of ``backend.py`` serve 250 tools each (``echo`` and 249
synthetic tools with realistic names, descriptions and parameters), 5,000 in all.

* In process: a real :class:`funnel_proxy.Funnel` connects to the 20 backends, and an
  :class:`funnel_proxy.McpServerSession` (the dispatcher that the stdio server and the
  HTTP endpoint share) answers ``tools/list`` requests; each answer is encoded to the
  bytes that would go on the wire. This is funnel's own cost, without any pipe.
* Over stdio, side by side: a client's ``tools/list`` (decoding included) of one backend
  that serves all 5,000 tools itself (direct), of ``funnel-server --stdio`` over the 20
  backends, and of the FastMCP proxy over the same 20.
* Search: a :class:`funnel_proxy.SearchIndex` built from the funnel's surface the way the
  core tools build it; the build once, then ``search`` for a set of realistic queries.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import anyio
from _common import (
    FASTMCP_VERSION,
    Command,
    Summary,
    Workspace,
    backend_command,
    fastmcp_command,
    funnel_command,
    ratio,
    session,
    table,
)
from backend import server_name

from funnel_proxy import (
    Funnel,
    McpServerSession,
    SearchEntry,
    SearchIndex,
    Surface,
    parse_config,
)
from funnel_transports import Message, Request, encode_message

SERVERS = 20
TOOLS_PER_SERVER = 250  # echo + 249 synthetic
QUERIES = (
    "create issue",
    "list pull requests",
    "delete webhook",
    "search customer invoice",
    "export spreadsheet row",
    "sync calendar event",
    "archive email message",
    "get deployment status",
    "update milestone title",
    "jira ticket",
    "github repository",
    "alerts since",
    "createPullRequest",
    "dash",
    "folder owner limit",
    "release v2",
)


@dataclass(frozen=True, slots=True)
class Plan:
    """How many repetitions."""

    list_repeats: int
    stdio_repeats: int
    search_repeats: int


def _servers(tools: int = TOOLS_PER_SERVER - 1) -> dict[str, Command]:
    # Named after the service each one pretends to be (github, jira, …), as users name them.
    return {
        server_name(i): backend_command("--tools", str(tools), "--server-index", str(i))
        for i in range(SERVERS)
    }


def _parameters(definition: Any) -> tuple[str, ...]:
    schema = definition.get("inputSchema") if isinstance(definition, dict) else None
    properties = schema.get("properties") if isinstance(schema, dict) else None
    return tuple(properties) if isinstance(properties, dict) else ()


def search_entries(surface: Surface) -> list[SearchEntry]:
    """The surface's tools as the discovery index sees them."""
    return [
        SearchEntry(
            name=entry.name,
            server=entry.server,
            description=str(entry.definition.get("description") or ""),
            parameters=_parameters(dict(entry.definition)),
        )
        for entry in surface.tools
    ]


async def in_process(ws: Workspace, plan: Plan) -> tuple[list[list[str]], int, int]:
    """``tools/list`` through the dispatcher, and search: table rows, tool count, bytes."""
    servers = _servers()
    config = parse_config(
        {
            "servers": {
                name: {"command": cmd.argv[0], "args": list(cmd.argv[1:])}
                for name, cmd in servers.items()
            },
            "defaultPassthroughEnv": ["PATH", "HOME"],
        },
        environ={},
        base_dir=ws.path,
    )
    rows: list[list[str]] = []
    async with Funnel(config, base_dir=ws.path, ready_timeout=60) as funnel:
        surface = funnel.surface
        tools = sum(1 for entry in surface.tools if entry.exposed)
        sent: list[bytes] = []

        async def send(message: Message) -> None:
            sent.append(encode_message(message) + b"\n")

        server = McpServerSession(funnel, send, version="bench")
        await server.handle(Request(id=0, method="tools/list"))
        size = len(sent[-1])
        timings: list[float] = []
        for i in range(plan.list_repeats):
            start = time.perf_counter()
            await server.handle(Request(id=i + 1, method="tools/list"))
            timings.append(time.perf_counter() - start)
        listing = Summary.of(timings)
        rows.append(
            [
                f"tools/list via McpServerSession ({tools} tools, {size / 1e6:.2f} MB)",
                f"{listing.median * 1e3:.2f}",
                f"{listing.p99 * 1e3:.2f}",
            ]
        )
        entries = search_entries(surface)
    builds: list[float] = []
    index: SearchIndex | None = None
    for _ in range(3):
        start = time.perf_counter()
        index = SearchIndex(entries)
        builds.append(time.perf_counter() - start)
    assert index is not None
    build = Summary.of(builds)
    rows.append(
        [
            f"SearchIndex build ({len(index)} tools, once per surface change)",
            f"{build.median * 1e3:.2f}",
            "-",
        ]
    )
    searches: list[float] = []
    for _ in range(plan.search_repeats):
        for query in QUERIES:
            start = time.perf_counter()
            index.search(query, 10)
            searches.append(time.perf_counter() - start)
    found = Summary.of(searches)
    rows.append(
        [
            f"SearchIndex.search, {len(QUERIES)} queries, top 10",
            f"{found.median * 1e3:.3f}",
            f"{found.p99 * 1e3:.3f}",
        ]
    )
    return rows, tools, size


async def over_stdio(ws: Workspace, plan: Plan, fastmcp: str | None) -> list[list[str]]:
    """A client's ``tools/list``: direct 5,000-tool backend, funnel and FastMCP over 20."""
    servers = _servers()
    targets: list[tuple[str, Command]] = [
        (
            "direct: one backend serving 5,000 tools",
            backend_command("--tools", str(SERVERS * TOOLS_PER_SERVER - 1)),
        ),
        ("funnel-server --stdio over 20 backends", funnel_command(ws, servers)),
    ]
    if fastmcp is not None:
        targets.append(
            (
                f"fastmcp {FASTMCP_VERSION} proxy over 20 backends",
                fastmcp_command(ws, fastmcp, servers),
            )
        )
    timings: dict[str, list[float]] = {label: [] for label, _ in targets}
    counts: dict[str, int] = {}
    failures: dict[str, str] = {}
    async with AsyncExitStack() as stack:
        clients = []
        for label, command in targets:
            transport = await stack.enter_async_context(command.transport(label.split(":")[0]))
            client = await stack.enter_async_context(session(transport, timeout=120))
            clients.append((label, client))
        for label, client in clients:  # warm-up, and the count each one lists
            try:
                with anyio.fail_after(120):
                    counts[label] = len(await client.list_tools())
            except Exception as exc:  # a peer that cannot list is reported, not fatal
                failures[label] = type(exc).__name__
        for _ in range(plan.stdio_repeats):
            for label, client in clients:
                if label in failures:
                    continue
                start = time.perf_counter()
                await client.list_tools()
                timings[label].append(time.perf_counter() - start)
    base = Summary.of(timings[targets[0][0]])
    rows = []
    for label, _ in targets:
        if label in failures:
            rows.append([label, "failed", failures[label], "-"])
            continue
        s = Summary.of(timings[label])
        rows.append(
            [
                f"{label} ({counts[label]} tools)",
                f"{s.median * 1e3:.1f}",
                f"{s.p99 * 1e3:.1f}",
                ratio(s.median, base.median),
            ]
        )
    return rows


async def measure(ws: Workspace, plan: Plan, fastmcp: str | None) -> str:
    """Run both parts and render their tables."""
    rows, _, _ = await in_process(ws, plan)
    stdio_rows = await over_stdio(ws, plan, fastmcp)
    return "\n\n".join(
        [
            f"tools/list and discovery search over {SERVERS} x {TOOLS_PER_SERVER} tools, in process",
            table(["what", "median ms", "p99 ms"], rows),
            "tools/list as a client sees it over stdio (decoding included), side by side",
            table(["target", "median ms", "p99 ms", "ratio/direct"], stdio_rows),
        ]
    )
