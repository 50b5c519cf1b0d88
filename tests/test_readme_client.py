"""The README's desktop-client snippet for a clone works as written, with the official SDK."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def snippet(marker: str) -> dict[str, object]:
    """The first JSON block after the paragraph that contains ``marker``."""
    after = README.split(marker, 1)[1]
    block = re.search(r"```json\n(.*?)```", after, flags=re.S)
    assert block is not None, marker
    server: dict[str, object] = json.loads(block.group(1))["mcpServers"]["funnel"]
    return server


def test_the_snippets_use_stdio() -> None:
    for marker in ("From a clone", "From PyPI"):
        assert "--stdio" in snippet(marker)["args"]  # type: ignore[operator]


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH")
async def test_the_clone_snippet_serves_tools_to_a_client(tmp_path: Path) -> None:
    server = snippet("From a clone")
    args = [str(REPO) if arg == "/path/to/funnel" else str(arg) for arg in server["args"]]  # type: ignore[attr-defined]
    assert str(REPO) in args, "the snippet names the clone's path"
    (tmp_path / ".mcp-funnel.json").write_text(
        json.dumps(
            {"servers": {"mine": {"command": "python3", "args": ["-m", "funnel_server._demo"]}}}
        )
    )
    env = {
        **os.environ,
        "MCP_FUNNEL_HOME": str(tmp_path / "home"),
        "MCP_FUNNEL_TOKEN_STORE": "memory",
    }
    env.pop("VIRTUAL_ENV", None)
    params = StdioServerParameters(
        command=str(server["command"]), args=args, env=env, cwd=str(tmp_path)
    )
    with anyio.fail_after(120):
        async with Client(params) as client:
            tools = await client.list_tools()
    names = {tool.name for tool in tools.tools}
    # The project's own .mcp-funnel.json (in the client's working directory) was used.
    assert "mine__echo" in names, names
