from __future__ import annotations

from pathlib import Path

import pytest

# The shipped contract suite uses plain asserts: have pytest explain their failures.
pytest.register_assert_rewrite("funnel_tokenstore.testing")


@pytest.fixture(autouse=True)
def funnel_home_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own funnel home, so nothing touches the real one."""
    home = tmp_path / "funnel-home"
    monkeypatch.setenv("MCP_FUNNEL_HOME", str(home))
    monkeypatch.delenv("MCP_FUNNEL_TOKEN_STORE", raising=False)
    return home
