"""funnel's benchmarks: its performance budget, measured beside peer proxies in one run.

Usage (from the repository root)::

    make bench                                      # the full run, a few minutes
    uv run --locked python tools/bench/run.py --quick
    uv run --locked python tools/bench/run.py --only calls,startup --no-peers

Sections (DESIGN.md §7):

1. ``calls``: a trivial ``tools/call`` (``echo``) over stdio, direct on the backend,
   through ``funnel-server --stdio`` and through every peer proxy that can run here;
   sequential and 64 in flight; the ratio proxy/direct is the headline.
2. ``surface``: ``tools/list`` and discovery search over 5,000 aggregated tools.
3. ``startup``: start to first ``tools/list`` with 20 slow backends versus 1.
4. ``memory``: RSS of funnel across backend reconnect cycles.

Benchmarks, not tests: nothing here asserts a timing. Every number is printed, with
ratios taken from measurements made side by side in this same run, so machine noise
affects both sides of a ratio alike. Exit status 0 unless the bench itself breaks.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

import _calls
import _memory
import _startup
import _surface
import anyio
from _common import (
    FASTMCP_VERSION,
    MCP_FUNNEL_NPM,
    MCP_PROXY_VERSION,
    REPO,
    Workspace,
    fastmcp_python,
    machine_info,
    node_everything_command,
    table,
)

SECTIONS = ("calls", "surface", "startup", "memory")


def _mcp_funnel_status() -> str:
    """Whether the TypeScript original can run here (it needs its npm package)."""
    installed = REPO / "tools/node_modules" / MCP_FUNNEL_NPM / "package.json"
    if installed.is_file():
        return "installed, but not wired in (see tools/bench/README.md)"
    npm = shutil.which("npm")
    if npm is None:
        return "skipped: npm is not installed"
    try:
        found = subprocess.run(
            [npm, "view", MCP_FUNNEL_NPM, "version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"skipped: npm view failed ({exc})"
    if found.returncode != 0:
        return f"skipped: the npm registry has no package `{MCP_FUNNEL_NPM}` (npm view: E404)"
    return (
        f"skipped: `{MCP_FUNNEL_NPM}@{found.stdout.strip()}` exists but is not installed in tools/"
    )


def _peers(fastmcp: str | None, *, check_npm: bool) -> list[list[str]]:
    return [
        [
            f"fastmcp {FASTMCP_VERSION} (PyPI)",
            "measured: tools/bench/fastmcp_proxy.py (create_proxy, stdio)"
            if fastmcp
            else "skipped: `uv tool run --from fastmcp` failed (see stderr)",
        ],
        [
            f"mcp-proxy {MCP_PROXY_VERSION} (PyPI)",
            "skipped: it bridges stdio<->HTTP only (a command becomes an SSE/streamable "
            "HTTP server; a URL becomes a stdio server); no stdio client -> stdio backend mode",
        ],
        [
            "mcp-funnel (npm, TypeScript original)",
            _mcp_funnel_status() if check_npm else "not checked (--no-peers)",
        ],
    ]


async def _main(args: argparse.Namespace) -> None:
    sections = SECTIONS if args.only is None else tuple(args.only.split(","))
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}")
    quick = args.quick
    print(f"funnel benchmarks ({'quick' if quick else 'full'} run)")
    print(f"machine: {machine_info()}")
    if node_everything_command() is None:
        print("note: tools/node_modules is missing (npm ci --prefix tools): Node rows skipped")
    fastmcp = None if args.no_peers else fastmcp_python()
    print()
    print(table(["peer proxy", "status"], _peers(fastmcp, check_npm=not args.no_peers)))
    ws = Workspace()
    started = time.perf_counter()
    headline: dict[str, str] = {}
    try:
        if "calls" in sections:
            found = _calls.targets(ws, fastmcp)
            plan = (
                _calls.Plan(warmup=100, sequential=400, pipelined=1024, rounds=4)
                if quick
                else _calls.Plan(warmup=300, sequential=2000, pipelined=4096, rounds=10)
            )
            await _calls.measure(found, plan)
            text, headline = _calls.report(found)
            print(f"\n{text}")
        if "surface" in sections:
            surface_plan = (
                _surface.Plan(list_repeats=10, stdio_repeats=3, search_repeats=5)
                if quick
                else _surface.Plan(list_repeats=50, stdio_repeats=15, search_repeats=50)
            )
            print(f"\n{await _surface.measure(ws, surface_plan, fastmcp)}")
        if "startup" in sections:
            startup_plan = _startup.Plan(rounds=2 if quick else 5)
            print(f"\n{await _startup.measure(ws, startup_plan, fastmcp)}")
        if "memory" in sections:
            memory_plan = (
                _memory.Plan(cycles=40, warmup=10) if quick else _memory.Plan(cycles=400, warmup=50)
            )
            print(f"\n{await _memory.measure(ws, memory_plan)}")
    finally:
        ws.cleanup()
    if headline:
        print("\nHeadline, sequential median ratio proxy/direct (lower is better):")
        for key, value in headline.items():
            if not key.endswith("/direct"):
                print(f"  {key:<45} {value}")
    print(f"\ndone in {time.perf_counter() - started:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds")
    parser.add_argument("--only", help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    parser.add_argument(
        "--no-peers", action="store_true", help="skip peer proxies (funnel and direct only)"
    )
    args = parser.parse_args()
    anyio.run(_main, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
