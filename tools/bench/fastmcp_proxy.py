"""A FastMCP proxy, as its documentation writes one: the peer in the benchmarks.

Usage: ``python fastmcp_proxy.py CONFIG.json [--http PORT]`` where the config is an
``mcpServers`` object. Without ``--http`` it serves stdio; with it, FastMCP's streamable
HTTP transport on ``127.0.0.1:PORT/mcp`` (its defaults otherwise). It runs in an isolated
environment the benchmark creates with ``uv tool run --from fastmcp==<pinned>`` (fastmcp
is never part of funnel's lock), so this file is only ever imported by that interpreter.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--http", type=int, metavar="PORT")
    args = parser.parse_args()
    # Imported here, not at the top: this file is type-checked in funnel's environment,
    # which does not (and must not) have fastmcp.
    from fastmcp.server import create_proxy  # type: ignore[import-not-found]

    config = json.loads(Path(args.config).read_text())
    proxy = create_proxy(config, name="bench-fastmcp-proxy")
    if args.http is None:
        proxy.run(transport="stdio", show_banner=False)
    else:
        proxy.run(transport="http", host="127.0.0.1", port=args.http, show_banner=False)


if __name__ == "__main__":
    main()
