"""Shared fixtures: where the test peers live and how to start them.

Tests get these helpers through the ``peers`` fixture (with pytest's importlib import
mode, a conftest cannot be imported as a module).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


class Peers:
    """Commands for the test peers: scripted servers, the SDK server, npm servers."""

    servers = REPO / "tests" / "servers"
    node_modules = REPO / "tools" / "node_modules"
    everything = node_modules / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    memory = node_modules / "@modelcontextprotocol" / "server-memory" / "dist" / "index.js"

    @staticmethod
    def base_env() -> dict[str, str]:
        """The smallest environment a child needs to start: a PATH and nothing else."""
        return {"PATH": os.environ.get("PATH", os.defpath)}

    def scripted(self, behaviour: str) -> tuple[str, list[str]]:
        """Command and args of the scripted stdio server with the given behaviour."""
        return sys.executable, [str(self.servers / "scripted.py"), behaviour]

    def sdk_server(self) -> tuple[str, list[str]]:
        """Command and args of the official-SDK dual-era server."""
        return sys.executable, [str(self.servers / "sdk_server.py")]

    def node(self, script: Path, *args: str) -> tuple[str, list[str]]:
        """Command and args of an npm reference server; skips when it is not installed."""
        node = shutil.which("node")
        if node is None or not script.exists():
            pytest.skip("the npm test peers are not installed (run `make install`)")
        return node, [str(script), *args]


@pytest.fixture
def peers() -> Peers:
    return Peers()
