"""A stdio MCP test server (official SDK) whose ``pid`` tool answers its process id.

``python pid_server.py NAME…`` also offers a no-op tool per extra ``NAME``, so a test can
change a backend's tool list by changing its arguments.
"""

from __future__ import annotations

import os
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("pid-peer")


@server.tool()
def pid() -> str:
    """The server's process id."""
    return str(os.getpid())


def _add(name: str) -> None:
    def tool() -> str:
        return name

    server.add_tool(tool, name=name, description=f"The extra tool {name}.")


for _name in sys.argv[1:]:
    _add(_name)

if __name__ == "__main__":
    print(f"pid-peer {os.getpid()} ready", file=sys.stderr, flush=True)
    server.run("stdio")
