"""``/mcp``: a backend's requests reach the client whose call caused them, in both eras.

Two SDK clients call server-everything's elicitation tool through one funnel at the same
time; each answers with its own name, and each result carries only its own answer.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client

from funnel_proxy import FunnelConfig
from funnel_server.testing import Served

pytestmark = [pytest.mark.anyio, pytest.mark.npm]

Serve = Callable[..., AbstractAsyncContextManager[Served]]


def answering(name: str) -> Callable[..., Any]:
    async def elicit(context: Any, params: Any) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"name": name})

    return elicit


def text(result: types.CallToolResult) -> str:
    return "\n".join(item.text for item in result.content if isinstance(item, types.TextContent))


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_two_clients_calling_one_backend_each_get_only_their_own_elicitation(
    serve: Serve,
    make_config: Callable[[dict[str, Any]], FunnelConfig],
    everything_js: Path,
    mode: str,
) -> None:
    config = make_config(
        {"servers": {"everything": {"command": "node", "args": [str(everything_js), "stdio"]}}}
    )
    results: dict[str, str] = {}
    async with serve(config) as served, httpx2.AsyncClient(headers=served.auth) as http:

        async def person(name: str) -> None:
            client = Client(
                streamable_http_client(f"{served.base}/mcp", http_client=http),
                mode=mode,
                elicitation_callback=answering(name),
            )
            async with client:
                result = await client.call_tool("everything__trigger-elicitation-request", {})
                assert not result.is_error, text(result)
                results[name] = text(result)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for name in ("Ada", "Grace", "Edsger"):
                    tg.start_soon(person, name)
    for name, body in results.items():
        assert f"Name: {name}" in body
        assert all(f"Name: {other}" not in body for other in results if other != name)
    assert set(results) == {"Ada", "Grace", "Edsger"}


async def test_a_client_that_cannot_elicit_gets_a_clear_error_at_once(
    serve: Serve, make_config: Callable[[dict[str, Any]], FunnelConfig], everything_js: Path
) -> None:
    config = make_config(
        {"servers": {"everything": {"command": "node", "args": [str(everything_js), "stdio"]}}}
    )
    async with (
        serve(config) as served,
        httpx2.AsyncClient(headers=served.auth) as http,
        Client(
            streamable_http_client(f"{served.base}/mcp", http_client=http), mode="legacy"
        ) as client,
    ):
        with anyio.fail_after(30):
            result = await client.call_tool("everything__trigger-elicitation-request", {})
    assert result.is_error
    assert "elicitation" in text(result)
