"""Start-up with 20 slow backends: it should cost the slowest backend, not the sum.

Theory of operation: each backend is ``backend.py --delay 0.3`` (it sleeps 300 ms before
it reads anything, like a server that loads a model or a big config). A measurement is
the wall time from starting the proxy process to the first successful ``tools/list``
answer on a fresh client session (``initialize`` included). Configurations are measured
in interleaved rounds: a backend alone (direct), funnel with 1 and with 20 such backends,
and FastMCP's proxy with 1 and with 20. funnel connects its backends concurrently, so
20 should cost about what 1 does (plus 19 more Python interpreters starting on two
cores); a proxy that connects them one after another would pay 20 x 300 ms.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import anyio
from _common import (
    FASTMCP_VERSION,
    Command,
    Summary,
    Workspace,
    backend_command,
    fastmcp_command,
    funnel_command,
    session,
    table,
)

DELAY = 0.3
MANY = 20


@dataclass(frozen=True, slots=True)
class Plan:
    """How many rounds."""

    rounds: int


async def _time_to_first_list(command: Command, name: str) -> tuple[float, int]:
    start = time.perf_counter()
    with anyio.fail_after(120):
        async with command.transport(name) as transport, session(transport, timeout=120) as client:
            tools = await client.list_tools()
            elapsed = time.perf_counter() - start
    return elapsed, len(tools)


async def measure(ws: Workspace, plan: Plan, fastmcp: str | None) -> str:
    """Run the rounds and render the table."""
    slow = backend_command("--delay", str(DELAY))
    one = {"slow": slow}
    many = {f"slow{i:02d}": slow for i in range(MANY)}
    configs: list[tuple[str, Command]] = [
        ("direct: 1 backend alone", slow),
        ("funnel, 1 backend", funnel_command(ws, one)),
        (f"funnel, {MANY} backends", funnel_command(ws, many)),
    ]
    if fastmcp is not None:
        configs += [
            (f"fastmcp {FASTMCP_VERSION}, 1 backend", fastmcp_command(ws, fastmcp, one)),
            (f"fastmcp {FASTMCP_VERSION}, {MANY} backends", fastmcp_command(ws, fastmcp, many)),
        ]
    times: dict[str, list[float]] = {label: [] for label, _ in configs}
    tools: dict[str, int] = {}
    failures: dict[str, str] = {}
    rng = random.Random(11)
    order = list(configs)
    for _ in range(plan.rounds):
        rng.shuffle(order)
        for label, command in order:
            if label in failures:
                continue
            try:
                elapsed, count = await _time_to_first_list(command, label.split(",")[0])
            except Exception as exc:  # a peer that cannot start is reported, not fatal
                failures[label] = f"{type(exc).__name__}: {exc}"[:60]
                continue
            times[label].append(elapsed)
            tools[label] = count
    medians = {label: Summary.of(values).median for label, values in times.items()}
    rows = []
    for label, _ in configs:
        if label in failures:
            rows.append([label, "failed", "-", "-", failures[label]])
            continue
        base_label = label.replace(f"{MANY} backends", "1 backend")
        rows.append(
            [
                label,
                f"{medians[label] * 1e3:.0f}",
                f"{min(times[label]) * 1e3:.0f}",
                f"{medians[label] / medians[base_label]:.2f}x" if base_label != label else "-",
                f"{tools[label]} tools",
            ]
        )
    return "\n\n".join(
        [
            f"Start-up: process start to the first tools/list answer; each backend sleeps "
            f"{DELAY * 1e3:.0f} ms before serving ({plan.rounds} rounds, interleaved)",
            table(["configuration", "median ms", "min ms", f"{MANY} vs 1", "listed"], rows),
        ]
    )
