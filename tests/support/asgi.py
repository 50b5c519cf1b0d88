"""An ASGI app (funnel's ``McpHttpEndpoint`` above all) served by uvicorn on 127.0.0.1.

Importable as ``support.asgi`` (``tests/`` is on pytest's ``pythonpath``). The listening
socket is bound (with ``IPPROTO_TCP``, so TCP_NODELAY applies) and listening before
uvicorn starts: connections queue in its backlog until uvicorn accepts them, so a test can
connect at once, with no readiness wait.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn

from funnel_proxy import Funnel, FunnelConfig, McpHttpEndpoint

__all__ = ["serve_asgi", "serve_funnel"]


@asynccontextmanager
async def serve_asgi(
    app: Any, *, before_stop: Callable[[], None] | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends; yields its base URL (``http://127.0.0.1:PORT``).

    Args:
        app: The ASGI application.
        before_stop: Called before uvicorn is told to stop (end long-lived streams, such
            as an endpoint's GET streams, so that it can).
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(app, log_config=None, log_level="warning", lifespan="off")
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [listener])
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                if before_stop is not None:
                    before_stop()
                server.should_exit = True
    finally:
        listener.close()


@asynccontextmanager
async def serve_funnel(
    config: FunnelConfig, environ: Mapping[str, str], **endpoint_options: Any
) -> AsyncIterator[tuple[str, McpHttpEndpoint]]:
    """A running :class:`Funnel` of ``config`` behind an ``McpHttpEndpoint``; yields its URL and it."""
    async with Funnel(config, environ=environ) as funnel:
        endpoint = McpHttpEndpoint(funnel, version="test", **endpoint_options)
        async with serve_asgi(endpoint, before_stop=endpoint.close_all) as base:
            yield f"{base}/mcp", endpoint
