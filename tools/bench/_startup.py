"""Start-up: how long until a client's first ``tools/list``, and what funnel keeps at rest.

Theory of operation. A measurement starts the process and, with the bare driver, does
the handshake and ``tools/list`` at once, repeating ``tools/list`` every 5 ms until the
backend's ``echo`` is in it; two times are taken from the start of the process: the
first answer, and the first answer that has the backend's tools (what a user waits for).
Configurations, measured in rounds whose order rotates:

- server-everything alone, and ``funnel-server --stdio`` in front of it: the target is
  funnel's first complete ``tools/list`` within the backend's own start time + 0.3 s;
  the difference is shown per round;
- ``backend.py --delay 0.3`` (a backend that takes 300 ms to start) alone, and funnel in
  front of 1 and of 20 of them: connecting concurrently, 20 should cost about what 1
  does, not 20 x 300 ms.

In the last round, funnel in front of server-everything stays open 2 s after its first
``tools/list``, idle, and its RSS is read from ``/proc`` (the funnel process alone, not
its backend).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

from _common import (
    Command,
    Section,
    Workspace,
    backend_command,
    funnel_command,
    node_everything_command,
    rss_kib,
    spread,
)
from _driver import PeerError, find_echo

DELAY = 0.3
MANY = 20
IDLE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How many rounds."""

    rounds: int


@dataclass(slots=True)
class Config:
    """One configuration to start, and its times (seconds, per round)."""

    label: str
    command: Command
    base: str | None = None  # the label of the backend alone, for the difference
    measure_rss: bool = False
    first: list[float] = field(default_factory=list)
    complete: list[float] = field(default_factory=list)
    tools: int = 0
    rss_kib: int = 0
    failure: str = ""


def _start_once(ws: Workspace, config: Config, *, rss: bool) -> None:
    peer = config.command.peer(config.label, ws)
    deadline = time.monotonic() + 120
    try:
        start = time.perf_counter()
        peer.start()
        peer.handshake(timeout=120)
        first = None
        while True:
            tools = peer.list_tools(timeout=120)
            now = time.perf_counter() - start
            first = now if first is None else first
            try:
                find_echo(tools)
                break
            except PeerError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        config.first.append(first)
        config.complete.append(now)
        config.tools = len(tools)
        if rss:
            time.sleep(IDLE_SECONDS)
            config.rss_kib = rss_kib(peer.pid)
    finally:
        peer.close()


def configs(ws: Workspace) -> list[Config]:
    """The configurations this machine can run."""
    found: list[Config] = []
    everything = node_everything_command()
    if everything is not None:
        found += [
            Config("server-everything alone", everything),
            Config(
                "funnel-server --stdio, 1 server-everything",
                funnel_command(ws, {"everything": everything}),
                base="server-everything alone",
                measure_rss=True,
            ),
        ]
    slow = backend_command("--delay", str(DELAY))
    found += [
        Config(f"backend.py alone ({DELAY * 1e3:.0f} ms to start)", slow),
        Config(
            "funnel-server --stdio, 1 slow backend",
            funnel_command(ws, {"slow": slow}),
            base=f"backend.py alone ({DELAY * 1e3:.0f} ms to start)",
        ),
        Config(
            f"funnel-server --stdio, {MANY} slow backends",
            funnel_command(ws, {f"slow{i:02d}": slow for i in range(MANY)}),
            base=f"backend.py alone ({DELAY * 1e3:.0f} ms to start)",
        ),
    ]
    return found


def measure(ws: Workspace, found: list[Config], plan: Plan) -> None:
    """Run the interleaved rounds."""
    for round_ in range(plan.rounds):
        shift = round_ % len(found)
        for config in found[shift:] + found[:shift]:
            if config.failure:
                continue
            try:
                _start_once(ws, config, rss=config.measure_rss and round_ == plan.rounds - 1)
            except (PeerError, OSError) as exc:
                config.failure = f"{type(exc).__name__}: {exc}"[:200]


def report(found: list[Config], plan: Plan) -> Section:
    """The table: times to the first and the complete ``tools/list``, differences, RSS."""
    by_label = {c.label: c for c in found}
    rows: list[list[str]] = []
    data: dict[str, object] = {}
    for config in found:
        if config.failure:
            rows.append([config.label, "-", "-", "-", "-", f"FAILED: {config.failure}"])
            continue
        base = by_label.get(config.base) if config.base else None
        extra = (
            [(c - b) * 1e3 for c, b in zip(config.complete, base.complete, strict=False)]
            if base is not None and not base.failure
            else []
        )
        rows.append(
            [
                config.label,
                spread([t * 1e3 for t in config.first]),
                spread([t * 1e3 for t in config.complete]),
                spread(extra, "{:+,.0f}") if extra else "-",
                f"{config.rss_kib / 1024:.1f}" if config.rss_kib else "-",
                f"{config.tools} tools",
            ]
        )
        data[config.label] = {
            "first_ms": [t * 1e3 for t in config.first],
            "complete_ms": [t * 1e3 for t in config.complete],
            "extra_ms": extra,
            "median_extra_ms": statistics.median(extra) if extra else math.nan,
            "rss_kib": config.rss_kib,
            "tools": config.tools,
        }
    return Section(
        title=(
            f"Start-up: process start to the first tools/list answer, bare driver; "
            f"{plan.rounds} rounds interleaved, ranges min–max"
        ),
        headers=[
            "configuration",
            "first answer ms",
            "with backend tools ms",
            "vs backend alone ms",
            f"idle RSS MiB ({IDLE_SECONDS:.0f} s)",
            "listed",
        ],
        rows=rows,
        data=data,
    )
