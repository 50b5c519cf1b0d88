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


def funnel() -> Funnel:
    sdk = {"command": sys.executable, "args": [str(SERVERS / "sdk_server.py")]}
    config = parse_config(
        {"servers": {"sdk": sdk}, "exposeTools": []}, environ={"PATH": os.environ["PATH"]}
    )
    return Funnel(config, environ={"PATH": os.environ["PATH"]})


async def call(running: Funnel, words: Any, **extra: Any) -> tuple[str, bool]:
    with anyio.fail_after(10):
        arguments = to_raw({"words": words, **extra})
        result = from_raw(await running.core.call("discover_tools_by_words", arguments))
    return result["content"][0]["text"], bool(result.get("isError"))


async def discover(words: Any, **extra: Any) -> tuple[str, bool]:
    async with funnel() as running:
        return await call(running, words, **extra)


async def test_the_index_is_built_when_the_tools_change_not_on_the_first_query() -> None:
    async with funnel() as running:
        with anyio.fail_after(10):
            await running.core.index_ready()
        index = running.core.search_index
        assert index is not None
        assert len(index) == len(running.surface.tools) > 0
        text, _ = await call(running, "echo")
        assert "sdk__echo" in text
        assert running.core.search_index is index, "the query reused the prebuilt index"
        running.enable_tools(["sdk__echo"])  # a new surface, the same tools
        with anyio.fail_after(10):
            await running.core.index_ready()
        assert running.core.search_index is index, "unchanged tools are not re-indexed"


async def test_a_hit_shows_its_server_a_summary_and_its_required_parameters() -> None:
    text, error = await discover("add two integers")
    assert not error
    first = text.splitlines()[1]
    assert first.startswith("- sdk__add: Add two integers")
    assert first.endswith("[server sdk; requires a, b]")
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
    assert "- sdk__echo: " in text


async def test_a_malformed_words_value_is_a_clear_tool_error() -> None:
    text, error = await discover({"both": ["a"]})
    assert error
    assert text == "Invalid words format - use string, {and: [...]}, or {or: [...]}"
    text, error = await discover("   ")
    assert error
    assert "words" in text
