"""Fixtures for the cross-package tests: paths of the test peers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NODE_MODULES = REPO / "tools" / "node_modules"


@pytest.fixture
def everything_js() -> Path:
    script = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    if shutil.which("node") is None or not script.exists():
        pytest.skip("the npm test peers are not installed (run `make install`)")
    return script


@pytest.fixture
def memory_js() -> Path:
    script = NODE_MODULES / "@modelcontextprotocol" / "server-memory" / "dist" / "index.js"
    if shutil.which("node") is None or not script.exists():
        pytest.skip("the npm test peers are not installed (run `make install`)")
    return script


@pytest.fixture
def servers_dir() -> Path:
    return REPO / "tests" / "servers"
