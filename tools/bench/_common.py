"""What every benchmark section shares: paths, commands, sessions, statistics, tables.

Every process a section starts is a :class:`funnel_transports.StdioTransport` entered in
an ``async with``, so it is stopped (stdin closed, then SIGTERM, then SIGKILL) however the
section ends. Peers that are not part of funnel's lock (FastMCP) run from interpreters
``uv tool run`` builds in its cache, pinned to one version.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from funnel_transports import ClientSession, StdioTransport

BENCH_DIR: Final = Path(__file__).resolve().parent
REPO: Final = BENCH_DIR.parent.parent
BACKEND: Final = BENCH_DIR / "backend.py"
FASTMCP_PROXY: Final = BENCH_DIR / "fastmcp_proxy.py"
EVERYTHING: Final = (
    REPO / "tools/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
)
FASTMCP_VERSION: Final = "4.1.6"
MCP_PROXY_VERSION: Final = "0.13.0"
MCP_FUNNEL_NPM: Final = "mcp-funnel"


@dataclass(frozen=True, slots=True)
class Command:
    """A stdio server to start: argv and the complete environment."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def transport(self, name: str) -> StdioTransport:
        """A transport that starts this command (enter it to start the process)."""
        return StdioTransport(self.argv[0], self.argv[1:], env=self.env, name=name)


def session(transport: StdioTransport, *, timeout: float = 60.0) -> ClientSession:
    """The one client every measurement uses: funnel's, in the handshake era."""
    return ClientSession(transport, mode="legacy", request_timeout=timeout)


def backend_command(*args: str) -> Command:
    """The bench's own trivial Python backend (``backend.py``)."""
    return Command((sys.executable, str(BACKEND), *args))


def node_everything_command() -> Command | None:
    """The reference ``server-everything`` over stdio, when npm peers are installed."""
    node = shutil.which("node")
    if node is None or not EVERYTHING.is_file():
        return None
    return Command((node, str(EVERYTHING), "stdio"))


class Workspace:
    """A temporary directory for config files and funnel's home, removed at the end."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="funnel-bench-")
        self.path = Path(self._dir.name)
        self._count = 0

    def write_json(self, stem: str, data: Any) -> Path:
        """Write ``data`` to a fresh JSON file and return its path."""
        self._count += 1
        path = self.path / f"{self._count:03d}-{stem}.json"
        path.write_text(json.dumps(data, indent=1))
        return path

    def cleanup(self) -> None:
        """Remove the directory."""
        self._dir.cleanup()


def funnel_command(ws: Workspace, servers: dict[str, Command], **extra: Any) -> Command:
    """``funnel-server --stdio`` over ``servers``, with a private funnel home."""
    config = {
        "servers": {
            name: {"command": cmd.argv[0], "args": list(cmd.argv[1:])}
            for name, cmd in servers.items()
        },
        **extra,
    }
    path = ws.write_json("funnel", config)
    home = ws.path / "funnel-home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "MCP_FUNNEL_HOME": str(home)}
    return Command(
        (sys.executable, "-m", "funnel_server", "--stdio", "--config", str(path)), env=env
    )


def fastmcp_python() -> str | None:
    """The interpreter of an isolated environment with the pinned FastMCP, or ``None``.

    ``uv tool run`` builds (or reuses from its cache) an environment with exactly
    ``fastmcp==FASTMCP_VERSION``; funnel's own environment and lock never see it. The
    interpreter is then started directly, so no ``uv`` process sits between the client
    and the proxy.
    """
    uv = shutil.which("uv")
    if uv is None:
        return None
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT")}
    try:
        done = subprocess.run(
            [
                uv,
                "tool",
                "run",
                "--quiet",
                "--from",
                f"fastmcp=={FASTMCP_VERSION}",
                "python",
                "-c",
                "import sys, fastmcp; print(sys.executable)",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
            env=env,
            cwd=tempfile.gettempdir(),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"  (FastMCP {FASTMCP_VERSION} unavailable: {exc})", file=sys.stderr)
        return None
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else None


def fastmcp_command(ws: Workspace, python: str, servers: dict[str, Command]) -> Command:
    """FastMCP's proxy over ``servers`` (an ``mcpServers`` config)."""
    config = {
        "mcpServers": {
            name: {"command": cmd.argv[0], "args": list(cmd.argv[1:])}
            for name, cmd in servers.items()
        }
    }
    path = ws.write_json("fastmcp", config)
    return Command((python, str(FASTMCP_PROXY), str(path)))


def echo_tool(tools: Sequence[dict[str, Any]]) -> str:
    """The name a proxy gives the backend's ``echo`` tool (``echo``, ``x__echo``, ``x_echo``)."""
    names = [str(tool.get("name")) for tool in tools]
    for name in names:
        if name == "echo":
            return name
    for name in names:
        if name.endswith(("__echo", "_echo")):
            return name
    raise LookupError(f"no echo tool among {names[:10]}")


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(f"no VmRSS for pid {pid}")


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True, slots=True)
class Summary:
    """Order statistics of a sample, in the unit it was given in."""

    count: int
    median: float
    p99: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        ordered = sorted(values)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan)
        rank = max(0, math.ceil(0.99 * len(ordered)) - 1)  # nearest-rank p99
        return cls(
            len(ordered), statistics.median(ordered), ordered[rank], statistics.fmean(ordered)
        )


def ratio(value: float, base: float) -> str:
    """``value / base`` as ``1.23x``, or a dash when it cannot be computed."""
    if not base or math.isnan(value) or math.isnan(base):
        return "-"
    return f"{value / base:.2f}x"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def machine_info() -> str:
    """One line about the machine the numbers come from."""
    model = "unknown CPU"
    try:
        for text_line in Path("/proc/cpuinfo").read_text().splitlines():
            if text_line.startswith("model name"):
                model = text_line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    node = shutil.which("node")
    node_version = (
        subprocess.run(
            [node, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if node
        else "none"
    )
    return (
        f"{os.cpu_count()} cores ({model}), Python {sys.version.split()[0]}, "
        f"Node {node_version}, load average {load}"
    )
