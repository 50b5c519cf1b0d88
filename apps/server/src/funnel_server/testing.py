"""Test helpers: run the whole app (funnel + Litestar + uvicorn) on a free loopback port.

:func:`serving` is what this package's own tests use, and what a program embedding
funnel-server can use in its tests::

    async with serving(config, api_token="a-long-random-test-token") as served:
        httpx.get(f"{served.base}/api/servers", headers=served.auth)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from litestar import Litestar

from funnel_proxy import FunnelConfig
from funnel_server._app import AppSettings, create_app
from funnel_server._calls import ServerFunnel
from funnel_server._cli import demo_config
from funnel_server._logs import LogBuffer
from funnel_server._serve import bind, running_server

__all__ = ["Served", "serving"]


@dataclass(frozen=True)
class Served:
    """A running app.

    Attributes:
        base: Its base URL (``http://127.0.0.1:<port>``).
        port: The port.
        token: The API token.
        funnel: The funnel behind it.
        app: The Litestar app.
    """

    base: str
    port: int
    token: str
    funnel: ServerFunnel
    app: Litestar

    @property
    def auth(self) -> dict[str, str]:
        """The ``Authorization`` header."""
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def ws_url(self) -> str:
        """The ``/ws`` URL."""
        return f"ws://127.0.0.1:{self.port}/ws"


@asynccontextmanager
async def serving(
    config: FunnelConfig | None = None,
    *,
    api_token: str,
    funnel_options: dict[str, Any] | None = None,
    funnel_class: type[ServerFunnel] = ServerFunnel,
    **settings: Any,
) -> AsyncIterator[Served]:
    """Run funnel and the app on 127.0.0.1 (a free port) for the duration of the block.

    Args:
        config: The funnel config (default: the built-in demo).
        api_token: The inbound API token.
        funnel_options: Further :class:`ServerFunnel` options (``ready_timeout``, …).
        funnel_class: The funnel class (a subclass can stand in for an authorization flow).
        **settings: Further :class:`AppSettings` fields.
    """
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    # As funnel-server does: OAuth logins come back to this server's own callback.
    options: dict[str, Any] = {
        "ready_timeout": 20.0,
        "redirect_uri": f"http://localhost:{port}/api/oauth/callback",
        **(funnel_options or {}),
    }
    try:
        # The log view's buffer is capturing before the backends start (their first lines).
        with LogBuffer() as logs:
            async with funnel_class(config or demo_config(), **options) as funnel:
                app = create_app(funnel, AppSettings(api_token=api_token, **settings), logs=logs)
                async with running_server(app, sock):
                    yield Served(f"http://127.0.0.1:{port}", port, api_token, funnel, app)
    finally:
        sock.close()
