"""``/mcp``: the official SDK client in both eras, and the wire rules it does not exercise."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from funnel_proxy import FunnelConfig
from funnel_server.testing import Served

pytestmark = pytest.mark.anyio

Serve = Callable[..., AbstractAsyncContextManager[Served]]
MODERN = "2026-07-28"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}
JSON_HEADERS = {"Accept": "application/json, text/event-stream"}


def sdk_client(served: Served, http: httpx2.AsyncClient, mode: str) -> Client:
    return Client(streamable_http_client(f"{served.base}/mcp", http_client=http), mode=mode)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_sdk_client_lists_and_calls_tools_in_both_eras(
    serve: Serve, sdk_config: FunnelConfig, mode: str
) -> None:
    async with (
        serve(sdk_config) as served,
        httpx2.AsyncClient(headers=served.auth) as http,
        sdk_client(served, http, mode) as client,
    ):
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert {"sdk__echo", "sdk__slow", "demo__echo"} <= set(names)
        assert "demo__word_count" not in names
        echo = await client.call_tool("sdk__echo", {"message": "over http"})
        assert echo.content[0].text == "Echo: over http"  # type: ignore[union-attr]
        updates: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            updates.append(progress)

        slow = await client.call_tool("sdk__slow", {"steps": 3}, progress_callback=on_progress)
        assert slow.content[0].text == "done after 3 steps"  # type: ignore[union-attr]
        assert updates == [1, 2, 3]
        with pytest.raises(MCPError) as caught:
            await client.call_tool("demo__word_count", {"text": "hidden"})
        assert caught.value.error.code == -32602
        memo = await client.read_resource("memo://hello")
        assert memo.contents[0].text == "hello from the sdk peer"  # type: ignore[union-attr]
        if mode == "legacy":
            assert served.app.state.mcp_endpoint.session_count == 1
    if mode == "legacy":
        assert served.app.state.mcp_endpoint.session_count == 0, "DELETE ended the session"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_sdk_client_without_the_token_gets_401(serve: Serve, mode: str) -> None:
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    async with serve() as served, httpx2.AsyncClient(event_hooks={"response": [record]}) as http:
        with anyio.fail_after(10), pytest.raises(BaseException) as caught:  # noqa: PT011 - checked below
            async with sdk_client(served, http, mode) as client:
                await client.list_tools()
    failure = caught.value
    while isinstance(failure, BaseExceptionGroup) and len(failure.exceptions) == 1:
        failure = failure.exceptions[0]
    assert isinstance(failure, MCPError)
    assert statuses and set(statuses) == {401}


async def test_a_request_without_the_token_is_answered_401(serve: Serve) -> None:
    async with serve() as served, httpx.AsyncClient(base_url=served.base) as http:
        response = await http.post("/mcp", json=INIT, headers=JSON_HEADERS)
    assert response.status_code == 401


@pytest.fixture
async def session_client(serve: Serve) -> AsyncIterator[tuple[Served, httpx.AsyncClient, str]]:
    async with (
        serve() as served,
        httpx.AsyncClient(base_url=served.base, headers={**served.auth, **JSON_HEADERS}) as http,
    ):
        response = await http.post("/mcp", json=INIT)
        assert response.status_code == 200
        session = response.headers["mcp-session-id"]
        yield served, http, session


async def test_garbage_gets_json_rpc_errors_and_the_session_survives(
    session_client: tuple[Served, httpx.AsyncClient, str],
) -> None:
    _, http, session = session_client
    headers = {"Mcp-Session-Id": session, "Content-Type": "application/json"}
    parse = await http.post("/mcp", content=b"{not json", headers=headers)
    invalid = await http.post("/mcp", content=b'{"jsonrpc": "2.0", "method": 5}', headers=headers)
    batch = await http.post(
        "/mcp", json=[{"jsonrpc": "2.0", "id": 2, "method": "ping"}], headers=headers
    )
    wrong_type = await http.post(
        "/mcp", content=b"{}", headers={**headers, "Content-Type": "text/plain"}
    )
    unknown_method = await http.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 3, "method": "no/such"}, headers=headers
    )
    assert parse.status_code == 400 and parse.json()["error"]["code"] == -32700
    assert invalid.status_code == 400 and invalid.json()["error"]["code"] == -32600
    assert batch.status_code == 400 and batch.json()["error"]["code"] == -32600
    assert wrong_type.status_code == 415
    assert unknown_method.json()["error"]["code"] == -32601
    ping = await http.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 4, "method": "ping"}, headers=headers
    )
    assert ping.status_code == 200 and ping.json() == {"jsonrpc": "2.0", "id": 4, "result": {}}


async def test_sessions_are_required_known_and_ended_by_delete(
    session_client: tuple[Served, httpx.AsyncClient, str],
) -> None:
    served, http, session = session_client
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    missing = await http.post("/mcp", json=ping)
    unknown = await http.post("/mcp", json=ping, headers={"Mcp-Session-Id": "nope"})
    notification = await http.post(
        "/mcp",
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={"Mcp-Session-Id": session},
    )
    assert missing.status_code == 400
    assert unknown.status_code == 404
    assert notification.status_code == 202 and notification.content == b""
    deleted = await http.delete("/mcp", headers={"Mcp-Session-Id": session})
    after = await http.post("/mcp", json=ping, headers={"Mcp-Session-Id": session})
    again = await http.delete("/mcp", headers={"Mcp-Session-Id": session})
    assert deleted.status_code == 204
    assert after.status_code == 404 and again.status_code == 404
    assert served.app.state.mcp_endpoint.session_count == 0


async def test_many_sessions_are_served_at_once_and_the_oldest_idle_one_gives_way(
    serve: Serve,
) -> None:
    async with (
        serve(mcp_max_sessions=3) as served,
        httpx.AsyncClient(base_url=served.base, headers={**served.auth, **JSON_HEADERS}) as http,
    ):
        sessions = [
            (await http.post("/mcp", json=INIT)).headers["mcp-session-id"] for _ in range(4)
        ]
        assert len(set(sessions)) == 4
        ping = {"jsonrpc": "2.0", "id": 9, "method": "ping"}
        statuses = [
            (await http.post("/mcp", json=ping, headers={"Mcp-Session-Id": s})).status_code
            for s in sessions
        ]
    assert statuses == [404, 200, 200, 200]


async def next_data(lines: AsyncIterator[str]) -> str:
    async for line in lines:
        if line.startswith("data: "):
            return line
    raise AssertionError("the stream ended")


async def read_events(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
            if len(events) == count:
                break
    return events


async def test_a_call_that_reports_progress_answers_with_an_event_stream(
    serve: Serve, sdk_config: FunnelConfig
) -> None:
    async with (
        serve(sdk_config) as served,
        httpx.AsyncClient(base_url=served.base, headers={**served.auth, **JSON_HEADERS}) as http,
    ):
        session = (await http.post("/mcp", json=INIT)).headers["mcp-session-id"]
        call = {
            "jsonrpc": "2.0",
            "id": "c1",
            "method": "tools/call",
            "params": {
                "name": "sdk__slow",
                "arguments": {"steps": 2},
                "_meta": {"progressToken": "p"},
            },
        }
        with anyio.fail_after(10):
            async with http.stream(
                "POST", "/mcp", json=call, headers={"Mcp-Session-Id": session}
            ) as response:
                assert response.headers["content-type"] == "text/event-stream"
                events = await read_events(response, 3)
    assert [e.get("method") for e in events[:2]] == ["notifications/progress"] * 2
    assert events[0]["params"]["progressToken"] == "p"
    assert events[2]["id"] == "c1"
    assert events[2]["result"]["content"][0]["text"] == "done after 2 steps"


class Watch(logging.Handler):
    """Sets an event when a matching log record arrives (records come from the loop's thread)."""

    def __init__(self, match: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__(logging.DEBUG)
        self.match = match
        self.seen = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.match(record):
            self.seen.set()


@pytest.fixture
def watch() -> Iterator[Callable[[Callable[[logging.LogRecord], bool]], Watch]]:
    installed: list[Watch] = []
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)

    def make(match: Callable[[logging.LogRecord], bool]) -> Watch:
        handler = Watch(match)
        root.addHandler(handler)
        installed.append(handler)
        return handler

    yield make
    for handler in installed:
        root.removeHandler(handler)
    root.setLevel(level)


async def test_closing_the_stream_cancels_the_call(
    serve: Serve,
    sdk_config: FunnelConfig,
    watch: Callable[[Callable[[logging.LogRecord], bool]], Watch],
) -> None:
    started = watch(lambda r: '"name":"wait_forever"' in r.getMessage())
    cancelled = watch(lambda r: getattr(r, "outcome", "") == "cancelled")
    modern_headers = {
        **JSON_HEADERS,
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "sdk__wait_forever",
    }
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "sdk__wait_forever",
            "arguments": {},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    async with (
        serve(sdk_config) as served,
        httpx.AsyncClient(base_url=served.base, headers=served.auth) as http,
    ):

        async def call_it() -> None:
            await http.post("/mcp", json=call, headers=modern_headers)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call_it)
                await started.seen.wait()
                tg.cancel_scope.cancel()  # the client hangs up
            await cancelled.seen.wait()


async def test_the_stateless_era_checks_headers_and_versions(serve: Serve) -> None:
    def request(method: str, params: dict[str, Any], version: str = MODERN) -> dict[str, Any]:
        meta = {
            "io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        return {"jsonrpc": "2.0", "id": 7, "method": method, "params": {**params, "_meta": meta}}

    def headers(method: str, version: str = MODERN, **more: str) -> dict[str, str]:
        return {**JSON_HEADERS, "MCP-Protocol-Version": version, "Mcp-Method": method, **more}

    async with (
        serve() as served,
        httpx.AsyncClient(base_url=served.base, headers=served.auth) as http,
    ):
        discover = await http.post(
            "/mcp", json=request("server/discover", {}), headers=headers("server/discover")
        )
        listed = await http.post(
            "/mcp", json=request("tools/list", {}), headers=headers("tools/list")
        )
        call = request("tools/call", {"name": "demo__echo", "arguments": {"message": "m"}})
        called = await http.post(
            "/mcp", json=call, headers=headers("tools/call", **{"Mcp-Name": "demo__echo"})
        )
        no_name = await http.post("/mcp", json=call, headers=headers("tools/call"))
        wrong_method = await http.post("/mcp", json=call, headers=headers("tools/list"))
        no_version = await http.post(
            "/mcp", json=call, headers={**JSON_HEADERS, "Mcp-Method": "tools/call"}
        )
        future = await http.post(
            "/mcp",
            json=request("tools/list", {}, "2099-01-01"),
            headers=headers("tools/list", "2099-01-01"),
        )
        missing = await http.post("/mcp", json=request("no/such", {}), headers=headers("no/such"))
        bare = {"jsonrpc": "2.0", "id": 8, "method": "tools/list", "params": {}}
        no_meta = await http.post("/mcp", json=bare, headers=headers("tools/list"))
        removed = await http.post("/mcp", json=request("ping", {}), headers=headers("ping"))
        get = await http.get("/mcp", headers={"MCP-Protocol-Version": MODERN})
    assert discover.status_code == 200
    assert MODERN in discover.json()["result"]["supportedVersions"]
    assert "mcp-session-id" not in discover.headers, "no sessions in the stateless era"
    assert listed.json()["result"]["resultType"] == "complete"
    assert called.json()["result"]["content"][0]["text"] == "m"
    for response in (no_name, wrong_method, no_version):
        assert response.status_code == 400 and response.json()["error"]["code"] == -32020
    assert future.status_code == 400 and future.json()["error"]["code"] == -32022
    assert missing.status_code == 404 and missing.json()["error"]["code"] == -32601
    assert no_meta.status_code == 400 and no_meta.json()["error"]["code"] == -32602
    assert removed.status_code == 404 and removed.json()["error"]["code"] == -32601
    assert get.status_code == 405


async def test_subscriptions_listen_streams_list_changes(
    serve: Serve, make_config: Callable[[dict[str, Any]], FunnelConfig], demo_server: dict[str, Any]
) -> None:
    config = make_config({"servers": {"demo": demo_server}, "exposeTools": []})
    listen = {
        "jsonrpc": "2.0",
        "id": "sub-1",
        "method": "subscriptions/listen",
        "params": {
            "notifications": {"toolsListChanged": True},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    headers = {**JSON_HEADERS, "MCP-Protocol-Version": MODERN, "Mcp-Method": "subscriptions/listen"}
    async with (
        serve(config) as served,
        httpx.AsyncClient(base_url=served.base, headers=served.auth) as http,
    ):
        with anyio.fail_after(10):
            async with http.stream("POST", "/mcp", json=listen, headers=headers) as response:
                assert response.headers["content-type"] == "text/event-stream"
                lines = response.aiter_lines()
                acknowledged = await next_data(lines)
                assert "notifications/subscriptions/acknowledged" in acknowledged
                served.funnel.enable_tools(["demo__echo"])
                changed = await next_data(lines)
    message = json.loads(changed[6:])
    assert message["method"] == "notifications/tools/list_changed"
    assert message["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "sub-1"


async def test_the_get_stream_carries_list_changes_of_its_session(
    serve: Serve, make_config: Callable[[dict[str, Any]], FunnelConfig], demo_server: dict[str, Any]
) -> None:
    config = make_config({"servers": {"demo": demo_server}, "exposeTools": []})
    async with (
        serve(config) as served,
        httpx.AsyncClient(base_url=served.base, headers={**served.auth, **JSON_HEADERS}) as http,
    ):
        session = (await http.post("/mcp", json=INIT)).headers["mcp-session-id"]
        stream_headers = {"Mcp-Session-Id": session, "Accept": "text/event-stream"}
        await http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "method": "notifications/initialized"},
            headers={"Mcp-Session-Id": session},
        )
        with anyio.fail_after(10):
            async with http.stream("GET", "/mcp", headers=stream_headers) as response:
                assert response.status_code == 200
                second = await http.get("/mcp", headers=stream_headers)
                assert second.status_code == 409, "one GET stream per session"
                served.funnel.enable_tools(["demo__echo"])
                [event] = await read_events(response, 1)
            closed = await http.delete("/mcp", headers={"Mcp-Session-Id": session})
    assert event == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    assert closed.status_code == 204
