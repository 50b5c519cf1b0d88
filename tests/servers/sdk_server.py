"""A dual-era MCP server built on the official Python SDK (``mcp`` 2.x), run over stdio.

Test peer only: it lets tests meet a server nobody on this project wrote, in both the
stateless (2026-07-28) and the handshake era.
"""

from __future__ import annotations

import os

import anyio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("sdk-peer", instructions="A test peer for funnel.")


@server.tool()
def echo(message: str) -> str:
    """Echo the message back."""
    # A test can tell two copies of this server apart by their echo (default "Echo").
    return f"{os.environ.get('SDK_PEER_ECHO', 'Echo')}: {message}"


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def slow(steps: int, ctx: Context) -> str:
    """Report progress for each step, then finish."""
    for step in range(1, steps + 1):
        await ctx.report_progress(step, steps, f"step {step}")
    return f"done after {steps} steps"


@server.tool()
async def chatty(message: str, ctx: Context) -> str:
    """Log ``message`` (info) while the call runs, then answer."""
    await ctx.info(message)
    return f"logged: {message}"


@server.tool()
async def wait_forever() -> str:
    """Never finish (until cancelled)."""
    await anyio.sleep_forever()
    return "unreachable"


@server.prompt()
def greeting(name: str) -> str:
    """Greet someone."""
    return f"Hello, {name}!"


@server.resource("memo://hello")
def hello() -> str:
    """A fixed memo."""
    return "hello from the sdk peer"


if __name__ == "__main__":
    server.run("stdio")
