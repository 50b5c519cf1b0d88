"""The per-call cost of the audit log, before and after the writer thread, in one run.

    uv run --locked python tools/bench/audit.py              # 10 rounds of 20,000 events
    uv run --locked python tools/bench/audit.py --rounds 4 --events 5000

Each round writes the same ``tool.call`` event (the one every tool call writes, fields
as ``ServerFunnel.call_tool`` passes them) ``--events`` times through each
implementation, in a new random order per round, each into a fresh funnel home, with
the stderr copy going to ``/dev/null``:

- **before**: ``_audit_before.py``, the code of commit 777631b (``logging``, redaction
  of every field and of the formatted record on the caller's thread, a
  ``RotatingFileHandler`` and a stderr handler at INFO);
- **after**: ``funnel_server._audit`` as it is (a bounded queue and a writer thread).

Printed per event, median over rounds: the caller's wall time (what a tool call waits
for) and the process CPU time including the writer thread, measured from the first
event until everything is on disk (``close``). A benchmark, not a test: nothing asserts
a timing. Only files in a temporary directory are written.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _audit_before as before

from funnel_server import _audit as after


def _event(write: Callable[..., None], n: int) -> None:
    for _ in range(n):
        write(
            "tool.call",
            outcome="success",
            duration_ms=0.3,
            reason=None,
            server="everything",
            tool="everything__echo",
            client="stdio",
        )


def run_before(home: Path, n: int) -> tuple[float, float]:
    with Path("/dev/null").open("w") as null:
        handlers = before.configure(home, null)
        cpu, wall = time.process_time(), time.perf_counter()
        _event(before.audit, n)
        caller = time.perf_counter() - wall
        before.remove(handlers)
        return caller / n, (time.process_time() - cpu) / n


def run_after(home: Path, n: int) -> tuple[float, float]:
    with Path("/dev/null").open("w") as null:
        # A queue as long as the round: a tight loop outruns any disk, and dropped events
        # would not be formatted, which would flatter the figure.
        log = after.configure_audit_log(
            home, stream=null, stream_level=logging.WARNING, max_queue=n + 1
        )
        cpu, wall = time.process_time(), time.perf_counter()
        _event(after.audit, n)
        caller = time.perf_counter() - wall
        after.remove_audit_handlers(log)
        if log.dropped:
            print(f"  (after: {log.dropped} events dropped, queue full)")
        return caller / n, (time.process_time() - cpu) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    runs = {"before": run_before, "after": run_after}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory(prefix="funnel-bench-audit-") as tmp:
        for index in range(args.rounds):
            order = list(runs.items())
            random.shuffle(order)
            for name, run in order:
                results[name].append(run(Path(tmp) / f"{name}-{index}", args.events))
        lines = {
            name: sum(
                len(path.read_text().splitlines())
                for path in (Path(tmp) / f"{name}-0").glob("audit.log*")
            )
            for name in runs
        }
    print(f"audit event tool.call, {args.rounds} rounds x {args.events} events")
    print(f"  {'':<8} {'caller µs/event':>16} {'CPU µs/event':>14}  lines written in round 1")
    for name, values in results.items():
        caller = statistics.median(v[0] for v in values) * 1e6
        cpu = statistics.median(v[1] for v in values) * 1e6
        print(f"  {name:<8} {caller:>16.2f} {cpu:>14.2f}  {lines[name]}")
    b, a = (statistics.median(v[1] for v in results[k]) for k in ("before", "after"))
    print(f"  CPU per event: after = {a / b:.2f}x before ({b / a:.1f}x less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
