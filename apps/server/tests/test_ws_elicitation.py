"""A backend's elicitation answered by the person behind ``/ws``, and refused to REST.

server-everything (npm, handshake era over stdio) asks with ``elicitation/create``; the
``websockets`` client plays the dashboard: it gets ``elicitation.request`` for its own
execution and answers with ``elicitation.respond``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from funnel_proxy import FunnelConfig
from funnel_server.testing import Served

pytestmark = [pytest.mark.anyio, pytest.mark.npm]

Serve = Callable[..., AbstractAsyncContextManager[Served]]
TOOL = "everything__trigger-elicitation-request"


@pytest.fixture
def everything_config(
    make_config: Callable[[dict[str, Any]], FunnelConfig], everything_js: Path
) -> FunnelConfig:
    return make_config(
        {"servers": {"everything": {"command": "node", "args": [str(everything_js), "stdio"]}}}
    )


def open_ws(served: Served) -> Any:
    return connect(served.ws_url, additional_headers=served.auth, open_timeout=5)


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def receive(ws: ClientConnection, *types: str) -> dict[str, Any]:
    with anyio.fail_after(30):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if not types or message["type"] in types:
                return message


def text(result: dict[str, Any]) -> str:
    return "".join(item.get("text", "") for item in result["content"])


async def test_the_person_at_ws_answers_the_elicitation_of_their_execution(
    serve: Serve, everything_config: FunnelConfig
) -> None:
    async with serve(everything_config) as served, open_ws(served) as ws:
        await send(ws, {"type": "execute", "id": "x", "tool": TOOL})
        asked = await receive(ws, "elicitation.request", "tool.error", "tool.result")
        assert asked["type"] == "elicitation.request", asked
        assert asked["execution"] == "x"
        assert asked["server"] == "everything"
        assert asked["message"].startswith("Please provide inputs")
        schema = asked["requestedSchema"]
        assert schema["properties"]["integer"]["default"] == 42

        # Content that does not fit the schema is refused; the form stays open.
        await send(
            ws,
            {
                "type": "elicitation.respond",
                "id": asked["id"],
                "action": "accept",
                "content": {"name": "Ada", "integer": "many"},
            },
        )
        refused = await receive(ws, "error")
        assert "integer must be integer" in refused["message"]

        answer = {"name": "Ada Lovelace", "check": True, "integer": 7}
        await send(
            ws,
            {
                "type": "elicitation.respond",
                "id": asked["id"],
                "action": "accept",
                "content": answer,
            },
        )
        result = await receive(ws, "tool.result", "tool.error")
    assert result["type"] == "tool.result", result
    assert "Ada Lovelace" in text(result["result"])


async def test_a_declined_elicitation_reaches_the_backend_as_declined(
    serve: Serve, everything_config: FunnelConfig
) -> None:
    async with serve(everything_config) as served, open_ws(served) as ws:
        await send(ws, {"type": "execute", "id": 1, "tool": TOOL})
        asked = await receive(ws, "elicitation.request")
        await send(ws, {"type": "elicitation.respond", "id": asked["id"], "action": "decline"})
        result = await receive(ws, "tool.result", "tool.error")
    assert result["type"] == "tool.result", result
    assert "decline" in text(result["result"]).lower()


async def test_an_unanswered_elicitation_times_out_with_a_clear_error_both_ways(
    serve: Serve, everything_config: FunnelConfig
) -> None:
    async with serve(everything_config, elicitation_timeout=1.0) as served, open_ws(served) as ws:
        await send(ws, {"type": "execute", "id": 1, "tool": TOOL})
        asked = await receive(ws, "elicitation.request")
        assert asked["timeoutMs"] == 1000
        ended = await receive(ws, "elicitation.ended")
        assert ended == {"type": "elicitation.ended", "id": asked["id"], "reason": "timed out"}
        # The backend got an error for its request; the execution still ends.
        result = await receive(ws, "tool.result", "tool.error")
        late = {"type": "elicitation.respond", "id": asked["id"], "action": "cancel"}
        await send(ws, late)
        stale = await receive(ws, "error")
    outcome = json.dumps(result)
    assert "nobody answered the elicitation within 1 s" in outcome, result
    assert "no elicitation" in stale["message"]


async def test_a_rest_call_whose_backend_elicits_gets_a_clear_409_not_a_hang(
    serve: Serve, everything_config: FunnelConfig
) -> None:
    async with (
        serve(everything_config) as served,
        httpx.AsyncClient(base_url=served.base, headers=served.auth) as http,
    ):
        with anyio.fail_after(30):
            response = await http.post(f"/api/tools/{TOOL}/call", json={"arguments": {}})
    assert response.status_code == 409, response.text
    body = response.json()
    assert "needs interactive input (elicitation/create)" in body["detail"]
    assert body["extra"]["needs"] == "elicitation/create"


@pytest.fixture
def url_config(
    make_config: Callable[[dict[str, Any]], FunnelConfig], servers_dir: Path
) -> FunnelConfig:
    script = str(servers_dir / "url_elicit_server.py")
    return make_config({"servers": {"web": {"command": sys.executable, "args": [script]}}})


async def test_a_url_mode_elicitation_shows_the_url_and_a_done_answer_carries_no_content(
    serve: Serve, url_config: FunnelConfig
) -> None:
    page = "http://127.0.0.1:9/connect?account=ada"  # shown, never fetched
    async with serve(url_config) as served, open_ws(served) as ws:
        await send(
            ws, {"type": "execute", "id": "u", "tool": "web__visit", "arguments": {"url": page}}
        )
        asked = await receive(ws, "elicitation.request", "tool.error", "tool.result")
        assert asked["type"] == "elicitation.request", asked
        assert asked["mode"] == "url"
        assert asked["url"] == page
        assert asked["execution"] == "u"
        assert asked["message"] == "Open this page to connect your account"
        # Content sent with a URL-mode accept is not passed on: the answer has none.
        await send(
            ws,
            {
                "type": "elicitation.respond",
                "id": asked["id"],
                "action": "accept",
                "content": {"x": 1},
            },
        )
        result = await receive(ws, "tool.result", "tool.error")
    assert result["type"] == "tool.result", result
    assert text(result["result"]) == "action: accept"


async def test_a_url_mode_elicitation_of_a_non_web_url_is_refused_before_the_person_sees_it(
    serve: Serve, url_config: FunnelConfig
) -> None:
    async with serve(url_config) as served, open_ws(served) as ws:
        arguments = {"url": "javascript:alert(1)"}
        await send(ws, {"type": "execute", "id": "j", "tool": "web__visit", "arguments": arguments})
        result = await receive(ws, "elicitation.request", "tool.result", "tool.error")
    assert result["type"] != "elicitation.request", result
    if result["type"] == "tool.result":
        assert result["result"].get("isError") is True, result
