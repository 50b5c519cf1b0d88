"""funnel-server: the funnel over stdio and HTTP (REST API, /mcp, /ws, OAuth callback, dashboard).

Run it with the ``funnel-server`` command; embed the web app with :func:`create_app`
over a running :class:`ServerFunnel`.
"""

from importlib import metadata as _metadata

from funnel_server._app import AppSettings, create_app
from funnel_server._calls import ServerFunnel, ToolRateLimited
from funnel_server._cli import main

__version__ = _metadata.version("funnel-server")  # one source: pyproject.toml

__all__ = [
    "AppSettings",
    "ServerFunnel",
    "ToolRateLimited",
    "__version__",
    "create_app",
    "main",
]
