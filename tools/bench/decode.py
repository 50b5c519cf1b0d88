"""Micro-benchmark: the cost of ``decode_message``, before and after, side by side.

Usage (from the repository root)::

    uv run --locked python tools/bench/decode.py                  # baseline: main
    uv run --locked python tools/bench/decode.py --baseline HEAD~3

The baseline is the ``_jsonrpc.py`` of another git revision, loaded from ``git show``
into a module of its own, so both versions run in this one process, interleaved in
rounds (machine noise lands on both sides of each ratio). A third column is the floor:
msgspec decoding the envelope alone, which no total decoder can beat; the last is the
new decoder with the fixed nesting bound (``max_depth=MAX_DEPTH``) a server applies to
its clients' input.

Messages: a small request, a ``tools/call`` result of about 2 KB, a non-ASCII result,
a 5,000-tool ``tools/list`` result (about 1.5 MB, thousands of brackets: the case that
needs the exact depth scan) and a 20-message batch. Nothing is asserted: figures are
printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

REPO = Path(__file__).resolve().parents[2]
MODULE = "packages/funnel-transports/src/funnel_transports/_jsonrpc.py"


def _load(revision: str | None) -> ModuleType:
    if revision is None:
        from funnel_transports import _jsonrpc

        return _jsonrpc
    source = subprocess.run(
        ["git", "show", f"{revision}:{MODULE}"], cwd=REPO, check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "_jsonrpc_baseline.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("_jsonrpc_baseline", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # msgspec resolves the Structs' annotations there
    spec.loader.exec_module(module)
    return module


def _messages() -> dict[str, bytes]:
    enc = msgspec.json.encode
    tool = {
        "name": "echo",
        "description": "Echoes back the input " * 4,
        "inputSchema": {
            "type": "object",
            "properties": {"message": {"type": "string", "description": "what to echo"}},
            "required": ["message"],
        },
    }
    call = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "hi"}, "_meta": {"progressToken": 7}},
    }
    result = {
        "jsonrpc": "2.0",
        "id": 7,
        "result": {"content": [{"type": "text", "text": "Echo: " + "lorem ipsum " * 160}]},
    }
    accented = {
        "jsonrpc": "2.0",
        "id": 8,
        "result": {"content": [{"type": "text", "text": "Grüße, 世界 " * 160}]},
    }
    listing = {
        "jsonrpc": "2.0",
        "id": 9,
        "result": {"tools": [dict(tool, name=f"tool_{i}") for i in range(5000)]},
    }
    batch = [dict(call, id=i) for i in range(20)]
    return {
        "request 0.1 KB": enc(call),
        "result 2 KB": enc(result),
        "non-ASCII result 3 KB": enc(accented),
        f"tools/list 5,000 tools {len(enc(listing)) // 1024} KB": enc(listing),
        "batch of 20": enc(batch),
    }


def _time(function: Callable[[bytes], Any], data: bytes, number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        function(data)
    return (time.perf_counter() - start) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    before = _load(args.baseline)
    after = _load(None)
    floor = before._any_decoder.decode  # the bare msgspec envelope decode

    def bounded(data: bytes) -> object:
        return after.decode_message(data, max_depth=after.MAX_DEPTH)

    print(f"python {sys.version.split()[0]}, msgspec {msgspec.__version__}")
    print(f"baseline: {args.baseline}; median of {args.rounds} rounds, microseconds per message")
    header = (
        f"{'message':<32}{'msgspec floor':>14}{'before':>10}{'after':>10}{'after/before':>14}"
        f"{'max_depth=128':>15}{'/before':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, data in _messages().items():
        number = max(20, 200_000 // max(len(data), 1))
        samples: dict[str, list[float]] = {"floor": [], "before": [], "after": [], "bounded": []}
        for _ in range(args.rounds):
            samples["floor"].append(_time(floor, data, number))
            samples["before"].append(_time(before.decode_message, data, number))
            samples["after"].append(_time(after.decode_message, data, number))
            samples["bounded"].append(_time(bounded, data, number))
        floor_us, before_us, after_us, bounded_us = (
            statistics.median(samples[k]) * 1e6 for k in ("floor", "before", "after", "bounded")
        )
        print(
            f"{name:<32}{floor_us:>14.2f}{before_us:>10.2f}{after_us:>10.2f}"
            f"{after_us / before_us:>13.2f}x{bounded_us:>15.2f}{bounded_us / before_us:>8.2f}x"
        )


if __name__ == "__main__":
    main()
