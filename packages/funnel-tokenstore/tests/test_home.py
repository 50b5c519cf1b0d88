from __future__ import annotations

import os
from pathlib import Path

import pytest

from funnel_tokenstore import funnel_home


def test_funnel_home_comes_from_the_environment(tmp_path: Path) -> None:
    assert funnel_home(env={"MCP_FUNNEL_HOME": str(tmp_path / "h")}) == tmp_path / "h"


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_a_blank_funnel_home_falls_back_to_the_user_home(blank: str) -> None:
    assert funnel_home(env={"MCP_FUNNEL_HOME": blank}) == Path.home() / ".mcp-funnel"


def test_without_the_variable_funnel_home_is_dot_mcp_funnel_in_the_user_home() -> None:
    assert funnel_home(env={}) == Path.home() / ".mcp-funnel"


def test_funnel_home_expands_the_tilde_and_strips_spaces() -> None:
    assert funnel_home(env={"MCP_FUNNEL_HOME": "  ~/funnel  "}) == Path.home() / "funnel"


def test_a_relative_funnel_home_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    home = funnel_home(env={"MCP_FUNNEL_HOME": "rel/home"})
    assert home.is_absolute()
    assert home == tmp_path / "rel" / "home"


def test_funnel_home_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_FUNNEL_HOME", str(tmp_path / "from-environ"))
    assert funnel_home() == tmp_path / "from-environ"
    assert os.environ["MCP_FUNNEL_HOME"] == str(tmp_path / "from-environ")
