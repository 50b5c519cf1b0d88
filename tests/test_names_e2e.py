"""Names end to end: two real stdio backends with the same tool, prompt and resource,
both transparent (``"prefix": ""``), behind ``funnel-server --stdio`` and driven by the
official SDK client; and ``funnel-server check`` reporting the conflicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters, types

from funnel_proxy import load_config
from funnel_server.testing import serving

pytestmark = pytest.mark.anyio

FUNNEL = str(Path(sys.executable).with_name("funnel-server"))


def env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "MCP_FUNNEL_HOME": str(tmp_path / "home"),
        "FUNNEL_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def config(tmp_path: Path, servers_dir: Path) -> Path:
    def sdk(echo: str, **extra: str) -> dict[str, object]:
        return {
            "command": sys.executable,
            "args": [str(servers_dir / "sdk_server.py")],
            "env": {"SDK_PEER_ECHO": echo},
            **extra,
        }

    path = tmp_path / ".mcp-funnel.json"
    # "zeta" comes first in the file, so it keeps the plain names although "alpha"
    # sorts first: the config order decides.
    path.write_text(
        json.dumps(
            {
                "servers": {
                    "zeta": sdk("Zeta", prefix=""),
                    "alpha": sdk("Alpha", prefix=""),
                    "named": sdk("Named", prefix="n"),
                },
                "exposeCoreTools": [],
            }
        )
    )
    return path


async def test_two_transparent_backends_with_the_same_names_both_stay_reachable(
    config: Path, tmp_path: Path
) -> None:
    params = StdioServerParameters(
        command=FUNNEL,
        args=["--stdio", "--config", str(config)],
        env=env(tmp_path),
        cwd=str(tmp_path),
    )
    expected = sorted(
        [  # the SDK peer's tools (tests/servers/sdk_server.py), three times
            f"{prefix}{tool}"
            for prefix in ("", "alpha__", "n__")
            for tool in ("echo", "add", "slow", "chatty", "wait_forever")
        ]
    )
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        nonlocal changed
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()
            changed = anyio.Event()

    with anyio.fail_after(60):
        async with Client(params, mode="legacy", message_handler=on_message) as client:
            # funnel answers before its backends are up and announces them with list_changed.
            while True:
                announced = changed  # taken before listing: no announcement slips between
                names = sorted(tool.name for tool in (await client.list_tools()).tools)
                if names == expected:
                    break
                assert set(names) <= set(expected)
                await announced.wait()
            texts = {}
            for name in ("echo", "alpha__echo", "n__echo"):
                result = await client.call_tool(name, {"message": "hi"})
                texts[name] = result.content[0].text  # type: ignore[union-attr]
            assert texts == {"echo": "Zeta: hi", "alpha__echo": "Alpha: hi", "n__echo": "Named: hi"}

            prompts = sorted(p.name for p in (await client.list_prompts()).prompts)
            assert prompts == ["alpha__greeting", "greeting", "n__greeting"]
            got = await client.get_prompt("alpha__greeting", {"name": "Ada"})
            assert "Hello, Ada!" in str(got.messages[0].content)

            # One URI, three servers: the first owns it; nothing is listed twice.
            resources = [str(r.uri) for r in (await client.list_resources()).resources]
            assert resources == ["memo://hello"]
            read = await client.read_resource("memo://hello")
            assert read.contents[0].text == "hello from the sdk peer"  # type: ignore[union-attr]


def test_check_reports_each_conflict_and_how_it_was_resolved(config: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [FUNNEL, "check", "--config", str(config)],
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # 5 tools + 1 prompt shared by zeta and alpha, 1 resource shared by all three (2 pairs)
    assert "8 name conflicts (the server listed first keeps the name):" in lines
    assert (
        '  tool "echo" is offered by zeta and alpha: zeta keeps the name, alpha\'s is "alpha__echo"'
        in lines
    )
    assert (
        '  prompt "greeting" is offered by zeta and alpha: zeta keeps the name, '
        'alpha\'s is "alpha__greeting"' in lines
    )
    assert (
        '  resource "memo://hello" is offered by zeta and alpha: zeta serves it, '
        "alpha's is not listed" in lines
    )
    assert (
        '  resource "memo://hello" is offered by zeta and named: zeta serves it, '
        "named's is not listed" in lines
    )


async def test_the_api_lists_the_conflicts_beside_servers_and_tools(config: Path) -> None:
    loaded = load_config(
        config, environ={**os.environ, "MCP_FUNNEL_HOME": str(config.parent / "home")}
    )
    with anyio.fail_after(60):
        async with (
            serving(loaded.config, api_token="t" * 32) as served,
            httpx.AsyncClient(base_url=served.base, headers=served.auth) as http,
        ):
            servers = (await http.get("/api/servers")).json()
            tools = (await http.get("/api/tools")).json()
    assert servers["conflicts"] == tools["conflicts"]
    assert len(servers["conflicts"]) == 8
    assert servers["conflicts"][0] == {
        "kind": "tool",
        "name": "add",
        "owner": "zeta",
        "server": "alpha",
        "resolved": "alpha__add",
        "message": 'tool "add" is offered by zeta and alpha: zeta keeps the name, '
        'alpha\'s is "alpha__add"',
    }
    by_name = {tool["name"]: tool for tool in tools["tools"]}
    assert by_name["alpha__echo"]["server"] == "alpha"
    assert by_name["alpha__echo"]["original"] == "echo"
