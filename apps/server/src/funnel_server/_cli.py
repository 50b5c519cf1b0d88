"""The ``funnel-server`` command line.

``funnel-server --stdio`` serves the funnel to one MCP client on stdin/stdout; nothing
but MCP ever reaches stdout, every log line goes to stderr. ``funnel-server tools``
prints the tool surface and its size in tokens, ``funnel-server check`` tries every
backend and prints a status table. Plain ``funnel-server`` starts the funnel, shows what
it serves and how to connect a client.

Exit codes: 0 success; 1 a backend failed (``check``); 2 bad arguments or config.
With no config file anywhere, an embedded demo config with a built-in backend runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TextIO

import anyio
import msgspec

from funnel_proxy._config import load_config
from funnel_proxy._errors import ConfigError, ConfigNotFound
from funnel_proxy._funnel import Funnel
from funnel_proxy._models import FunnelConfig, ServerConfig, StdioTransport
from funnel_proxy._stdio_server import serve_stdio

__all__ = ["demo_config", "main"]

logger = logging.getLogger("funnel_server")

EXIT_OK = 0
EXIT_BACKEND_FAILED = 1
EXIT_USAGE = 2


def _version() -> str:
    try:
        return version("funnel-server")
    except PackageNotFoundError:  # a source tree without metadata
        return "0"


def demo_config() -> FunnelConfig:
    """The config used when there is none: the built-in demo backend only."""
    demo = StdioTransport(command=sys.executable, args=("-m", "funnel_server._demo"))
    return FunnelConfig(
        servers=(ServerConfig(name="demo", transport=demo),),
        default_passthrough_env=("PATH", "HOME"),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="funnel-server",
        description="funnel: many MCP servers behind one filtered, namespaced tool surface.",
    )
    parser.add_argument(
        "--config", metavar="PATH", help="the config file (default: ./.mcp-funnel.json)"
    )
    parser.add_argument(
        "--stdio", action="store_true", help="serve MCP on stdin/stdout (for desktop clients)"
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("FUNNEL_LOG_LEVEL", "INFO"),
        help="log level on stderr",
    )
    parser.add_argument("--version", action="version", version=f"funnel-server {_version()}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("tools", help="print the exposed tool surface and its size in tokens")
    sub.add_parser("check", help="validate the config, try every backend, print a status table")
    return parser


def _load(path: str | None) -> tuple[FunnelConfig, Path, str]:
    try:
        loaded = load_config(path)
    except ConfigNotFound:
        return demo_config(), Path.cwd(), "the built-in demo config (no .mcp-funnel.json found)"
    return loaded.config, loaded.base_dir, ", ".join(str(source) for source in loaded.sources)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``funnel-server``; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=str(args.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config, base_dir, source = _load(args.config)
    except ConfigError as exc:
        print(f"funnel-server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logger.info("config: %s", source)
    try:
        if args.stdio:
            return anyio.run(_serve_stdio, config, base_dir)
        if args.command == "check":
            return anyio.run(_check, config, base_dir, sys.stdout)
        return anyio.run(_tools, config, base_dir, sys.stdout, args.command != "tools")
    except KeyboardInterrupt:
        return EXIT_OK


async def _serve_stdio(config: FunnelConfig, base_dir: Path) -> int:
    async with Funnel(config, base_dir=base_dir) as funnel:
        await serve_stdio(funnel, version=_version())
    return EXIT_OK


def _estimate_tokens(payload: object) -> int:
    # About four bytes of JSON per token for the tokenizers of the common models.
    return len(msgspec.json.encode(payload)) // 4


async def _tools(config: FunnelConfig, base_dir: Path, out: TextIO, overview: bool) -> int:
    async with Funnel(config, base_dir=base_dir) as funnel:
        surface = funnel.surface
        exposed = surface.exposed_tools
        for state in funnel.states():
            detail = f" ({state.error})" if state.error and state.status != "connected" else ""
            print(f"{state.name}: {state.status}, {len(state.tools)} tools{detail}", file=out)
        print(file=out)
        for entry in surface.tools:
            mark = "+" if entry.exposed else "-"
            description = str(entry.definition.get("description") or "").split("\n", 1)[0]
            print(f"  {mark} {entry.name:<40} {description[:70]}", file=out)
        hidden = len(surface.tools) - len(exposed)
        print(
            f"\n{len(exposed)} tools exposed ({hidden} registered but not exposed), "
            f"about {_estimate_tokens(exposed)} tokens of tools/list",
            file=out,
        )
        if overview:
            print(
                "\nConnect an MCP client by adding to its config (.mcp.json, claude_desktop_config.json):\n"
                '  {"mcpServers": {"funnel": {"command": "uvx", "args": ["funnel-server", "--stdio"]}}}\n'
                "Add servers in ./.mcp-funnel.json (see the README). The HTTP app (dashboard, /mcp,\n"
                "/ws) is not part of this release yet.",
                file=out,
            )
    return EXIT_OK


async def _check(config: FunnelConfig, base_dir: Path, out: TextIO) -> int:
    async with Funnel(config, base_dir=base_dir) as funnel:
        states = funnel.states()
    width = max((len(state.name) for state in states), default=4)
    print(f"{'server':<{width}}  {'status':<13} tools  error", file=out)
    for state in states:
        print(
            f"{state.name:<{width}}  {state.status:<13} {len(state.tools):>5}  {state.error or ''}",
            file=out,
        )
    failed = [state for state in states if state.status not in ("connected", "disabled")]
    return EXIT_BACKEND_FAILED if failed else EXIT_OK
