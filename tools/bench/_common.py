"""What every benchmark section shares: paths, commands, statistics, tables.

Every process a section starts is a :class:`~_driver.StdioPeer` (or a
:class:`ServerProcess` for HTTP servers) closed in a ``with`` or ``finally``, so it is
stopped, with its process group, however the section ends. FastMCP is not part of
funnel's lock: it runs from an interpreter ``uv tool run`` builds in its cache, pinned.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from _driver import StdioPeer

BENCH_DIR: Final = Path(__file__).resolve().parent
REPO: Final = BENCH_DIR.parent.parent
BACKEND: Final = BENCH_DIR / "backend.py"
FASTMCP_PROXY: Final = BENCH_DIR / "fastmcp_proxy.py"
RELAY_COPY: Final = BENCH_DIR / "relay_copy.py"
RELAY_MSGSPEC: Final = BENCH_DIR / "relay_msgspec.py"
EVERYTHING: Final = (
    REPO / "tools/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
)
FASTMCP_VERSION: Final = "4.2.3"
LOOPBACK: Final = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Command:
    """A process to start: argv and the complete environment."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def peer(self, name: str, ws: Workspace | None = None) -> StdioPeer:
        """A bare driver for this command (call ``open()`` to start it)."""
        stderr = ws.path / f"{_slug(name)}.stderr" if ws is not None else None
        return StdioPeer(self.argv, self.env, name, stderr)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")[:60]


def backend_command(*args: str) -> Command:
    """The bench's own trivial Python backend (``backend.py``)."""
    return Command((sys.executable, str(BACKEND), *args))


def node_everything_command() -> Command | None:
    """The reference ``server-everything`` over stdio, when npm peers are installed."""
    node = shutil.which("node")
    if node is None or not EVERYTHING.is_file():
        return None
    return Command((node, str(EVERYTHING), "stdio"))


def relay_command(relay: Path, backend: Command) -> Command:
    """One of the floor relays (``relay_copy.py``, ``relay_msgspec.py``) over ``backend``."""
    return Command((sys.executable, str(relay), *backend.argv), backend.env)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class Workspace:
    """A temporary directory for configs, logs and funnel's home, removed at the end."""

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


def funnel_server_argv() -> tuple[str, ...]:
    """How to start ``funnel-server``: this interpreter, the installed package."""
    return (sys.executable, "-m", "funnel_server")


def funnel_config(ws: Workspace, servers: Mapping[str, Command], **extra: Any) -> Path:
    """A funnel config file over ``servers`` (stdio backends)."""
    config = {
        "servers": {
            name: {"command": cmd.argv[0], "args": list(cmd.argv[1:])}
            for name, cmd in servers.items()
        },
        **extra,
    }
    return ws.write_json("funnel", config)


def funnel_env(ws: Workspace, **extra: str) -> dict[str, str]:
    """The environment of a funnel process: a private funnel home (tokens, audit log)."""
    home = ws.path / "funnel-home"
    home.mkdir(exist_ok=True)
    return {**os.environ, "MCP_FUNNEL_HOME": str(home), **extra}


def funnel_command(ws: Workspace, servers: Mapping[str, Command], **extra: Any) -> Command:
    """``funnel-server --stdio`` over ``servers``, its web app on a free loopback port."""
    path = funnel_config(ws, servers, **extra)
    argv = (*funnel_server_argv(), "--stdio", "--port", str(free_port()), "--config", str(path))
    return Command(argv, funnel_env(ws))


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


def fastmcp_command(
    ws: Workspace, python: str, servers: Mapping[str, Command], *, http_port: int | None = None
) -> Command:
    """FastMCP's proxy over ``servers`` (an ``mcpServers`` config), on stdio or HTTP."""
    config = {
        "mcpServers": {
            name: {"command": cmd.argv[0], "args": list(cmd.argv[1:])}
            for name, cmd in servers.items()
        }
    }
    path = ws.write_json("fastmcp", config)
    argv: tuple[str, ...] = (python, str(FASTMCP_PROXY), str(path))
    if http_port is not None:
        argv = (*argv, "--http", str(http_port))
    return Command(argv)


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux ``/proc``), its own only.

    Robust to load where wall-clock figures are not: a busy machine delays a process but
    does not make its work cost more CPU. The resolution is one clock tick (10 ms), so
    callers sum it over many calls.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After "pid (comm)": state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ServerProcess:
    """A long-running server (HTTP) in its own process group, stopped with its children."""

    def __init__(self, command: Command, name: str, ws: Workspace) -> None:
        self.name = name
        self._log = ws.path / f"{_slug(name)}.stderr"
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                list(command.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=dict(command.env),
                start_new_session=True,
            )

    def log_tail(self) -> str:
        """The last lines the server wrote (for an error message)."""
        try:
            return " | ".join(self._log.read_text(errors="replace").strip().splitlines()[-3:])
        except OSError:
            return ""

    def close(self) -> None:
        """SIGTERM to the group, then SIGKILL; waits for the process."""
        process = self.process
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


# --------------------------------------------------------------------------- statistics


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (``q`` in 0..1) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """``min–max`` of per-round values (one value when they agree), or a dash."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "-"
    low, high = fmt.format(min(finite)), fmt.format(max(finite))
    return low if low == high else f"{low}–{high}"


def ratios(values: Sequence[float], bases: Sequence[float]) -> list[float]:
    """Per-round ``value / base`` (rounds paired by index; a target that failed has fewer)."""
    return [
        v / b if b and not math.isnan(b) else math.nan for v, b in zip(values, bases, strict=False)
    ]


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


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The same table in Markdown."""
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(slots=True)
class Section:
    """One section's output: a title, a table, notes; and the raw figures for ``--json``."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """The section as plain text."""
        return "\n".join([self.title, "", table(self.headers, self.rows), *self.notes])

    def markdown(self) -> str:
        """The section as Markdown."""
        notes = "\n".join(self.notes)
        return f"**{self.title}**\n\n{markdown_table(self.headers, self.rows)}\n" + (
            f"\n{notes}\n" if notes else ""
        )


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


def commit_info() -> str:
    """The commit measured, whether the work tree had changes, and the last code commit."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "log", "-1", "--format=%h %cs %s"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        code = subprocess.run(
            ["git", "-C", str(REPO), "log", "-1", "--format=%h", "--", "packages", "apps"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"
    changes = " (with uncommitted changes)" if dirty else ""
    return f"{head}{changes}; funnel's code (packages/, apps/) as of {code}"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def measured_commits() -> str:
    """For the README: funnel's code commit, and the bench's."""
    try:
        code = _git("log", "-1", "--format=%h (%cs)", "--", "packages", "apps")
        head = _git("log", "-1", "--format=%h")
    except (OSError, subprocess.SubprocessError):
        return "an unknown commit"
    return f"funnel's code as of commit {code} (bench at {head})"


def machine_line() -> str:
    """For the README: the machine without the load (given separately)."""
    return machine_info().split(", load average")[0]
