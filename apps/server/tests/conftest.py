"""Fixtures for funnel-server: a real uvicorn server on 127.0.0.1 over a real funnel."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from funnel_proxy import FunnelConfig, parse_config
from funnel_server.testing import Served, serving

REPO = Path(__file__).resolve().parents[3]
SERVERS = REPO / "tests" / "servers"
NODE_MODULES = REPO / "tools" / "node_modules"

Serve = Callable[..., AbstractAsyncContextManager[Served]]


@pytest.fixture
def api_token() -> str:
    return "test-api-token-0123456789abcdef"


@pytest.fixture
def make_config() -> Callable[[dict[str, Any]], FunnelConfig]:
    """Validate a config given as a dict (the JSON file's shape)."""
    return lambda data: parse_config(data, environ=dict(os.environ))


@pytest.fixture
def servers_dir() -> Path:
    return SERVERS


@pytest.fixture
def demo_server() -> dict[str, Any]:
    """The built-in demo backend as a config entry."""
    return {"command": sys.executable, "args": ["-m", "funnel_server._demo"]}


@pytest.fixture
def sdk_config(
    make_config: Callable[[dict[str, Any]], FunnelConfig], demo_server: dict[str, Any]
) -> FunnelConfig:
    """The official-SDK peer (echo, add, slow with progress, wait_forever) plus the demo."""
    return make_config(
        {
            "servers": {
                "sdk": {"command": sys.executable, "args": [str(SERVERS / "sdk_server.py")]},
                "demo": demo_server,
            },
            "hideTools": ["demo__new_uuid"],
            "exposeTools": ["sdk__*", "demo__echo", "demo__add"],
        }
    )


@pytest.fixture
def serve(api_token: str) -> Serve:
    """``async with serve(config, **settings) as served``: funnel + app on a free port."""

    def start(
        config: FunnelConfig | None = None, **settings: Any
    ) -> AbstractAsyncContextManager[Served]:
        return serving(config, api_token=api_token, **settings)

    return start


@pytest.fixture
def everything_js() -> Path:
    script = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    if shutil.which("node") is None or not script.exists():
        pytest.skip("the npm test peers are not installed (run `make install`)")
    return script
