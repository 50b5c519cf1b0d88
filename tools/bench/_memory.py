"""Memory as backends come and go: RSS of a funnel process across reconnect cycles.

Theory of operation: ``funnel-server --stdio`` fronts one ``backend.py --exit-after 5``,
which exits right after answering its fifth ``tools/call``. funnel sees the exit, drops
the backend's tools, reconnects after a 10 ms backoff (a new process, handshake, lists)
and publishes the tools again. The client calls ``echo`` until a call fails, then retries
(a bounded poll) until one succeeds again: that is one cycle. The RSS of the funnel
process is read from ``/proc`` after it connected, after a warm-up of cycles (imports and
caches that are paid once), and at the end. Flat memory means the growth from the
warm-up sample to the end is within allocator noise, not proportional to the cycles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from _common import Section, Workspace, backend_command, funnel_command, rss_kib
from _driver import Checks, PeerError, StdioPeer

CALLS_PER_LIFE = 5


@dataclass(frozen=True, slots=True)
class Plan:
    """How many reconnect cycles, and after how many the warm-up sample is taken."""

    cycles: int
    warmup: int


def _cycle(peer: StdioPeer) -> None:
    """Call until the backend's life ends (a failed answer), then until it is back."""
    deadline = time.monotonic() + 30
    checks = Checks()
    for _ in range(CALLS_PER_LIFE * 4):
        peer.serial(1, checks)
        if checks.failed:
            break
    while True:
        before = checks.failed
        peer.serial(1, checks)
        if checks.failed == before:
            return
        if time.monotonic() > deadline:
            raise PeerError(f"the backend did not come back in 30 s: {checks.first_failure}")
        time.sleep(0.005)


def measure(ws: Workspace, plan: Plan) -> Section:
    """Run the cycles and render the table."""
    command = funnel_command(
        ws,
        {"churn": backend_command("--exit-after", str(CALLS_PER_LIFE))},
        autoReconnect={"initialDelayMs": 10, "maxDelayMs": 10, "jitter": 0, "maxAttempts": 100},
    )
    samples: list[tuple[str, int, float]] = []
    with command.peer("funnel-churn", ws) as peer:
        peer.open()
        start = time.perf_counter()
        samples.append(("connected, 0 cycles", rss_kib(peer.pid), 0.0))
        for done in range(1, plan.cycles + 1):
            _cycle(peer)
            if done in (plan.warmup, plan.cycles) or done == plan.cycles // 2:
                samples.append(
                    (f"after {done} cycles", rss_kib(peer.pid), time.perf_counter() - start)
                )
    warm = next(kib for label, kib, _ in samples if label == f"after {plan.warmup} cycles")
    rows = [
        [label, f"{kib / 1024:.1f}", f"{(kib - warm) / 1024:+.1f}", f"{elapsed:.1f}"]
        for label, kib, elapsed in samples
    ]
    per_100 = (samples[-1][1] - warm) / max(1, plan.cycles - plan.warmup) * 100
    return Section(
        title=(
            f"Memory: RSS of funnel-server --stdio while its backend exits every "
            f"{CALLS_PER_LIFE} calls and is reconnected"
        ),
        headers=["when", "RSS MiB", "vs warm-up MiB", "seconds"],
        rows=rows,
        notes=["", f"growth after warm-up: {per_100:+.0f} KiB per 100 reconnect cycles"],
        data={"kib_per_100_cycles": per_100, "samples": samples},
    )
