"""``/mcp`` throughput through HAProxy with 1 and 3 funnel-server replicas sharing Redis.

Each row starts a throwaway ``redis-server``, N ``funnel-server`` processes (the
built-in demo backend, ``--shared-state``, the same ``FUNNEL_API_TOKEN`` and
``FUNNEL_STATE_KEY``) and HAProxy in front (round robin, the readiness check of
``examples/deploy/haproxy.cfg``), all on 127.0.0.1; a first row calls one replica
without the balancer. The client sends stateless
(2026-07-28) ``tools/call`` requests of ``demo__echo`` from ``--concurrency`` keep-alive
connections, after a warm-up, and prints calls per second and the median latency.

    uv run --locked python tools/bench/balancer.py                 # 3000 calls per row
    uv run --locked python tools/bench/balancer.py --calls 1000 --concurrency 8

On a 2-core machine the replicas, HAProxy, Redis and this client share the same two
cores: three replicas cannot be faster than one there, and the row shows what the
balancer hop and the shared state cost, not scaling. Nothing asserts a timing; this is
a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import anyio
import httpx

from funnel_tokenstore import generate_state_key
from funnel_tokenstore.testing import redis_server

TOKEN: Final = "bench-replicas-token-0123456789abcdef"
FUNNEL: Final = str(Path(sys.executable).with_name("funnel-server"))
HAPROXY: Final = """\
global
    maxconn 1024
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
frontend funnel
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk
    http-check send meth GET uri /api/health/ready ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200
    default-server inter 1s fall 2 rise 1
{servers}
"""
CALL: Final = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {
        "name": "demo__echo",
        "arguments": {"message": "hi"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    },
}
HEADERS: Final = {
    "Authorization": f"Bearer {TOKEN}",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/call",
    "Mcp-Name": "demo__echo",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} never became ready")


@contextmanager
def deployment(count: int, tmp: Path, *, direct: bool = False) -> Iterator[str]:
    """Redis, ``count`` replicas and HAProxy; yields the balancer's URL (or, ``direct``,
    the first replica's, for the row without the balancer hop)."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    processes: list[subprocess.Popen[bytes]] = []
    lb_port = _free_port()
    key = generate_state_key()
    with redis_server() as redis_url:
        try:
            ports = []
            for index in range(count):
                port = _free_port()
                ports.append(port)
                env = {
                    "PATH": os.environ.get("PATH", os.defpath),
                    "FUNNEL_API_TOKEN": TOKEN,
                    "FUNNEL_STATE_KEY": key,
                    "MCP_FUNNEL_HOME": str(tmp / f"home-{count}-{index}"),
                    "FUNNEL_LOG_LEVEL": "WARNING",
                }
                processes.append(
                    subprocess.Popen(
                        [FUNNEL, "--port", str(port), "--shared-state", redis_url],
                        env=env,
                        cwd=tmp,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            for port, process in zip(ports, processes, strict=True):
                _wait_ready(f"http://127.0.0.1:{port}/api/health/ready", process)
            servers = "\n".join(
                f"    server r{i} 127.0.0.1:{port} check" for i, port in enumerate(ports)
            )
            cfg = tmp / f"haproxy-{count}.cfg"
            cfg.write_text(HAPROXY.format(port=lb_port, servers=servers))
            lb = subprocess.Popen(
                [haproxy, "-f", str(cfg), "-db"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            processes.append(lb)
            _wait_ready(f"http://127.0.0.1:{lb_port}/api/health", lb)
            yield f"http://127.0.0.1:{ports[0] if direct else lb_port}"
        finally:
            for process in reversed(processes):
                process.terminate()
            for process in reversed(processes):
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


async def load(url: str, calls: int, concurrency: int) -> tuple[float, float]:
    """Calls per second and median latency (ms) for ``calls`` calls."""
    latencies: list[float] = []
    remaining = calls

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            response = await http.post("/mcp", json=CALL, headers=HEADERS)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200 or "error" in response.json():
                raise RuntimeError(f"call failed: {response.status_code} {response.text[:200]}")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker, http)
        elapsed = time.perf_counter() - started
    return calls / elapsed, statistics.median(latencies) * 1000


async def row(
    count: int, calls: int, concurrency: int, tmp: Path, direct: bool
) -> tuple[float, float]:
    with deployment(count, tmp, direct=direct) as url:
        await load(url, max(100, calls // 10), concurrency)  # warm-up: connections, imports
        return await load(url, calls, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(
        f"/mcp tools/call demo__echo through HAProxy, {args.concurrency} connections, {os.cpu_count()} cores"
    )
    print(f"{'replicas':<24}  {'calls/s':>8}  {'median ms':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, count, direct in (
            ("1, no balancer", 1, True),
            ("1 behind HAProxy", 1, False),
            ("3 behind HAProxy", 3, False),
        ):
            rate, median = anyio.run(row, count, args.calls, args.concurrency, Path(tmp), direct)
            print(f"{label:<24}  {rate:>8.0f}  {median:>9.2f}")
    print("2 cores shared by everything: this shows the overhead of replicas, not scaling.")


if __name__ == "__main__":
    main()
