"""``tools/list`` and discovery search over 5,000 aggregated tools.

Theory of operation: 20 copies of ``backend.py`` serve 250 tools each (``echo`` and 249
synthetic tools with realistic names, descriptions and parameters), 5,000 in all.

* In process: a real :class:`funnel_proxy.Funnel` connects to the 20 backends, and an
  :class:`funnel_proxy.McpServerSession` (the dispatcher that the stdio server and the
  HTTP endpoint share) answers ``tools/list`` requests; each answer is encoded to the
  bytes that would go on the wire. This is funnel's own cost, without any pipe.
* Over stdio, side by side, with the bare driver: a client's ``tools/list`` (decoding
  included) of one backend that serves all 5,000 tools itself (direct), and of
  ``funnel-server --stdio`` over the 20 backends. (FastMCP's proxy takes seconds per
  listing over 20 backends and is left out of this one.)
* Search: a :class:`funnel_proxy.SearchIndex` built from the funnel's surface the way the
  core tools build it; the build once, then ``search`` for a set of realistic queries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio
from _common import (
    Command,
    Section,
    Workspace,
    backend_command,
    funnel_command,
    quantile,
)
from _driver import StdioPeer
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


async def in_process(ws: Workspace, plan: Plan) -> tuple[list[list[str]], dict[str, float]]:
    """``tools/list`` through the dispatcher, and search: table rows, and the figures."""
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
        rows.append(
            [
                f"tools/list via McpServerSession ({tools} tools, {size / 1e6:.2f} MB)",
                f"{quantile(timings, 0.5) * 1e3:.2f}",
                f"{quantile(timings, 0.95) * 1e3:.2f}",
                f"{quantile(timings, 0.99) * 1e3:.2f}",
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
    rows.append(
        [
            f"SearchIndex build ({len(index)} tools, once per surface change)",
            f"{quantile(builds, 0.5) * 1e3:.2f}",
            "-",
            "-",
        ]
    )
    searches: list[float] = []
    for _ in range(plan.search_repeats):
        for query in QUERIES:
            start = time.perf_counter()
            index.search(query, 10)
            searches.append(time.perf_counter() - start)
    rows.append(
        [
            f"SearchIndex.search, {len(QUERIES)} queries, top 10",
            f"{quantile(searches, 0.5) * 1e3:.3f}",
            f"{quantile(searches, 0.95) * 1e3:.3f}",
            f"{quantile(searches, 0.99) * 1e3:.3f}",
        ]
    )
    figures = {
        "tools": tools,
        "bytes": size,
        "tools_list_ms": quantile(timings, 0.5) * 1e3,
        "search_p95_ms": quantile(searches, 0.95) * 1e3,
        "index_build_ms": quantile(builds, 0.5) * 1e3,
    }
    return rows, figures


def over_stdio(ws: Workspace, plan: Plan) -> list[list[str]]:
    """A client's ``tools/list`` over stdio: one 5,000-tool backend, and funnel over 20."""
    targets: list[tuple[str, Command]] = [
        (
            "direct: one backend serving 5,000 tools",
            backend_command("--tools", str(SERVERS * TOOLS_PER_SERVER - 1)),
        ),
        ("funnel-server --stdio over 20 backends", funnel_command(ws, _servers())),
    ]
    timings: dict[str, list[float]] = {label: [] for label, _ in targets}
    counts: dict[str, int] = {}
    peers: list[tuple[str, StdioPeer]] = []
    try:
        for label, command in targets:
            peer = command.peer(label.split(":")[0], ws)
            peers.append((label, peer))
            peer.start()
            peer.handshake(timeout=120)
            deadline = time.monotonic() + 120
            # funnel answers before all 20 backends are in: wait until every tool is.
            while (count := len(peer.list_tools(timeout=120))) < SERVERS * TOOLS_PER_SERVER:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            counts[label] = count
        for _ in range(plan.stdio_repeats):
            for label, peer in peers:
                start = time.perf_counter()
                peer.list_tools(timeout=120)
                timings[label].append(time.perf_counter() - start)
    finally:
        for _, peer in peers:
            peer.close()
    base = quantile(timings[targets[0][0]], 0.5)
    rows = []
    for label, _ in targets:
        values = timings[label]
        rows.append(
            [
                f"{label} ({counts[label]} tools)",
                f"{quantile(values, 0.5) * 1e3:.1f}",
                f"{quantile(values, 0.99) * 1e3:.1f}",
                f"{quantile(values, 0.5) / base:.2f}x" if base else "-",
            ]
        )
    return rows


async def measure(ws: Workspace, plan: Plan) -> list[Section]:
    """Run both parts and render their tables."""
    rows, figures = await in_process(ws, plan)
    stdio_rows = await anyio.to_thread.run_sync(over_stdio, ws, plan)
    return [
        Section(
            f"tools/list and discovery search over {SERVERS} x {TOOLS_PER_SERVER} tools, "
            "in process (no pipe, no client)",
            ["what", "median ms", "p95 ms", "p99 ms"],
            rows,
            data=figures,
        ),
        Section(
            "tools/list as a client sees it over stdio (bare driver, decoding included)",
            ["target", "median ms", "p99 ms", "ratio/direct"],
            stdio_rows,
        ),
    ]
