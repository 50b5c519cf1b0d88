"""``rateLimits``: the per-tool limits every Funnel enforces, pure and over a real backend."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from funnel_proxy import (
    RATE_LIMITED,
    Funnel,
    RateLimit,
    RateLimits,
    ToolCallLimits,
    ToolRateLimited,
    parse_config,
)

SERVERS = Path(__file__).resolve().parents[3] / "tests" / "servers"


def test_every_matching_limit_counts_a_call_and_a_refusal_counts_nowhere() -> None:
    now = [0.0]
    limits = ToolCallLimits(
        RateLimits(
            tools={
                "demo__*": RateLimit(calls=3, per_seconds=60),
                "demo__echo": RateLimit(calls=1, per_seconds=10),
            }
        ),
        clock=lambda: now[0],
    )
    assert limits.acquire("demo__echo") == 0
    assert limits.acquire("demo__echo") == pytest.approx(10)
    assert limits.acquire("demo__add") == 0, "the refused echo did not use up demo__*"
    assert limits.acquire("demo__add") == 0
    assert limits.acquire("demo__add") == pytest.approx(60)
    assert limits.acquire("other__tool") == 0, "unmatched tools are unlimited"
    now[0] = 60.0
    assert limits.acquire("demo__echo") == 0
    assert not ToolCallLimits(RateLimits())


@pytest.mark.anyio
async def test_a_plain_funnel_enforces_the_configured_limits_on_every_call() -> None:
    now = [0.0]
    config = parse_config(
        {
            "servers": {
                "sdk": {"command": sys.executable, "args": [str(SERVERS / "sdk_server.py")]}
            },
            "rateLimits": {"tools": {"sdk__echo": {"calls": 2, "perSeconds": 30}}},
        },
        environ={"PATH": os.environ["PATH"]},
    )
    with anyio.fail_after(60):
        async with Funnel(
            config, environ={"PATH": os.environ["PATH"]}, clock=lambda: now[0]
        ) as funnel:
            entry = funnel.resolve_tool("sdk__echo")
            for _ in range(2):
                await funnel.call_tool(entry, {"message": "hi"})
            with pytest.raises(ToolRateLimited) as refused:
                await funnel.call_tool(entry, {"message": "one too many"})
            assert refused.value.code == RATE_LIMITED
            assert refused.value.retry_after == pytest.approx(30)
            now[0] = 30.0
            await funnel.call_tool(entry, {"message": "the window moved on"})
            # A reload with other limits starts the counts afresh.
            relaxed = parse_config(
                {
                    "servers": {
                        "sdk": {"command": sys.executable, "args": [str(SERVERS / "sdk_server.py")]}
                    },
                    "rateLimits": {"tools": {"sdk__echo": {"calls": 5, "perSeconds": 30}}},
                },
                environ={"PATH": os.environ["PATH"]},
            )
            await funnel.apply_config(relaxed)
            assert funnel.limits.config.tools["sdk__echo"].calls == 5
            await funnel.call_tool(funnel.resolve_tool("sdk__echo"), {"message": "fresh counts"})
