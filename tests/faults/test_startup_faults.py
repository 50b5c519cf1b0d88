"""Backends that fail while starting: funnel answers at once, serves the healthy backend,
and stays up."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.faults import PROBE, healthy_backend, hostile_backend, running_stdio

pytestmark = [pytest.mark.anyio, pytest.mark.npm]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["hang-init", "crash-init", "deep-init"])
async def test_a_backend_failing_at_start_delays_and_endangers_nothing(
    tmp_path: Path, mode: str
) -> None:
    config = {"servers": {"healthy": healthy_backend(), "broken": hostile_backend(mode)}}
    async with running_stdio(tmp_path, config, init_timeout=PROBE) as funnel:
        reply = await funnel.request("tools/list", {}, timeout=PROBE)
        names = {tool["name"] for tool in reply["result"]["tools"]}
        assert "healthy__echo" in names, names
        await funnel.assert_serving()
