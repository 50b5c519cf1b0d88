"""Running the official MCP conformance harness (``@modelcontextprotocol/conformance``).

Two releases are installed side by side (``tools/conformance-0.1``: 0.1.16, protocol
2025-11-25; ``tools/conformance-0.2``: 0.2.0-alpha.12, protocol 2026-07-28), each with
Node 22 from the npm package ``node``. The harness runs on that Node, one process per
scenario (client-leg scenarios bind ports; a parallel run makes false failures).

A run passes when the harness exits 0: no FAILURE or WARNING check, no timeout. The
``checks.json`` it writes says why when it does not; :attr:`Outcome.reason` quotes the
failing checks so a test failure names them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import uvicorn
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from funnel_proxy import FunnelConfig
from funnel_server._app import AppSettings, create_app
from funnel_server._calls import ServerFunnel
from support.peers import REPO, listening_socket
from support.stdio_bridge import stdio_bridge

FUNNEL = str(Path(sys.executable).with_name("funnel-server"))

__all__ = [
    "REVISIONS",
    "TOKEN",
    "Outcome",
    "Revision",
    "funnel_http",
    "funnel_stdio",
    "run_client",
    "run_server",
    "scenarios",
    "serving_in_thread",
    "with_token",
]


@dataclass(frozen=True, slots=True)
class Revision:
    """One installed harness release and the protocol revision it is run for."""

    release: str
    folder: Path
    spec_version: str

    @property
    def node(self) -> Path:
        """Node 22, from the folder's ``node`` package."""
        return self.folder / "node_modules" / ".bin" / "node"

    @property
    def script(self) -> Path:
        """The harness's entry point."""
        return (
            self.folder
            / "node_modules"
            / "@modelcontextprotocol"
            / "conformance"
            / "dist"
            / "index.js"
        )

    @property
    def installed(self) -> bool:
        """Whether ``make install`` has installed this release."""
        return self.node.exists() and self.script.exists()

    def argv(self, *args: str) -> list[str]:
        """The command line that runs the harness with ``args``."""
        return [str(self.node), str(self.script), *args]

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The harness's environment: Node 22 first on ``PATH`` (the client command's too)."""
        path = f"{self.node.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "PATH": path, **(extra or {})}

    def __str__(self) -> str:
        return self.release


REVISIONS: tuple[Revision, ...] = (
    Revision("0.1.16", REPO / "tools" / "conformance-0.1", "2025-11-25"),
    Revision("0.2.0-alpha.12", REPO / "tools" / "conformance-0.2", "2026-07-28"),
)


@cache
def scenarios(revision: Revision, leg: str) -> tuple[str, ...]:
    """The scenarios ``conformance list --client|--server`` names for the revision's protocol.

    Empty when the release is not installed (the tests then skip, saying so).
    """
    if not revision.installed:
        return ()
    done = subprocess.run(
        revision.argv("list", f"--{leg}", "--spec-version", revision.spec_version),
        env=revision.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    names = []
    for line in done.stdout.splitlines():
        item = line.strip()
        if item.startswith("- "):
            names.append(item[2:].split(" ", 1)[0])
    return tuple(names)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one harness run said."""

    returncode: int
    checks: tuple[dict[str, object], ...]
    output: str

    @property
    def passed(self) -> bool:
        """The harness's own verdict (exit 0)."""
        return self.returncode == 0

    @property
    def problems(self) -> list[dict[str, object]]:
        """The checks that fail a run: FAILURE and WARNING."""
        return [c for c in self.checks if c.get("status") in ("FAILURE", "WARNING")]

    @property
    def reason(self) -> str:
        """Every failing check as ``id (STATUS): message``, or the tail of the output."""
        lines = [
            f"{c.get('id')} ({c.get('status')}): {c.get('errorMessage') or c.get('description')}"
            for c in self.problems
        ]
        if not lines:
            lines = [f"exit {self.returncode}, no failing check; output:", self.output[-3000:]]
        return "\n".join(lines)


def _checks(out: Path) -> tuple[dict[str, object], ...]:
    found: list[dict[str, object]] = []
    for path in sorted(out.rglob("checks.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, list):
            found += [c for c in data if isinstance(c, dict)]
    return tuple(found)


def _run(
    revision: Revision, args: Sequence[str], out: Path, env: dict[str, str], timeout: float
) -> Outcome:
    out.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            revision.argv(*args, "-o", str(out)),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        # TimeoutExpired carries bytes even when the run was in text mode.
        output = exc.stdout.decode(errors="replace") if exc.stdout else ""
        return Outcome(-1, _checks(out), f"harness did not finish in {timeout} s\n{output}")
    return Outcome(done.returncode, _checks(out), done.stdout + done.stderr)


def run_server(
    revision: Revision, url: str, scenario: str, out: Path, *, timeout: float = 60
) -> Outcome:
    """Judge the server at ``url`` with one scenario."""
    args = ["server", "--url", url, "--scenario", scenario, "--spec-version", revision.spec_version]
    return _run(revision, args, out, revision.env(), timeout)


def run_client(
    revision: Revision,
    command: Sequence[str],
    scenario: str,
    out: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> Outcome:
    """Judge the client ``command`` (the harness appends the mock server's URL) with one scenario.

    The harness splits the command on single spaces, so no part may contain one.
    """
    if any(" " in part for part in command):
        raise ValueError(f"the harness cannot quote a command part with a space: {command!r}")
    args = [
        "client",
        "--command",
        " ".join(command),
        "--scenario",
        scenario,
        "--spec-version",
        revision.spec_version,
        "--timeout",
        str(int(timeout * 1000 * 0.8)),
    ]
    return _run(revision, args, out, revision.env(env), timeout)


# ---------------------------------------------------------------------- funnel as the server

TOKEN = "conformance-test-token-0123456789abcdef"
"""funnel-server's inbound token in these tests; the pass-through adds it."""


def with_token(app: ASGIApp, token: str = TOKEN) -> ASGIApp:
    """The app behind a pass-through that adds ``Authorization: Bearer <token>``.

    The harness's client sends no custom headers, so it cannot present funnel's token.
    Everything else (``Host``, ``Origin``, the body, the stream) passes unchanged, so
    funnel's own checks still judge every request.
    """

    async def passthrough(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"authorization"]
            headers.append((b"authorization", f"Bearer {token}".encode()))
            scope["headers"] = headers  # each request's scope is its own dict
        await app(scope, receive, send)

    return passthrough


@asynccontextmanager
async def _uvicorn(
    app: Any, on_exit: Callable[[], None] = lambda: None
) -> AsyncIterator[int]:  # any ASGI app
    """Serve ``app`` on 127.0.0.1 (a free port) for the duration of the block; yields the port.

    The socket listens before uvicorn starts, so the first request simply queues.
    """
    sock = listening_socket()
    port: int = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=2
        )
    )
    stopped = anyio.Event()

    async def serve() -> None:
        try:
            await server.serve([sock])
        finally:
            stopped.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            try:
                yield port
            finally:
                on_exit()
                server.should_exit = True
                with anyio.CancelScope(shield=True), anyio.fail_after(10):
                    await stopped.wait()
    finally:
        sock.close()


@asynccontextmanager
async def funnel_http(config: FunnelConfig) -> AsyncIterator[str]:
    """funnel-server's app over ``config`` behind the token pass-through; yields the ``/mcp`` URL."""
    async with ServerFunnel(config, ready_timeout=30.0) as funnel:
        app = create_app(funnel, AppSettings(api_token=TOKEN))
        # close_all: funnel's long-lived /mcp streams end at once, so shutdown is quick.
        async with _uvicorn(with_token(app), app.state.mcp_endpoint.close_all) as port:
            yield f"http://127.0.0.1:{port}/mcp"


@asynccontextmanager
async def funnel_stdio(config: Mapping[str, object], workdir: Path) -> AsyncIterator[str]:
    """``funnel-server --stdio`` over ``config`` behind the stdio bridge; yields its ``/mcp`` URL."""
    path = workdir / ".mcp-funnel.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    argv = [FUNNEL, "--stdio", "--config", str(path), "--port", "0"]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "MCP_FUNNEL_HOME": str(workdir / "home"),
        "FUNNEL_LOG_LEVEL": "WARNING",
    }
    async with (
        stdio_bridge(argv, env=env, cwd=str(workdir)) as bridge,
        _uvicorn(bridge, bridge.close_all) as port,
    ):
        with anyio.fail_after(60):
            await bridge.wait_until_listed()
        yield f"http://127.0.0.1:{port}/mcp"


@contextmanager
def serving_in_thread(manager: AbstractAsyncContextManager[str]) -> Iterator[str]:
    """Enter an async context manager on an event loop in a worker thread (for sync tests)."""
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(manager) as value,
    ):
        yield value
