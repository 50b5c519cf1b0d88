"""Live config: edits and SIGHUP reload a running funnel; a broken edit is rejected."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from funnel_proxy import load_config
from funnel_server._calls import ServerFunnel
from funnel_server._live_config import ConfigWatcher, watching_config

pytestmark = pytest.mark.anyio


def peer(servers_dir: Path, *tools: str) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(servers_dir / "pid_server.py"), *tools]}


def write(path: Path, data: dict[str, Any]) -> None:
    # Replace the file as editors do (a new inode), so the change is seen whatever the
    # filesystem's timestamp granularity.
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)


@asynccontextmanager
async def live(path: Path) -> AsyncIterator[tuple[ServerFunnel, ConfigWatcher]]:
    loaded = load_config(path)
    async with (
        ServerFunnel(loaded.config, base_dir=loaded.base_dir, ready_timeout=20) as funnel,
        watching_config(funnel, path, poll_interval=0.02) as watcher,
    ):
        yield funnel, watcher


def tools(funnel: ServerFunnel) -> list[str]:
    return [entry.name for entry in funnel.surface.tools if entry.exposed]


async def connected(funnel: ServerFunnel, server: str) -> None:
    async with funnel.events() as events:
        with anyio.fail_after(10):
            while next(s for s in funnel.states() if s.name == server).status != "connected":
                await events.receive()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_FUNNEL_HOME", str(tmp_path / "home"))


async def test_an_edited_file_is_applied_and_a_broken_one_is_rejected(
    tmp_path: Path, servers_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / ".mcp-funnel.json"
    write(path, {"servers": {"a": peer(servers_dir, "x")}})
    async with live(path) as (funnel, watcher):
        assert tools(funnel) == ["a__pid", "a__x"]

        wait = watcher.reloaded
        write(path, {"servers": {"a": peer(servers_dir, "x")}, "hideTools": ["a__x"]})
        with anyio.fail_after(10):
            await wait.wait()
        assert tools(funnel) == ["a__pid"]

        wait = watcher.reloaded
        write(path, {"servers": {"a": {"command": ""}}, "hideTools": []})
        with anyio.fail_after(10):
            await wait.wait()
        rejected = [r for r in caplog.records if r.getMessage().startswith("config not reloaded")]
        assert len(rejected) == 1
        assert rejected[0].levelno == logging.ERROR
        message = rejected[0].getMessage()
        assert ".mcp-funnel.json" in message
        assert "servers.a.command" in message
        assert message.endswith("still serving the previous config")
        assert tools(funnel) == ["a__pid"], "the running config changed after a rejected edit"
        assert funnel.states()[0].status == "connected"


async def test_sighup_reloads_at_once(tmp_path: Path, servers_dir: Path) -> None:
    path = tmp_path / "funnel.json"
    write(path, {"servers": {"a": peer(servers_dir)}})
    loaded = load_config(path)
    async with (
        ServerFunnel(loaded.config, base_dir=loaded.base_dir, ready_timeout=20) as funnel,
        # No polling in this test: only the signal can cause the reload.
        watching_config(funnel, path, poll_interval=3600) as watcher,
    ):
        write(path, {"servers": {"a": peer(servers_dir), "b": peer(servers_dir)}})
        wait = watcher.reloaded
        os.kill(os.getpid(), signal.SIGHUP)
        with anyio.fail_after(10):
            await wait.wait()
        assert [state.name for state in funnel.states()] == ["a", "b"]
        await connected(funnel, "b")
        assert "b__pid" in tools(funnel)
