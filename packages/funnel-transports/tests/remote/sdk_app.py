"""An official-SDK (``mcp`` 2.x) server for the HTTP transport tests.

Loaded in-process (``build_app``, served by uvicorn in the test's task group) or run as
a child process (``python sdk_app.py PORT``) when a test must kill it.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer


def build_server() -> Any:
    server = MCPServer("sdk-http-peer")

    @server.tool()
    def echo(message: str) -> str:
        """Echo the message back."""
        return f"Echo: {message}"

    @server.tool()
    async def slow(steps: int, ctx: Context) -> str:
        """Report progress for each step, then finish."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
        return f"done after {steps} steps"

    @server.tool()
    async def hang(ctx: Context) -> str:
        """Report progress once, then never finish (until the stream closes)."""
        await ctx.report_progress(1, 2, "started")
        await anyio.sleep_forever()
        return "unreachable"

    @server.tool(name="grüße")
    def greet() -> str:
        """A tool whose name needs the Base64 header sentinel."""
        return "hallo"

    return server


def build_app(*, stateless: bool = True) -> Any:
    return build_server().streamable_http_app(stateless_http=stateless, host="127.0.0.1")


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(build_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
