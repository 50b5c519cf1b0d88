"""The headline: a trivial ``tools/call`` direct, through funnel, through each peer proxy.

Theory of operation: every target (a backend alone, or a proxy in front of its own copy
of the same backend) is started once and kept open for the whole section, each behind its
own funnel ``ClientSession`` (handshake era), all in this one process. After a warm-up,
the calls are made in rounds; each round visits every target in a fresh random order and
makes one block of calls on it. So every target sees the same machine noise (another
engineer's test suite, a CPU frequency change) in about equal shares, and the ratios
proxy/direct are taken from numbers measured side by side.

Sequential: one call at a time; the latency of each is recorded.
Pipelined: 64 calls in flight on the one connection (64 workers share a counter); the
latency of each call and the wall time of each block (throughput) are recorded.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import anyio
from _common import (
    FASTMCP_VERSION,
    Command,
    Summary,
    Workspace,
    backend_command,
    echo_tool,
    fastmcp_command,
    funnel_command,
    node_everything_command,
    ratio,
    session,
    table,
)

from funnel_transports import ClientSession, TransportError

IN_FLIGHT = 64
_ARGS = {"message": "hi"}


@dataclass(slots=True)
class Target:
    """One way of reaching the ``echo`` tool."""

    backend: str
    via: str
    command: Command
    client: ClientSession | None = None
    tool: str = ""
    sequential: list[float] = field(default_factory=list)
    pipelined: list[float] = field(default_factory=list)
    pipelined_wall: float = 0.0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    """How many calls, in how many rounds."""

    warmup: int
    sequential: int
    pipelined: int
    rounds: int


def targets(ws: Workspace, fastmcp: str | None) -> list[Target]:
    """Direct, funnel and FastMCP over each available backend."""
    backends: list[tuple[str, Command]] = []
    everything = node_everything_command()
    if everything is not None:
        backends.append(("node server-everything", everything))
    backends.append(("python backend.py", backend_command()))
    found: list[Target] = []
    for label, backend in backends:
        found.append(Target(label, "direct", backend))
        found.append(Target(label, "funnel", funnel_command(ws, {"bench": backend})))
        if fastmcp is not None:
            found.append(
                Target(
                    label,
                    f"fastmcp {FASTMCP_VERSION}",
                    fastmcp_command(ws, fastmcp, {"bench": backend}),
                )
            )
    return found


async def _sequential(target: Target, count: int) -> None:
    client = target.client
    assert client is not None
    for _ in range(count):
        start = time.perf_counter()
        try:
            await client.call_tool(target.tool, _ARGS)
        except TransportError:
            target.errors += 1
            continue
        target.sequential.append(time.perf_counter() - start)


async def _pipelined(target: Target, count: int) -> None:
    client = target.client
    assert client is not None
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            try:
                await client.call_tool(target.tool, _ARGS)
            except TransportError:
                target.errors += 1
                continue
            target.pipelined.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(IN_FLIGHT):
            tg.start_soon(worker)
    target.pipelined_wall += time.perf_counter() - start


async def measure(found: list[Target], plan: Plan, *, seed: int = 7) -> None:
    """Open every target, warm it up, then measure both modes in interleaved rounds."""
    rng = random.Random(seed)
    async with AsyncExitStack() as stack:
        for target in found:
            transport = await stack.enter_async_context(
                target.command.transport(f"{target.via}/{target.backend}")
            )
            # The session's own task group must outlive any scope opened here: it is
            # bounded by its connect timeout, the listing by the request timeout.
            target.client = await stack.enter_async_context(session(transport))
            target.tool = echo_tool(await target.client.list_tools())
        for target in found:
            await _sequential(target, plan.warmup)
            target.sequential.clear()
        order = list(found)
        for _ in range(plan.rounds):
            rng.shuffle(order)
            for target in order:
                await _sequential(target, plan.sequential // plan.rounds)
        for _ in range(plan.rounds):
            rng.shuffle(order)
            for target in order:
                await _pipelined(target, plan.pipelined // plan.rounds)


def report(found: list[Target]) -> tuple[str, dict[str, str]]:
    """The two tables, and the headline ratios by ``backend/via`` for the summary."""
    direct: dict[str, Target] = {t.backend: t for t in found if t.via == "direct"}
    seq_rows: list[list[str]] = []
    pipe_rows: list[list[str]] = []
    headline: dict[str, str] = {}
    for target in found:
        base = direct[target.backend]
        seq, base_seq = Summary.of(target.sequential), Summary.of(base.sequential)
        pipe, base_pipe = Summary.of(target.pipelined), Summary.of(base.pipelined)
        per_call = target.pipelined_wall / pipe.count if pipe.count else float("nan")
        base_per_call = base.pipelined_wall / base_pipe.count if base_pipe.count else float("nan")
        seq_ratio = ratio(seq.median, base_seq.median)
        headline[f"{target.backend}/{target.via}"] = seq_ratio
        seq_rows.append(
            [
                f"{target.backend}  {target.via}",
                f"{seq.count}",
                f"{seq.median * 1e6:.0f}",
                f"{seq.p99 * 1e6:.0f}",
                seq_ratio,
                f"{target.errors}",
            ]
        )
        pipe_rows.append(
            [
                f"{target.backend}  {target.via}",
                f"{pipe.count}",
                f"{pipe.median * 1e3:.2f}",
                f"{pipe.p99 * 1e3:.2f}",
                f"{1 / per_call:.0f}" if not math.isnan(per_call) else "-",
                ratio(pipe.median, base_pipe.median),
                ratio(per_call, base_per_call),
            ]
        )
    text = "\n\n".join(
        [
            "Sequential tools/call of `echo` over stdio, one at a time (µs per call)",
            table(
                ["backend  via", "calls", "median µs", "p99 µs", "ratio/direct", "errors"],
                seq_rows,
            ),
            f"Pipelined: {IN_FLIGHT} calls in flight on one connection",
            table(
                [
                    "backend  via",
                    "calls",
                    "median ms",
                    "p99 ms",
                    "calls/s",
                    "median ratio",
                    "time/call ratio",
                ],
                pipe_rows,
            ),
        ]
    )
    return text, headline
