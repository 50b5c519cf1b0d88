"""Test support shared by every test tree: real peer servers on 127.0.0.1.

Importable as ``support.peers`` (``tests/`` is on pytest's ``pythonpath``), because with
pytest's importlib import mode one conftest cannot import another. Everything started
here can be stopped here; fixtures call the stop functions in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mcp import StdioServerParameters

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO / "tools" / "node_modules"
EVERYTHING = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
MEMORY = NODE_MODULES / "@modelcontextprotocol" / "server-memory" / "dist" / "index.js"
SERVERS = REPO / "tests" / "servers"


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def listening_socket() -> socket.socket:
    """A socket bound to 127.0.0.1:0 and already listening (connections queue at once)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Poll until something accepts on 127.0.0.1:port (bounded), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)  # polling interval of a bounded readiness loop, not a wait for behaviour
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, wait, kill: a started server never outlives its fixture."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            stream.close()


class NodeServer:
    """The npm ``server-everything`` in one of its HTTP modes, restartable on its port."""

    def __init__(self, mode: str) -> None:
        node = shutil.which("node")
        if node is None or not EVERYTHING.exists():
            pytest.skip("the npm test peers are not installed (run `make install`)")
        self.node = node
        self.mode = mode
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {"PATH": os.environ.get("PATH", os.defpath), "PORT": str(self.port)}
        self.proc = subprocess.Popen(
            [self.node, str(EVERYTHING), self.mode],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
            stop_process(self.proc)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def funnel_stdio(config: Path, workdir: Path, *extra: str) -> StdioServerParameters:
    """How the SDK client starts ``funnel-server --stdio`` on ``config`` (home in ``workdir``)."""
    from mcp import StdioServerParameters

    funnel = str(Path(sys.executable).with_name("funnel-server"))
    env = {
        "PATH": os.environ["PATH"],
        "MCP_FUNNEL_HOME": str(workdir / "home"),
        "FUNNEL_LOG_LEVEL": "WARNING",
        # These tests list every backend at once: wait for all of them, however busy
        # the machine (the default bound, 2 s, is for people).
        "FUNNEL_STARTUP_WAIT": "60",
    }
    return StdioServerParameters(
        command=funnel, args=["--stdio", "--config", str(config), *extra], env=env, cwd=str(workdir)
    )
