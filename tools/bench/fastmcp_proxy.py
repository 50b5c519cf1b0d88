"""A FastMCP proxy over stdio, as its documentation writes one: the peer in the benchmarks.

Usage: ``python fastmcp_proxy.py CONFIG.json`` where the config is an ``mcpServers``
object. It runs in an isolated environment the benchmark creates with
``uv tool run --from fastmcp==<pinned>`` (fastmcp is never part of funnel's lock), so this
file is only ever imported by that interpreter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    # Imported here, not at the top: this file is type-checked in funnel's environment,
    # which does not (and must not) have fastmcp.
    from fastmcp.server import create_proxy  # type: ignore[import-not-found]

    config = json.loads(Path(sys.argv[1]).read_text())
    proxy = create_proxy(config, name="bench-fastmcp-proxy")
    proxy.run(transport="stdio", show_banner=False)


if __name__ == "__main__":
    main()
