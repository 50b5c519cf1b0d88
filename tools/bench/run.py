"""funnel's benchmarks: funnel side by side with a bare server, two floor relays and FastMCP.

Usage (from the repository root)::

    make bench                                      # the default run, about 3 minutes
    uv run --locked python tools/bench/run.py --quick
    uv run --locked python tools/bench/run.py --only calls,http --no-peers
    uv run --locked python tools/bench/run.py --json out.json --markdown out.md

Sections:

1. ``calls``: ``tools/call echo`` over stdio with a bare JSON-RPC driver: server-everything
   directly, a relay that copies lines, a relay that decodes/remaps/re-encodes with
   msgspec, ``funnel-server --stdio``, FastMCP's proxy; serial latency and 64 in flight.
2. ``http``: ``/mcp`` over 127.0.0.1: server-everything's streamable HTTP, funnel-server
   (2025-11-25 sessions and 2026-07-28 stateless), FastMCP's HTTP proxy; serial latency
   and 64 concurrent clients.
3. ``startup``: time to the first ``tools/list``; idle RSS of ``funnel-server --stdio``.
4. ``surface``: ``tools/list`` (and discovery search) over 5,000 tools.
5. ``memory``: RSS of funnel across 150 backend reconnect cycles.

Then the targets of issue 12, each with the figure this run measured. Benchmarks, not
tests: nothing here asserts a timing. Every answer a target gives is checked, and a
target that answered wrongly is reported as FAILED. Exit status 0 unless the bench
itself breaks, 1 if an answer failed its check.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _calls
import _http
import _memory
import _startup
import _surface
import anyio
from _common import (
    FASTMCP_VERSION,
    REPO,
    Section,
    Workspace,
    commit_info,
    fastmcp_python,
    machine_info,
    machine_line,
    markdown_table,
    measured_commits,
    node_everything_command,
    spread,
    table,
)

SECTIONS = ("calls", "http", "startup", "surface", "memory")


@dataclass(frozen=True, slots=True)
class Plans:
    """Every section's plan for one run."""

    calls: _calls.Plan
    http: _http.Plan
    startup: _startup.Plan
    surface: _surface.Plan
    memory: _memory.Plan


def plans(*, quick: bool, calls: int | None) -> Plans:
    """The default plan (about 3 minutes on 2 cores), the quick one, or a tiny one."""
    if calls is not None:  # the smoke test: just enough calls to check every target
        return Plans(
            _calls.Plan(rounds=2, serial=calls, pipelined=calls * 4, warmup=calls),
            _http.Plan(rounds=2, serial=calls, concurrent=calls * 4, warmup=1),
            _startup.Plan(rounds=1),
            _surface.Plan(list_repeats=2, stdio_repeats=1, search_repeats=1),
            _memory.Plan(cycles=3, warmup=1),
        )
    if quick:
        return Plans(
            _calls.Plan(
                rounds=2,
                serial=200,
                pipelined=512,
                warmup=50,
                serial_seconds=0.05,
                pipelined_seconds=0.1,
            ),
            _http.Plan(rounds=2, serial=10, concurrent=256, warmup=2),
            _startup.Plan(rounds=1),
            _surface.Plan(list_repeats=5, stdio_repeats=2, search_repeats=2),
            _memory.Plan(cycles=10, warmup=3),
        )
    return Plans(
        _calls.Plan(
            rounds=10,
            serial=250,
            pipelined=1024,
            warmup=200,
            serial_seconds=0.1,
            pipelined_seconds=0.25,
        ),
        _http.Plan(rounds=5, serial=30, concurrent=256, warmup=5),
        _startup.Plan(rounds=3),
        _surface.Plan(list_repeats=30, stdio_repeats=10, search_repeats=20),
        _memory.Plan(cycles=150, warmup=30),
    )


def _median(values: Any) -> float:
    finite = [v for v in values if isinstance(v, int | float) and not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def targets(data: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Issue 12's targets, each with this run's figure (median over rounds) and its verdict."""
    rows: list[list[str]] = []

    def row(what: str, value: float, goal: str, met: bool | None, fmt: str = "{:.2f}") -> None:
        shown = "-" if math.isnan(value) else fmt.format(value)
        verdict = "-" if math.isnan(value) or met is None else ("met" if met else "NOT met")
        rows.append([what, shown, goal, verdict])

    calls = data.get("calls", {})
    funnel = calls.get("funnel-server --stdio", {})
    if funnel:
        lat = _median(funnel.get("x_relay", []))
        row("stdio latency, funnel / msgspec relay", lat, "≤ 1.25x", lat <= 1.25)
        thr = _median(funnel.get("throughput_x_direct", []))
        row("stdio calls/s @64, funnel / direct", thr, "≥ 0.75x", thr >= 0.75)
        cpu = float(funnel.get("cpu_x_relay", math.nan))
        # No goal of its own: the figure the two ratios above follow, robust to load.
        row("stdio CPU per call, funnel / msgspec relay", cpu, "(what both follow)", None)
    http = data.get("http", {})
    for label, values in http.items():
        if not label.startswith("funnel-server"):
            continue
        era = label.split(", ", 1)[1]
        p50 = _median(values.get("x_direct", []))
        row(f"/mcp {era}: p50 / server-everything HTTP", p50, "≤ 1.00x", p50 <= 1.0)
        thr = _median(values.get("throughput_x_direct", []))
        row(f"/mcp {era}: calls/s / server-everything HTTP", thr, "≥ 1.00x", thr >= 1.0)
        fast = _median(values.get("throughput_x_fastmcp", []))
        row(f"/mcp {era}: calls/s / FastMCP HTTP", fast, "≥ 3.00x", fast >= 3.0)
    startup = data.get("startup", {})
    first = startup.get("funnel-server --stdio, 1 server-everything", {})
    if first:
        extra = float(first.get("median_extra_ms", math.nan))
        row(
            "first tools/list, funnel minus backend alone",
            extra,
            "≤ +300 ms",
            extra <= 300,
            "{:+,.0f} ms",
        )
        rss = first.get("rss_kib", 0) / 1024 or math.nan
        row("idle RSS of funnel-server --stdio", rss, "≤ 45 MiB", rss <= 45, "{:.1f} MiB")
    surface = data.get("surface", {})
    if "tools_list_ms" in surface:
        value = float(surface["tools_list_ms"])
        row("tools/list over 5,000 tools, in the server", value, "≤ 2 ms", value <= 2, "{:.2f} ms")
    return rows


def _failures(data: dict[str, dict[str, Any]]) -> list[str]:
    found = []
    for section in ("calls", "http"):
        for label, values in data.get(section, {}).items():
            if values.get("failed") or values.get("failure") or not values.get("checked"):
                found.append(f"{section}: {label}: {values.get('failure') or 'no answer checked'}")
    return found


def _cpu(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) and not math.isnan(value) else "-"


README_START = "<!-- bench:start (written by tools/bench/run.py --readme) -->"
README_END = "<!-- bench:end -->"


def readme_section(
    data: dict[str, dict[str, Any]],
    goals: list[list[str]],
    measured: str,
    machine: str,
    load: tuple[float, float],
) -> str:
    """The root README's performance figures, from this run (between the markers).

    Args:
        data: The figures of every section (as in ``--json``).
        goals: The targets table.
        measured: What was measured (the commits).
        machine: The machine line.
        load: The 1-minute load average at the start and at the end of the run.
    """
    cores = os.cpu_count() or 1
    busy = (
        f" The machine was busy (load average {load[0]:.1f} at the start, {load[1]:.1f} at "
        f"the end, on {cores} cores): absolute times are inflated and the spreads wide."
        if max(load) > cores
        else ""
    )
    lines = [
        README_START,
        f"Measured by `make bench` on {measured}; {machine}.{busy}",
        "",
    ]
    calls = data.get("calls", {})
    if calls:
        rows = [
            [
                label,
                spread(v["p50_us"]),
                spread(v["x_direct"], "{:.2f}"),
                spread(v["x_relay"], "{:.2f}"),
                spread(v["throughput"]),
                spread(v["throughput_x_direct"], "{:.2f}"),
                _cpu(v.get("cpu_us_serial")),
                _cpu(v.get("cpu_us_pipelined")),
            ]
            for label, v in calls.items()
        ]
        lines += [
            "`tools/call echo` over stdio (server-everything; ranges are min–max over "
            f"{max(len(v['p50_us']) for v in calls.values())} interleaved rounds):",
            "",
            markdown_table(
                [
                    "target",
                    "p50 µs",
                    "x direct",
                    "x msgspec relay",
                    "calls/s @64",
                    "x direct",
                    "CPU µs/call serial",
                    "CPU µs/call @64",
                ],
                rows,
            ),
            "",
        ]
    http = data.get("http", {})
    if http:
        rows = [
            [
                label,
                spread(v["p50_us"]),
                spread(v["x_direct"], "{:.2f}"),
                spread(v["throughput"]),
                spread(v["throughput_x_direct"], "{:.2f}"),
                spread(v["throughput_x_fastmcp"], "{:.2f}"),
            ]
            for label, v in http.items()
        ]
        lines += [
            f"`/mcp` over HTTP on 127.0.0.1 ({max(len(v['p50_us']) for v in http.values())} "
            "rounds; 64 concurrent clients):",
            "",
            markdown_table(
                ["target", "p50 µs", "x direct", "calls/s", "x direct", "x FastMCP"], rows
            ),
            "",
        ]
    if goals:
        lines += [
            "The targets of issue 12 (medians of the per-round ratios):",
            "",
            markdown_table(["target", "this run", "goal", "verdict"], goals),
            "",
        ]
    memory = data.get("memory", {})
    if "kib_per_100_cycles" in memory:
        lines += [
            f"Memory across backend reconnects: {memory['kib_per_100_cycles']:+.0f} KiB per "
            "100 cycles after warm-up.",
            "",
        ]
    lines.append(README_END)
    return "\n".join(lines)


def _replace_readme(section: str) -> str:
    text = (REPO / "README.md").read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"README.md has no {README_START!r} … {README_END!r} markers")
    return text[:start] + section + text[end + len(README_END) :]


def _print(section: Section) -> None:
    print(f"\n{section.text()}", flush=True)


async def _main(args: argparse.Namespace) -> tuple[int, dict[str, str]]:
    """Run the sections; the exit status, and the files to write (``--json``, ``--markdown``)."""
    sections = SECTIONS if args.only is None else tuple(args.only.split(","))
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}")
    plan = plans(quick=args.quick, calls=args.calls)
    kind = "tiny" if args.calls is not None else "quick" if args.quick else "default"
    header = [
        f"funnel benchmarks ({kind} run)",
        f"commit: {commit_info()}",
        f"machine: {machine_info()}",
    ]
    print("\n".join(header), flush=True)
    if node_everything_command() is None:
        print("note: tools/node_modules is missing (npm ci --prefix tools): nothing to measure")
    fastmcp = None if args.no_peers else fastmcp_python()
    print(
        f"FastMCP {FASTMCP_VERSION}: "
        + ("measured (an isolated uv tool environment)" if fastmcp else "not measured"),
        flush=True,
    )
    ws = Workspace()
    load_start = os.getloadavg()
    started = time.perf_counter()
    shown: list[Section] = []
    data: dict[str, dict[str, Any]] = {}
    try:
        if "calls" in sections:
            found = _calls.targets(ws, fastmcp)
            await anyio.to_thread.run_sync(_calls.measure, ws, found, plan.calls)
            shown.append(_calls.report(found, plan.calls))
            data["calls"] = shown[-1].data
            _print(shown[-1])
        if "http" in sections:
            http_targets = await _http.measure(ws, fastmcp, plan.http)
            shown.append(_http.report(http_targets, plan.http))
            data["http"] = shown[-1].data
            _print(shown[-1])
        if "startup" in sections:
            configs = _startup.configs(ws)
            await anyio.to_thread.run_sync(_startup.measure, ws, configs, plan.startup)
            shown.append(_startup.report(configs, plan.startup))
            data["startup"] = shown[-1].data
            _print(shown[-1])
        if "surface" in sections:
            surface = await _surface.measure(ws, plan.surface)
            shown += surface
            data["surface"] = surface[0].data
            for section in surface:
                _print(section)
        if "memory" in sections:
            shown.append(await anyio.to_thread.run_sync(_memory.measure, ws, plan.memory))
            data["memory"] = shown[-1].data
            _print(shown[-1])
    finally:
        ws.cleanup()
    goals = targets(data)
    goal_headers = ["issue 12 target", "this run", "goal", "verdict"]
    if goals:
        print("\nTargets (medians over rounds; benchmarks prove these, tests never time)\n")
        print(table(goal_headers, goals))
    load = os.getloadavg()
    cores = os.cpu_count() or 1
    if max(load_start[0], load[0]) > cores:
        print(
            f"\nnote: load average {load_start[0]:.1f} at the start and {load[0]:.1f} at the end, "
            f"on {cores} cores: other work shared the CPU, so these figures are noisy and "
            "the verdicts above unreliable (CPU-starved targets look alike)."
        )
    failures = _failures(data)
    for failure in failures:
        print(f"FAILED CHECK: {failure}")
    elapsed = time.perf_counter() - started
    print(f"\ndone in {elapsed:.0f} s")
    files: dict[str, str] = {}
    if args.json:
        files[args.json] = json.dumps(
            {
                "commit": header[1],
                "measured": measured_commits(),
                "machine": header[2],
                "load": [load_start[0], load[0]],
                "sections": data,
                "targets": goals,
            },
            indent=1,
            default=str,
        )
    if args.markdown:
        parts = [
            f"Measured by `make bench` ({kind} run, {elapsed:.0f} s): {header[1]}; "
            f"{header[2]} at the start, {load[0]:.2f} at the end."
        ]
        parts += [section.markdown() for section in shown]
        if goals:
            parts.append(f"**Targets of issue 12**\n\n{markdown_table(goal_headers, goals)}\n")
        files[args.markdown] = "\n\n".join(parts)
    if args.readme:
        files[str(REPO / "README.md")] = _replace_readme(
            readme_section(
                data, goals, measured_commits(), machine_line(), (load_start[0], load[0])
            )
        )
    return (1 if failures else 0), files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer calls and rounds (a smoke test)"
    )
    parser.add_argument(
        "--calls", type=int, metavar="N", help="a tiny run: N serial calls per target and round"
    )
    parser.add_argument("--only", help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    parser.add_argument("--no-peers", action="store_true", help="skip FastMCP")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the tables as Markdown")
    parser.add_argument(
        "--readme", action="store_true", help="rewrite the figures in the root README.md"
    )
    args = parser.parse_args()
    status, files = anyio.run(_main, args)
    for path, text in files.items():
        Path(path).write_text(text)
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
