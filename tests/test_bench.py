"""The benchmark harness keeps working: a tiny run checks every answer of every target.

Nothing here looks at a timing: the bench prints figures, the tests only prove that each
target was really driven and really answered the tool.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "tools" / "bench"


def _driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_driver", BENCH / "_driver.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def _check(result: Any = None, error: Any = None) -> Any:
    driver = _driver()
    checks = driver.Checks()
    raw = msgspec.Raw(msgspec.json.encode(result)) if result is not None else msgspec.Raw()
    err = msgspec.Raw(msgspec.json.encode(error)) if error is not None else msgspec.Raw()
    driver.check_call(raw, err, "m7", checks)
    return checks


def test_the_answer_check_accepts_the_echo_of_that_calls_argument() -> None:
    checks = _check({"content": [{"type": "text", "text": "Echo: m7"}]})
    assert (checks.checked, checks.failed) == (1, 0)


@pytest.mark.parametrize(
    ("result", "error"),
    [
        # What FastMCP answers for a tool it does not know: a result, not an error.
        ({"content": [{"type": "text", "text": "Unknown tool: echo"}], "isError": True}, None),
        ({"content": [{"type": "text", "text": "Echo: m7"}], "isError": True}, None),
        ({"content": [{"type": "text", "text": "Echo: m8"}]}, None),
        ({"content": []}, None),
        (None, {"code": -32601, "message": "Method not found"}),
        (None, None),
    ],
    ids=["fastmcp-unknown-tool", "is-error", "another-calls-echo", "no-content", "error", "empty"],
)
def test_the_answer_check_counts_anything_else_as_a_failure(result: Any, error: Any) -> None:
    checks = _check(result, error)
    assert (checks.checked, checks.failed) == (1, 1)
    assert checks.first_failure


@pytest.mark.npm
def test_a_tiny_bench_run_drives_every_target_and_checks_every_answer(
    everything_js: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", "--calls", "3", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(out.read_text())["sections"]
    fastmcp = shutil.which("uv") is not None

    calls = data["calls"]
    expected = {
        "server-everything directly",
        "relay, copies lines",
        "relay, msgspec envelope + id remap",
        "funnel-server --stdio",
    }
    assert expected <= set(calls)
    assert any(label.startswith("FastMCP") for label in calls) is fastmcp
    # warm-up 3 serial + 6 pipelined, then 2 rounds of 3 serial + 12 pipelined
    for label, figures in calls.items():
        assert figures["failure"] == "", label
        assert figures["failed"] == 0, label
        assert figures["checked"] == 3 + 6 + 2 * (3 + 12), label
        assert len(figures["p50_us"]) == len(figures["throughput"]) == 2, label

    http = data["http"]
    assert {
        "server-everything streamable HTTP",
        "funnel-server /mcp, 2025-11-25 sessions",
        "funnel-server /mcp, 2026-07-28 stateless",
    } <= set(http)
    assert any(label.startswith("FastMCP") for label in http) is fastmcp
    # warm-up 1 serial + 4 concurrent, then 2 rounds of 3 serial + 12 concurrent
    for label, figures in http.items():
        assert figures["failure"] == "", label
        assert figures["failed"] == 0, label
        assert figures["checked"] == 1 + 4 + 2 * (3 + 12), label

    startup = data["startup"]
    assert startup["funnel-server --stdio, 1 server-everything"]["tools"] > 13
    assert startup["funnel-server --stdio, 1 server-everything"]["rss_kib"] > 0
    assert data["surface"]["tools"] >= 5000
    assert data["memory"]["samples"]
