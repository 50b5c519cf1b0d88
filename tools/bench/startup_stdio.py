"""``funnel-server --stdio`` start-up over one stdio backend: time to the first tools/list, RSS.

    uv run --locked python tools/bench/startup_stdio.py                 # 10 rounds
    uv run --locked python tools/bench/startup_stdio.py --before /tmp/base

A bare driver (a subprocess and JSON lines, no client library) starts each target,
sends ``initialize``, ``notifications/initialized`` and ``tools/list``, and takes the
wall time from starting the process to the ``tools/list`` answer. Targets, in rounds
that visit them in a new random order:

- **backend alone**: ``backend.py`` (stdlib Python, the cheapest stdio server there is);
  its start time is what funnel's is held against (the target is backend + 0.3 s);
- **funnel**: ``python -m funnel_server --stdio --port 0`` over that backend (the web
  app listening too, as desktop clients run it), from this source tree;
- **funnel before** (with ``--before DIR``): the same from another source tree, e.g.
  ``git archive 777631b | tar -x -C /tmp/base``, put first on ``PYTHONPATH``.

After the answer the process is left idle for ``--idle`` seconds, then its RSS
(``VmRSS`` in ``/proc/PID/status``) is read. Medians are printed; nothing asserts a
timing. Only stdio and 127.0.0.1 traffic; every process is stopped after its round.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

BENCH = Path(__file__).resolve().parent
BACKEND = BENCH / "backend.py"
MEMBERS = ("apps/server", *(f"packages/{m}" for m in ("funnel-tokenstore", "funnel-auth",
           "funnel-transports", "funnel-proxy")))  # fmt: skip


def _send(pipe: IO[bytes], message: dict[str, Any]) -> None:
    pipe.write(json.dumps(message).encode() + b"\n")
    pipe.flush()


def _answer(pipe: IO[bytes], request_id: int) -> dict[str, Any]:
    while True:
        line = pipe.readline()
        if not line:
            raise RuntimeError("the target closed stdout before answering")
        message: dict[str, Any] = json.loads(line)
        if message.get("id") == request_id:
            return message


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def measure(argv: list[str], env: dict[str, str], idle: float) -> tuple[float, float, int]:
    """Start ``argv``; return (s to initialize answer, s to tools/list answer, idle RSS KiB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(  # the bench's own targets
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        _send(proc.stdin, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"}}})  # fmt: skip
        _answer(proc.stdout, 1)
        initialized = time.perf_counter() - started
        _send(proc.stdin, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        _send(proc.stdin, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        tools = _answer(proc.stdout, 2)
        listed = time.perf_counter() - started
        if not any(t["name"].endswith("echo") for t in tools["result"]["tools"]):
            raise RuntimeError(f"{argv[:3]}: no echo tool in tools/list")
        time.sleep(idle)
        rss = _rss_kib(proc.pid)
        return initialized, listed, rss
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--idle", type=float, default=1.0, help="seconds idle before RSS")
    parser.add_argument("--before", type=Path, help="another source tree to measure beside")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="funnel-bench-startup-") as tmp:
        config = Path(tmp) / "config.json"
        backend = {"command": sys.executable, "args": [str(BACKEND)]}
        config.write_text(json.dumps({"servers": {"bench": backend}}))
        env = {
            **os.environ,
            "MCP_FUNNEL_HOME": str(Path(tmp) / "home"),
            "FUNNEL_LOG_LEVEL": "WARNING",
        }
        funnel = [sys.executable, "-m", "funnel_server", "--stdio", "--config", str(config),
                  "--port", "0"]  # fmt: skip
        targets: dict[str, tuple[list[str], dict[str, str]]] = {
            "backend alone": ([sys.executable, str(BACKEND)], env),
            "funnel": (funnel, env),
        }
        if args.before:
            paths = [str(args.before / member / "src") for member in MEMBERS]
            old = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
            targets["funnel before"] = (funnel, {**env, "PYTHONPATH": old})
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            order = list(targets.items())
            random.shuffle(order)
            for name, (argv, target_env) in order:
                results[name].append(measure(argv, target_env, args.idle))
    print(f"start-up to the first tools/list, one stdio backend, {args.rounds} rounds (median)")
    print(f"  {'target':<16} {'initialize':>11} {'tools/list':>11} {'idle RSS':>10}")
    for name, values in results.items():
        init = statistics.median(v[0] for v in values) * 1000
        listed = statistics.median(v[1] for v in values) * 1000
        rss = statistics.median(v[2] for v in values) / 1024
        print(f"  {name:<16} {init:>9.0f}ms {listed:>9.0f}ms {rss:>7.1f}MiB")
    alone = statistics.median(v[1] for v in results["backend alone"])
    for name in ("funnel", "funnel before"):
        if name in results:
            extra = statistics.median(v[1] for v in results[name]) - alone
            print(f"  {name}: backend + {extra * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
