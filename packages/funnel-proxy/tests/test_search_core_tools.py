"""discover_tools_by_words end to end: a real MCP SDK server behind a real funnel."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from funnel_proxy import Funnel, parse_config
from funnel_transports import from_raw, to_raw

pytestmark = pytest.mark.anyio

SERVERS = Path(__file__).resolve().parents[3] / "tests" / "servers"


async def discover(words: Any, **extra: Any) -> tuple[str, bool]:
    config = parse_config(
        {
            "servers": {
                "sdk": {"command": sys.executable, "args": [str(SERVERS / "sdk_server.py")]}
            },
            "exposeTools": [],
        },
        environ={"PATH": os.environ["PATH"]},
    )
    async with Funnel(config, environ={"PATH": os.environ["PATH"]}) as funnel:
        with anyio.fail_after(10):
            result = from_raw(
                await funnel.core.call("discover_tools_by_words", to_raw({"words": words, **extra}))
            )
    return result["content"][0]["text"], bool(result.get("isError"))


async def test_a_hit_shows_its_server_a_summary_and_its_required_parameters() -> None:
    text, error = await discover("add two integers")
    assert not error
    first = text.splitlines()[1]
    assert first.startswith("- sdk__add (sdk): ")
    assert first.endswith("[requires a, b]")
    assert len(first) < 200


async def test_the_originals_and_and_or_forms_are_accepted() -> None:
    text, error = await discover({"and": ["add", "integers"]})
    assert not error
    assert next(line for line in text.splitlines() if line.startswith("- ")).startswith(
        "- sdk__add"
    )
    text, error = await discover({"and": ["add", "zebra"]})
    assert not error
    assert text.startswith("No tools match")
    text, error = await discover({"or": ["echo", "zebra"]})
    assert not error
    assert "- sdk__echo (sdk)" in text


async def test_a_malformed_words_value_is_a_clear_tool_error() -> None:
    text, error = await discover({"both": ["a"]})
    assert error
    assert text == "Invalid words format - use string, {and: [...]}, or {or: [...]}"
    text, error = await discover("   ")
    assert error
    assert "words" in text
