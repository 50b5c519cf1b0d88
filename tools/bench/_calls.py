"""The headline: ``tools/call echo`` over stdio, direct, through two floor relays and proxies.

Theory of operation. Every target reaches the same tool, ``echo`` of the Node reference
``server-everything``, each through its own copy of it:

- **direct**: the driver talks to server-everything itself;
- **relay, copy**: ``relay_copy.py`` in between, copying bytes (the cost of a hop);
- **relay, msgspec**: ``relay_msgspec.py``, decoding every envelope, remapping ids,
  re-encoding: the realistic floor for a proxy written in Python;
- **funnel**: ``funnel-server --stdio`` over one stdio backend (``everything__echo``);
- **FastMCP**: its documented proxy (``fastmcp_proxy.py``) over the same.

All of them are opened first and warmed up, then measured in rounds; round ``r`` visits
the targets in an order rotated by ``r``, each visit making a serial block and then a
pipelined block (64 in flight). So every target sees the machine's noise in about equal
shares, and a ratio is taken *per round*, between blocks measured seconds apart; the
table shows its spread (min–max over rounds). The driver (``_driver.py``) checks every
answer; a target with a failed answer is reported as failed, not as fast.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from _common import (
    FASTMCP_VERSION,
    RELAY_COPY,
    RELAY_MSGSPEC,
    Command,
    Section,
    Workspace,
    cpu_seconds,
    fastmcp_command,
    funnel_command,
    node_everything_command,
    quantile,
    ratios,
    relay_command,
    rss_kib,
    spread,
)
from _driver import Checks, PeerError, StdioPeer

IN_FLIGHT = 64
DIRECT = "server-everything directly"
RELAY = "relay, msgspec envelope + id remap"


@dataclass(frozen=True, slots=True)
class Plan:
    """How many calls, in how many rounds."""

    rounds: int
    serial: int  # calls per target per round, at least
    pipelined: int  # calls per target per round, at least (a multiple of this)
    warmup: int
    # A block also lasts at least this long: 250 calls of a 20 µs target take 5 ms, which
    # one scheduling hiccup on a shared machine would dominate.
    serial_seconds: float = 0.0
    pipelined_seconds: float = 0.0


@dataclass(slots=True)
class Target:
    """One way of reaching ``echo``, and what was measured through it."""

    label: str
    command: Command
    peer: StdioPeer | None = None
    p50: list[float] = field(default_factory=list)  # µs, per round
    latencies: list[float] = field(default_factory=list)  # µs, every serial call
    throughput: list[float] = field(default_factory=list)  # calls/s, per round
    driver_cpu: list[float] = field(default_factory=list)  # µs of driver CPU per call
    # The target process's own CPU (utime + stime), summed over every round's blocks: the
    # figure that load does not move, and that the latency and throughput ratios follow.
    serial_cpu: float = 0.0  # seconds
    serial_calls: int = 0
    pipelined_cpu: float = 0.0  # seconds
    pipelined_calls: int = 0
    checks: Checks = field(default_factory=Checks)
    rss_kib: int = 0
    failure: str = ""


def targets(ws: Workspace, fastmcp: str | None) -> list[Target]:
    """Direct, both relays, funnel and (when it can run) FastMCP, over server-everything."""
    everything = node_everything_command()
    if everything is None:
        return []
    found = [
        Target(DIRECT, everything),
        Target("relay, copies lines", relay_command(RELAY_COPY, everything)),
        Target(RELAY, relay_command(RELAY_MSGSPEC, everything)),
        Target("funnel-server --stdio", funnel_command(ws, {"everything": everything})),
    ]
    if fastmcp is not None:
        found.append(
            Target(
                f"FastMCP {FASTMCP_VERSION} proxy",
                fastmcp_command(ws, fastmcp, {"everything": everything}),
            )
        )
    return found


def _visit(target: Target, plan: Plan) -> None:
    peer = target.peer
    assert peer is not None
    latencies: list[float] = []
    start = time.perf_counter()
    used = cpu_seconds(peer.pid)
    while True:
        latencies += [ns / 1e3 for ns in peer.serial(plan.serial, target.checks)]
        if time.perf_counter() - start >= plan.serial_seconds:
            break
    target.serial_cpu += cpu_seconds(peer.pid) - used
    target.serial_calls += len(latencies)
    target.latencies += latencies
    target.p50.append(quantile(latencies, 0.5))
    cpu = time.thread_time()
    used = cpu_seconds(peer.pid)
    calls, wall = 0, 0.0
    while True:
        wall += peer.pipelined(plan.pipelined, target.checks, in_flight=IN_FLIGHT)
        calls += plan.pipelined
        if wall >= plan.pipelined_seconds:
            break
    target.pipelined_cpu += cpu_seconds(peer.pid) - used
    target.pipelined_calls += calls
    target.driver_cpu.append((time.thread_time() - cpu) / calls * 1e6)
    target.throughput.append(calls / wall)


def measure(ws: Workspace, found: list[Target], plan: Plan) -> None:
    """Open every target, warm it up, run the interleaved rounds, sample RSS at rest."""
    try:
        for target in found:
            target.peer = target.command.peer(target.label, ws)
            try:
                target.peer.open()
                warm = Checks()
                target.peer.serial(plan.warmup, warm)
                target.peer.pipelined(plan.warmup * 2, warm, in_flight=IN_FLIGHT)
                target.checks.merge(warm)
            except PeerError as exc:
                target.failure = str(exc)
        live = [t for t in found if not t.failure]
        for round_ in range(plan.rounds):
            shift = round_ % len(live)
            for target in live[shift:] + live[:shift]:
                if target.failure:
                    continue
                try:
                    _visit(target, plan)
                except PeerError as exc:
                    target.failure = str(exc)
        time.sleep(1.0)  # at rest: what each process keeps after the load
        for target in live:
            if target.peer is not None and target.peer.process is not None:
                target.rss_kib = rss_kib(target.peer.pid)
    finally:
        for target in found:
            if target.peer is not None:
                target.peer.close()


def _by_label(found: list[Target], label: str) -> Target | None:
    return next((t for t in found if t.label == label and not t.failure), None)


def _per_call(seconds: float, calls: int) -> float:
    return seconds / calls * 1e6 if calls else math.nan


def _cpu_ratio(value: float, base: Target | None) -> float:
    if base is None:
        return math.nan
    floor = _per_call(
        base.serial_cpu + base.pipelined_cpu, base.serial_calls + base.pipelined_calls
    )
    return value / floor if floor > 0 else math.nan


def report(found: list[Target], plan: Plan) -> Section:
    """The table: latency, throughput, their ratios per round, answers checked."""
    direct = _by_label(found, DIRECT)
    relay = _by_label(found, RELAY)
    rows: list[list[str]] = []
    data: dict[str, object] = {}
    for target in found:
        ok = not target.failure and target.checks.failed == 0
        nan = [math.nan] * len(target.p50)
        x_direct = ratios(target.p50, direct.p50) if direct and ok else nan
        x_relay = ratios(target.p50, relay.p50) if relay and ok else nan
        t_direct = ratios(target.throughput, direct.throughput) if direct and ok else nan
        serial_cpu = _per_call(target.serial_cpu, target.serial_calls)
        pipelined_cpu = _per_call(target.pipelined_cpu, target.pipelined_calls)
        all_cpu = _per_call(
            target.serial_cpu + target.pipelined_cpu, target.serial_calls + target.pipelined_calls
        )
        cpu_x_relay = _cpu_ratio(all_cpu, relay) if ok else math.nan
        checked = f"{target.checks.checked:,}"
        if not ok:
            checked += f" FAILED: {target.failure or target.checks.first_failure}"
        rows.append(
            [
                target.label,
                spread(target.p50),
                f"{quantile(target.latencies, 0.9):,.0f}",
                f"{quantile(target.latencies, 0.99):,.0f}",
                spread(x_direct, "{:.2f}"),
                spread(x_relay, "{:.2f}"),
                spread(target.throughput),
                spread(t_direct, "{:.2f}"),
                f"{serial_cpu:.1f}",
                f"{pipelined_cpu:.1f}",
                f"{cpu_x_relay:.2f}",
                spread(target.driver_cpu, "{:.0f}"),
                f"{target.rss_kib / 1024:.0f}" if target.rss_kib else "-",
                checked,
            ]
        )
        data[target.label] = {
            "p50_us": target.p50,
            "p90_us": quantile(target.latencies, 0.9),
            "p99_us": quantile(target.latencies, 0.99),
            "throughput": target.throughput,
            "x_direct": x_direct,
            "x_relay": x_relay,
            "throughput_x_direct": t_direct,
            "driver_cpu_us": target.driver_cpu,
            "cpu_us_serial": serial_cpu,
            "cpu_us_pipelined": pipelined_cpu,
            "cpu_us": all_cpu,
            "cpu_x_relay": cpu_x_relay,
            "rss_kib": target.rss_kib,
            "checked": target.checks.checked,
            "failed": target.checks.failed,
            "failure": target.failure or target.checks.first_failure,
        }
    return Section(
        title=(
            f"stdio: tools/call echo on server-everything, bare driver; {plan.rounds} rounds "
            f"interleaved, each at least {plan.serial} serial calls ({plan.serial_seconds:g} s) "
            f"+ {plan.pipelined} pipelined ({plan.pipelined_seconds:g} s) per target; ranges "
            "are min–max over rounds"
        ),
        headers=[
            "target",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "x direct",
            "x msgspec relay",
            f"calls/s @{IN_FLIGHT}",
            "x direct",
            "CPU µs/call serial",
            "CPU µs/call @64",
            "CPU x relay",
            "driver CPU µs/call",
            "RSS MiB",
            "answers checked",
        ],
        rows=rows,
        notes=[
            "",
            "p50 per round (range); p90 and p99 over all serial calls of all rounds. CPU: what "
            "the process the driver talks to spent (utime + stime from /proc, its backend not "
            "included) per serial and per pipelined call, over all rounds; x relay compares "
            "both kinds together with the msgspec relay's. Load moves the times, hardly the CPU. "
            "Driver CPU: what the driver itself spent per pipelined call. RSS at rest after the load (the "
            "process the driver talks to, not its backend).",
        ],
        data=data,
    )
