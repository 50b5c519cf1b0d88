"""A real multi-replica deployment on loopback: redis-server, N funnel-servers, HAProxy.

:func:`replicas` (the ``cluster`` fixture of ``tests/replicas``) starts a throwaway ``redis-server``,
``count`` ``funnel-server`` processes with the same config, ``FUNNEL_API_TOKEN`` and
``FUNNEL_STATE_KEY``, all given ``--shared-state`` and the balancer's URL as
``--public-url``, and HAProxy in front (round robin, no stickiness, health checks on
``/api/health/ready``, ``retry-on`` + ``redispatch`` so a request whose replica died
before answering goes to another one; see :data:`HAPROXY_CFG`). Everything binds
127.0.0.1 on free ports; every process is stopped by its PID when the block ends.

Tests talk to :attr:`Cluster.url` (the balancer) only; :attr:`Replica.base` is for
looking at one replica's state, never for traffic under test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import anyio
import anyio.abc
import httpx
import pytest

from funnel_tokenstore import generate_state_key
from funnel_tokenstore.testing import redis_server
from support.peers import free_port

FUNNEL = str(Path(sys.executable).with_name("funnel-server"))
API_TOKEN = "replicas-api-token-" + "Hq4Zr8Kd2Vn6Wm3T"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}

# Round robin, no stickiness. The health check sends a Host header: funnel-server's
# DNS-rebinding check refuses requests without an acceptable one. A replica counts as down after one failed readiness check
# (every 200 ms) and as up again after one good one. A request is retried on another
# replica (redispatch) when its connection failed or the replica closed it before
# answering (conn-failure, empty-response, response-timeout): the requests in flight
# on a SIGKILLed replica are answered by another one, which is safe for the stateless
# 2026-07-28 era because every request there is self-contained. "retries 3" bounds it.
# http-server-close: one server connection per request. With reused server connections
# HAProxy answers a request whose reused connection died by closing the *client's*
# connection without a response (keep-alive semantics: it expects the client to resend),
# and an HTTP client does not resend a POST; a fresh connection fails as conn-failure,
# which HAProxy retries itself. http-buffer-request: the whole request is in HAProxy's
# buffer before a server is picked, so a retry (after a replica died between accepting and
# answering) can always resend it. The access log (haproxy.log) shows each retry.
HAPROXY_CFG = """\
global
    maxconn 512
    log stdout format raw local0 info
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    option http-server-close
    option http-buffer-request
    log global
    option httplog
frontend funnel
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    # Which replica answered (tests steer the round robin with it; not needed in production).
    http-response set-header X-Replica %s
    option httpchk
    http-check send meth GET uri /api/health/ready ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200
    default-server inter 200ms fall 1 rise 1
{servers}
"""


@dataclass
class Replica:
    """One ``funnel-server`` process."""

    index: int
    port: int
    process: anyio.abc.Process
    stderr: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


@dataclass
class Cluster:
    """The running deployment.

    Attributes:
        url: The balancer's base URL (the ``--public-url`` of every replica).
        redis_url: The shared state.
        replicas: The replica processes, in start order.
        haproxy: The balancer's process.
    """

    url: str
    redis_url: str
    replicas: list[Replica]
    haproxy: anyio.abc.Process
    state_key: str
    tmp: Path
    _stopped: set[int] = field(default_factory=set)

    @staticmethod
    def served_by(response: httpx.Response) -> int:
        """The index of the replica that answered ``response`` (HAProxy's ``X-Replica``)."""
        return int(response.headers["x-replica"].removeprefix("r"))

    def kill(self, index: int) -> None:
        """SIGKILL one replica (no drain, no goodbye)."""
        self.replicas[index].process.send_signal(signal.SIGKILL)
        self._stopped.add(index)

    async def terminate(self, index: int) -> int:
        """SIGTERM one replica and wait for it (bounded); its exit code."""
        process = self.replicas[index].process
        process.send_signal(signal.SIGTERM)
        self._stopped.add(index)
        with anyio.fail_after(30):
            return await process.wait()

    def client(self, **options: Any) -> httpx.AsyncClient:
        """An HTTP client of the balancer with the API token."""
        return httpx.AsyncClient(base_url=self.url, headers=AUTH, timeout=30, **options)

    def logs(self) -> str:
        return "\n".join(f"--- replica {r.index}\n{r.log()}" for r in self.replicas)


async def _stop(process: anyio.abc.Process, sig: signal.Signals = signal.SIGTERM) -> None:
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(sig)
            with anyio.move_on_after(20):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _ready(base: str, process: anyio.abc.Process, what: str, path: str) -> None:
    """Poll ``path`` until 200 (bounded): the process says it is ready."""
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        with anyio.fail_after(30):
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"{what} exited with {process.returncode}")
                try:
                    if (await http.get(path)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.05)  # bounded readiness polling


ClusterFactory = Callable[..., AbstractAsyncContextManager[Cluster]]


@asynccontextmanager
async def replicas(
    config: Path,
    tmp: Path,
    *,
    count: int = 3,
    env: dict[str, str] | None = None,
    drain_timeout: float = 10.0,
) -> AsyncIterator[Cluster]:
    """Start redis-server, ``count`` replicas of ``config`` and HAProxy; stop them after."""
    haproxy = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if shutil.which("redis-server") is None or haproxy is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError("redis-server and haproxy must be installed in CI")
        pytest.skip("redis-server and haproxy are needed (apt-get install redis-server haproxy)")
    state_key = generate_state_key()
    lb_port = free_port()
    public = f"http://127.0.0.1:{lb_port}"
    processes: list[anyio.abc.Process] = []
    files: list[TextIO] = []
    with redis_server() as redis_url:
        try:
            started: list[Replica] = []
            for index in range(count):
                port = free_port()
                home = tmp / f"home-{index}"
                home.mkdir(parents=True, exist_ok=True)
                stderr_path = tmp / f"replica-{index}.stderr"
                stderr = stderr_path.open("w")
                files.append(stderr)
                process = await anyio.open_process(
                    [
                        FUNNEL,
                        "--config",
                        str(config),
                        "--port",
                        str(port),
                        "--shared-state",
                        redis_url,
                        "--public-url",
                        public,
                        "--drain-timeout",
                        str(drain_timeout),
                        "--log-level",
                        "DEBUG",
                    ],
                    env={
                        "PATH": os.environ.get("PATH", os.defpath),
                        "FUNNEL_API_TOKEN": API_TOKEN,
                        "FUNNEL_STATE_KEY": state_key,
                        "MCP_FUNNEL_HOME": str(home),
                        "MCP_FUNNEL_TOKEN_STORE": "file",
                        **(env or {}),
                    },
                    cwd=config.parent,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
                processes.append(process)
                started.append(Replica(index, port, process, stderr_path))
            for replica in started:
                await _ready(
                    replica.base, replica.process, f"replica {replica.index}", "/api/health/ready"
                )
            servers = "\n".join(f"    server r{r.index} 127.0.0.1:{r.port} check" for r in started)
            cfg = tmp / "haproxy.cfg"
            cfg.write_text(HAPROXY_CFG.format(port=lb_port, servers=servers))
            lb_log = (tmp / "haproxy.log").open("w")
            files.append(lb_log)
            lb = await anyio.open_process(
                [haproxy, "-f", str(cfg), "-db"],
                stdin=subprocess.DEVNULL,
                stdout=lb_log,
                stderr=lb_log,
            )
            processes.append(lb)
            await _ready(public, lb, "haproxy", "/api/health")
            yield Cluster(
                url=public,
                redis_url=redis_url,
                replicas=started,
                haproxy=lb,
                state_key=state_key,
                tmp=tmp,
            )
        finally:
            for process in reversed(processes):
                await _stop(process)
            for file in files:
                file.close()
