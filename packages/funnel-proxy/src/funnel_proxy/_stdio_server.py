"""Serving the funnel to one MCP client over this process's stdin and stdout.

stdout carries MCP and nothing else: every log line goes to stderr (the app configures
logging that way), and responses are written whole, one per line, under a lock.
Each request runs in its own task, so a slow tool never delays the answers to others.
"""

from __future__ import annotations

import logging
import sys
from typing import BinaryIO

import anyio

from funnel_proxy._dispatcher import McpServerSession
from funnel_proxy._funnel import Funnel
from funnel_transports import (
    DecodeError,
    LineFramer,
    Message,
    MessageTooLarge,
    decode_message,
    encode_message,
)

__all__ = ["serve_stdio"]

logger = logging.getLogger("funnel_proxy.server")

_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
_READ_SIZE = 65536


async def serve_stdio(
    funnel: Funnel,
    *,
    version: str,
    instructions: str | None = None,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
) -> None:
    """Serve MCP on stdin/stdout until stdin ends.

    Args:
        funnel: The running funnel.
        version: funnel's version for server info.
        instructions: Instructions for models, sent on ``initialize``.
        stdin: Where requests come from (default: this process's stdin).
        stdout: Where answers go (default: this process's stdout).
    """
    reader = anyio.wrap_file(stdin or sys.stdin.buffer)
    writer = anyio.wrap_file(stdout or sys.stdout.buffer)
    lock = anyio.Lock()

    async def send(message: Message) -> None:
        data = encode_message(message) + b"\n"
        async with lock:
            await writer.write(data)
            await writer.flush()

    session = McpServerSession(funnel, send, version=version, instructions=instructions)
    framer = LineFramer(_MAX_MESSAGE_SIZE, peer="the client")
    async with anyio.create_task_group() as tg:
        tg.start_soon(session.watch)
        while True:
            chunk = await reader.read1(_READ_SIZE)
            if not chunk:
                break
            try:
                lines = framer.feed(chunk)
            except MessageTooLarge as exc:
                logger.error("%s; closing the stdio session", exc)
                break
            for line in lines:
                try:
                    decoded = decode_message(line)
                except DecodeError as exc:
                    tg.start_soon(session.handle, exc)
                    continue
                for message in decoded if isinstance(decoded, list) else [decoded]:
                    tg.start_soon(session.handle, message)
        logger.info("the MCP client closed stdin; shutting down")
        tg.cancel_scope.cancel()
