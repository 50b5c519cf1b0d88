"""funnel-server: the funnel over stdio and HTTP (REST API, /mcp, /ws, OAuth callback, dashboard).

Run it with the ``funnel-server`` command; embed the web app with :func:`create_app`
over a running :class:`ServerFunnel`. The names are loaded on first use, so that the
command imports only what its configuration needs.
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

if "httpx" not in sys.modules:
    # httpx loads its command-line client (click, rich, pygments: about 120 ms and 5 MiB)
    # whenever those happen to be installed, and falls back to a stub when it cannot.
    # Nothing in this process runs that client: mark it absent before httpx is imported.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

if TYPE_CHECKING:
    from funnel_server._app import create_app
    from funnel_server._calls import ServerFunnel, ToolRateLimited
    from funnel_server._cli import main
    from funnel_server._settings import AppSettings

__version__ = _metadata.version("funnel-server")  # one source: pyproject.toml

__all__ = [
    "AppSettings",
    "ServerFunnel",
    "ToolRateLimited",
    "__version__",
    "create_app",
    "main",
]

_WHERE = {
    "AppSettings": "funnel_server._settings",
    "ServerFunnel": "funnel_server._calls",
    "ToolRateLimited": "funnel_server._calls",
    "create_app": "funnel_server._app",
    "main": "funnel_server._cli",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'funnel_server' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
