"""The installed ``funnel-server`` serves ``tools/list`` over stdio to the official MCP SDK.

Run by ``tools/release/check.py funnel-server`` with the Python of the fresh virtual
environment that holds the built wheels (and ``mcp`` from the package's test group):

    python stdio_smoke.py /path/to/venv/bin/funnel-server

It starts ``funnel-server --stdio`` in an empty directory (so the built-in demo config
runs) with a private funnel home, lists the tools with ``mcp.Client``, calls the demo's
``echo``, and checks that ``funnel-server tools`` reports the same number of tools the
client saw. Exits 0 on success, 1 with a message otherwise; bounded by a timeout.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters


async def check(executable: str, workdir: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(workdir),
        "MCP_FUNNEL_HOME": str(workdir / "home"),
        "MCP_FUNNEL_TOKEN_STORE": "memory",
    }
    params = StdioServerParameters(
        command=executable, args=["--stdio", "--port", "0"], env=env, cwd=str(workdir)
    )
    with anyio.fail_after(60):
        async with Client(params) as client:
            listed = await client.list_tools()
            names = sorted(tool.name for tool in listed.tools)
            if "demo__echo" not in names:
                raise SystemExit(f"stdio-smoke: demo__echo missing from tools/list: {names}")
            result = await client.call_tool("demo__echo", {"message": "hi"})
            text = " ".join(getattr(part, "text", "") for part in result.content)
            if "hi" not in text:
                raise SystemExit(f"stdio-smoke: demo__echo answered {text!r}")
    with anyio.fail_after(60):
        report = await anyio.run_process([executable, "tools"], cwd=workdir, env=env, check=False)
    stdout, stderr = report.stdout.decode(), report.stderr.decode()
    match = re.search(r"^(\d+) tools? exposed", stdout, re.MULTILINE)
    if report.returncode != 0 or match is None:
        raise SystemExit(
            f"stdio-smoke: funnel-server tools exited {report.returncode}:\n{stdout}\n{stderr}"
        )
    if int(match.group(1)) != len(names):
        raise SystemExit(
            f"stdio-smoke: funnel-server tools says {match.group(1)}, the client saw {len(names)}"
        )
    print(f"stdio-smoke: {executable} --stdio served {len(names)} tools: {', '.join(names)}")


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: stdio_smoke.py PATH/TO/funnel-server", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="stdio-smoke-") as tmp:
        anyio.run(check, sys.argv[1], Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
