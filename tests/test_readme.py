"""The README's examples are real: every JSON block is a config funnel accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from funnel_proxy import parse_config

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```json\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_config_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_each_json_example_is_a_valid_config(block: str) -> None:
    config = parse_config(block, source="README.md", environ={"GITHUB_TOKEN": "example"})
    assert config.servers


def test_the_readme_opens_with_the_two_commands() -> None:
    first_block = README.read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    assert first_block.splitlines()[0].startswith("uv run funnel-server")
    assert first_block.splitlines()[1].startswith("make test")
