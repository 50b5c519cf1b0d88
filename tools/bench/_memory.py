"""Memory as backends come and go: RSS of a funnel process across reconnect cycles.

Theory of operation: ``funnel-server --stdio`` fronts one ``backend.py --exit-after 5``,
which exits right after answering its fifth ``tools/call``. funnel sees the exit, drops
the backend's tools, reconnects after a 10 ms backoff (a new process, handshake, lists)
and publishes the tools again. The client calls ``echo`` until a call fails, then retries
(a bounded poll) until one succeeds again: that is one cycle. The RSS of the funnel
process is read from ``/proc`` after it connected, after a warm-up of cycles (imports and
caches that are paid once), and at the end. Flat memory means the growth from the
warm-up sample to the end is within allocator noise, not proportional to the cycles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
from _common import Workspace, backend_command, echo_tool, funnel_command, rss_kib, session, table

from funnel_transports import ClientSession, TransportError

CALLS_PER_LIFE = 5


@dataclass(frozen=True, slots=True)
class Plan:
    """How many reconnect cycles, and after how many the warm-up sample is taken."""

    cycles: int
    warmup: int


async def _cycle(client: ClientSession, tool: str) -> None:
    """Call until the backend's life ends, then until it is back (bounded)."""
    with anyio.fail_after(30):
        for _ in range(CALLS_PER_LIFE * 4):
            try:
                await client.call_tool(tool, {"message": "hi"})
            except TransportError:
                break
        while True:
            try:
                await client.call_tool(tool, {"message": "hi"})
            except TransportError:
                await anyio.sleep(0.005)
                continue
            return


async def measure(ws: Workspace, plan: Plan) -> str:
    """Run the cycles and render the table."""
    command = funnel_command(
        ws,
        {"churn": backend_command("--exit-after", str(CALLS_PER_LIFE))},
        autoReconnect={"initialDelayMs": 10, "maxDelayMs": 10, "jitter": 0, "maxAttempts": 100},
    )
    samples: list[tuple[str, int, float]] = []
    async with command.transport("funnel") as transport, session(transport) as client:
        pid = transport.pid
        assert pid is not None
        tool = echo_tool(await client.list_tools())
        start = time.perf_counter()
        samples.append(("connected, 0 cycles", rss_kib(pid), 0.0))
        for done in range(1, plan.cycles + 1):
            await _cycle(client, tool)
            if done in (plan.warmup, plan.cycles) or done == plan.cycles // 2:
                samples.append((f"after {done} cycles", rss_kib(pid), time.perf_counter() - start))
    warm = next(kib for label, kib, _ in samples if label == f"after {plan.warmup} cycles")
    rows = [
        [label, f"{kib / 1024:.1f}", f"{(kib - warm) / 1024:+.1f}", f"{elapsed:.1f}"]
        for label, kib, elapsed in samples
    ]
    per_100 = (samples[-1][1] - warm) / max(1, plan.cycles - plan.warmup) * 100
    return "\n\n".join(
        [
            f"Memory: RSS of funnel-server while its backend exits every {CALLS_PER_LIFE} calls "
            "and is reconnected",
            table(["when", "RSS MiB", "vs warm-up MiB", "seconds"], rows),
            f"growth after warm-up: {per_100:+.0f} KiB per 100 reconnect cycles",
        ]
    )
