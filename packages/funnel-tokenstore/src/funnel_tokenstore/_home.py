"""Where funnel keeps its files: the funnel home directory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["HOME_ENV", "funnel_home"]

HOME_ENV = "MCP_FUNNEL_HOME"


def funnel_home(*, env: Mapping[str, str] | None = None) -> Path:
    """Return the funnel home directory (it may not exist yet).

    ``$MCP_FUNNEL_HOME`` when it is set and not blank (``~`` is expanded, a relative path
    is made absolute against the current directory), else ``~/.mcp-funnel``.

    Args:
        env: The environment to read; ``os.environ`` when omitted.

    Returns:
        An absolute path.
    """
    environ = os.environ if env is None else env
    value = environ.get(HOME_ENV, "").strip()
    if value:
        return Path(os.path.abspath(os.path.expanduser(value)))
    return Path.home() / ".mcp-funnel"
