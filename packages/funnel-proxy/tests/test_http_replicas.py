"""Two McpHttpEndpoint replicas with one state key, behind a round-robin front, on uvicorn.

Each replica is a separate :class:`Funnel` with its own backend process (the SDK test
peer); the front is a plain ASGI app that hands each HTTP request to the next replica in
turn, as a load balancer without stickiness does. The official SDK client (handshake era,
``mode="legacy"``) sees one server.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest
from anyio.streams.memory import MemoryObjectSendStream
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from support.asgi import serve_asgi

from funnel_proxy import Funnel, McpHttpEndpoint, SessionSharing, parse_config
from funnel_proxy._http_server import Receive, Scope, Send
from funnel_proxy._session_sharing import decode_bus
from funnel_proxy._session_ticket import SessionTicket, seal_ticket
from funnel_tokenstore import StateKeys
from funnel_transports import MODERN_VERSIONS, Notification, to_raw

pytestmark = pytest.mark.anyio

SERVERS = Path(__file__).resolve().parents[3] / "tests" / "servers"
KEYS = StateKeys([os.urandom(32)]).derive("mcp-sessions")
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@dataclass
class Front:
    """Round robin over the replicas, counting what each served."""

    replicas: list[McpHttpEndpoint]
    funnels: list[Funnel] = field(default_factory=list)
    served: list[list[str]] = field(default_factory=list)
    turn: int = 0
    pinned: int | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        index = self.turn % len(self.replicas) if self.pinned is None else self.pinned
        self.turn += 1
        while len(self.served) < len(self.replicas):
            self.served.append([])
        self.served[index].append(scope["method"])
        await self.replicas[index](scope, receive, send)


@asynccontextmanager
async def replica(
    keys: StateKeys | None = KEYS,
    sharing: SessionSharing | None = None,
    echo: str = "Echo",
    server: str = "sdk_server.py",
) -> AsyncIterator[tuple[McpHttpEndpoint, Funnel]]:
    environ = {"PATH": os.environ["PATH"], "SDK_PEER_ECHO": echo}
    config = parse_config(
        {
            "servers": {
                "sdk": {
                    "command": sys.executable,
                    "args": [str(SERVERS / server)],
                    "env": {"SDK_PEER_ECHO": echo},
                }
            }
        },
        environ=environ,
    )
    async with Funnel(config, environ=environ) as funnel:
        endpoint = McpHttpEndpoint(funnel, version="test", state_keys=keys, sharing=sharing)
        async with endpoint.replicate():
            try:
                yield endpoint, funnel
            finally:
                endpoint.close_all()


@asynccontextmanager
async def serve(front: Front) -> AsyncIterator[str]:
    def end_streams() -> None:
        for endpoint in front.replicas:
            endpoint.close_all()  # ends GET streams so uvicorn can stop

    async with serve_asgi(front, before_stop=end_streams) as base:
        yield f"{base}/mcp"


@asynccontextmanager
async def replicas(
    count: int = 2, sharing: list[SessionSharing] | None = None
) -> AsyncIterator[tuple[str, Front]]:
    async with AsyncExitStack() as stack:
        pairs = [
            await stack.enter_async_context(
                replica(sharing=sharing[i] if sharing else None, echo=f"Echo{i}")
            )
            for i in range(count)
        ]
        front = Front([endpoint for endpoint, _ in pairs], [funnel for _, funnel in pairs])
        url = await stack.enter_async_context(serve(front))
        yield url, front


def _text(result: Any) -> str:
    return str(result.content[0].text)


async def test_a_session_initialized_on_one_replica_is_served_by_the_other_from_its_next_request() -> (
    None
):
    with anyio.fail_after(60):
        async with (
            replicas() as (url, front),
            httpx2.AsyncClient() as http,
            Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
        ):
            echoes = {
                _text(await client.call_tool("sdk__echo", {"message": "hi"})) for _ in range(6)
            }
            tools = await client.list_tools()
        # Each replica's own backend answered: the calls really were spread over both.
        assert echoes == {"Echo0: hi", "Echo1: hi"}
        assert "sdk__echo" in {tool.name for tool in tools.tools}
        assert all("POST" in served for served in front.served)
        assert front.served[0][0] == "POST"  # initialize went to replica 0 ...
        assert all(endpoint.session_count <= 1 for endpoint in front.replicas)


async def test_a_session_survives_the_replica_that_started_it() -> None:
    with anyio.fail_after(60):
        async with replicas() as (url, front), httpx2.AsyncClient() as http:
            front.pinned = 0
            response = await http.post(url, json=INIT, headers=HEADERS)
            session_id = response.headers["mcp-session-id"]
            assert session_id.startswith("s1.")
            headers = {
                **HEADERS,
                "mcp-session-id": session_id,
                "mcp-protocol-version": "2025-11-25",
            }
            await http.post(
                url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
            )
            # Replica 0 dies: everything it held is gone. Replica 1 has never seen the session.
            front.replicas[0].close_all()
            front.pinned = 1
            assert front.replicas[1].session_count == 0
            call = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "sdk__echo", "arguments": {"message": "still here"}},
            }
            answer = await http.post(url, json=call, headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.headers["mcp-session-id"] == session_id
            assert answer.json()["result"]["content"][0]["text"] == "Echo1: still here"
            assert front.replicas[1].session_count == 1


async def test_ids_that_do_not_open_are_unknown_sessions_never_errors() -> None:
    with anyio.fail_after(60):
        async with replicas(count=1) as (url, front), httpx2.AsyncClient() as http:
            response = await http.post(url, json=INIT, headers=HEADERS)
            good = response.headers["mcp-session-id"]
            other_keys = StateKeys([os.urandom(32)]).derive("mcp-sessions")
            elsewhere = seal_ticket(
                SessionTicket(
                    number=os.urandom(16),
                    protocol_version="2025-11-25",
                    client_info={},
                    capabilities={},
                    expires=4e9,
                ),
                other_keys,
            )
            tampered = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
            ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
            for session_id in (elsewhere, tampered, "s1.garbage", "random-old-style-id"):
                for method in ("POST", "GET", "DELETE"):
                    answer = await http.request(
                        method,
                        url,
                        json=ping if method == "POST" else None,
                        headers={**HEADERS, "mcp-session-id": session_id},
                    )
                    assert answer.status_code == 404, (method, session_id, answer.text)
            still = await http.post(url, json=ping, headers={**HEADERS, "mcp-session-id": good})
            assert still.status_code == 200
            assert front.replicas[0].session_count == 1


async def test_without_state_keys_ids_are_random_and_held_by_one_process() -> None:
    with anyio.fail_after(60):
        async with AsyncExitStack() as stack:
            endpoints = [
                (await stack.enter_async_context(replica(keys=None, echo=f"Echo{i}")))[0]
                for i in range(2)
            ]
            front = Front(endpoints, pinned=0)
            url = await stack.enter_async_context(serve(front))
            http = await stack.enter_async_context(httpx2.AsyncClient())
            response = await http.post(url, json=INIT, headers=HEADERS)
            session_id = response.headers["mcp-session-id"]
            assert not session_id.startswith("s1.")
            front.pinned = 1
            ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
            answer = await http.post(
                url, json=ping, headers={**HEADERS, "mcp-session-id": session_id}
            )
            assert answer.status_code == 404


# ---------------------------------------------------------------------- shared state
# The store and bus below are in-memory fakes of the two protocols (unit tests of how the
# endpoint uses them); funnel-server's tests run the same behaviour over real Redis.


class MemoryBus:
    """At-most-once fan-out to bounded subscriber streams, like SharedState's."""

    def __init__(self) -> None:
        self.subscribers: dict[str, list[MemoryObjectSendStream[bytes]]] = {}
        self.published: list[bytes] = []

    async def publish(self, channel: str, payload: bytes) -> None:
        self.published.append(payload)
        for stream in list(self.subscribers.get(channel, ())):
            with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError):
                stream.send_nowait(payload)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterable[bytes]]:
        send, receive = anyio.create_memory_object_stream[bytes](64)
        self.subscribers.setdefault(channel, []).append(send)
        try:
            async with receive:
                yield receive
        finally:
            self.subscribers[channel].remove(send)
            send.close()


class MemoryStore:
    def __init__(self) -> None:
        self.values: dict[str, tuple[bytes, float]] = {}

    async def get(self, key: str) -> bytes | None:
        found = self.values.get(key)
        return found[0] if found is not None else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        assert ttl > 0
        self.values[key] = (value, ttl)


def shared(count: int) -> tuple[MemoryBus, MemoryStore, list[SessionSharing]]:
    bus, store = MemoryBus(), MemoryStore()
    return bus, store, [SessionSharing(bus=bus, store=store, replica=f"r{i}") for i in range(count)]


async def until(predicate: Callable[[], bool]) -> None:
    """Wait (bounded by the caller's fail_after) until another task made ``predicate`` true."""
    # The bus hands the message to the replica's own task; its effect is all there is to
    # wait for, so check again at every scheduling point.
    while not predicate():
        await anyio.lowlevel.checkpoint()


async def start(http: httpx2.AsyncClient, url: str, front: Front, on: int) -> dict[str, str]:
    front.pinned = on
    response = await http.post(url, json=INIT, headers=HEADERS)
    headers = {
        **HEADERS,
        "mcp-session-id": response.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-11-25",
    }
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post(url, json=initialized, headers=headers)).status_code == 202
    return headers


def held(endpoint: McpHttpEndpoint) -> Any:
    return next(iter(endpoint._sessions.values()))


async def test_a_delete_on_one_replica_ends_the_session_on_every_replica() -> None:
    _, store, sharing = shared(3)
    ping = {"jsonrpc": "2.0", "id": 9, "method": "ping"}
    with anyio.fail_after(60):
        async with replicas(3, sharing) as (url, front), httpx2.AsyncClient() as http:
            headers = await start(http, url, front, on=0)
            front.pinned = 1
            assert (await http.post(url, json=ping, headers=headers)).status_code == 200
            assert [e.session_count for e in front.replicas] == [1, 1, 0]
            assert (await http.delete(url, headers=headers)).status_code == 204
            # Replica 0 held it and hears the end on the bus ...
            await until(lambda: front.replicas[0].session_count == 0)
            front.pinned = 0
            assert (await http.post(url, json=ping, headers=headers)).status_code == 404
            # ... replica 2 never held it and finds it ended in the store.
            front.pinned = 2
            assert (await http.post(url, json=ping, headers=headers)).status_code == 404
            assert (await http.delete(url, headers=headers)).status_code == 404
            assert front.replicas[2].session_count == 0
            # The store keeps the end sealed, and no longer than the id is valid.
            ((value, ttl),) = store.values.values()
            assert b"ended" not in value
            assert 0 < ttl <= 86400


async def test_the_log_level_set_on_one_replica_reaches_the_others() -> None:
    *_, sharing = shared(3)
    set_level = {
        "jsonrpc": "2.0",
        "id": 5,
        "method": "logging/setLevel",
        "params": {"level": "error"},
    }
    with anyio.fail_after(60):
        async with replicas(3, sharing) as (url, front), httpx2.AsyncClient() as http:
            headers = await start(http, url, front, on=0)
            front.pinned = 1
            answer = await http.post(url, json=set_level, headers=headers)
            assert answer.status_code == 200, answer.text
            assert held(front.replicas[1]).record.level == "error"
            # Replica 0 holds the session: the bus brings it the new level ...
            await until(lambda: held(front.replicas[0]).record.level == "error")
            assert held(front.replicas[0]).mcp._log_level == "error"
            # ... replica 2 rebuilds the session later and reads it from the store.
            front.pinned = 2
            ping = {"jsonrpc": "2.0", "id": 6, "method": "ping"}
            assert (await http.post(url, json=ping, headers=headers)).status_code == 200
            assert held(front.replicas[2]).mcp._log_level == "error"


async def test_a_list_change_on_one_replica_reaches_a_get_stream_on_another() -> None:
    *_, sharing = shared(2)
    with anyio.fail_after(60):
        async with replicas(2, sharing) as (url, front), httpx2.AsyncClient() as http:
            for funnel in front.funnels:
                await funnel.wait_ready(30)
            headers = await start(http, url, front, on=0)
            front.pinned = 1
            async with (
                front.funnels[1].events() as own_events,
                http.stream("GET", url, headers=headers) as stream,
            ):
                assert stream.status_code == 200
                lines = stream.aiter_lines()
                # Replica 0's backend goes away: its tool list changes, replica 1's does not.
                await front.funnels[0].set_disabled("sdk", disabled=True)
                async for line in lines:
                    if "notifications/tools/list_changed" in line:
                        break
                # Replica 1's own funnel saw no list change: the bus brought this one.
                while True:
                    try:
                        event = own_events.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    assert event.kind != "list_changed"


async def test_a_list_change_on_one_replica_reaches_a_subscriptions_listen_stream_on_another() -> (
    None
):
    *_, sharing = shared(2)
    modern = MODERN_VERSIONS[0]
    listen = {
        "jsonrpc": "2.0",
        "id": "L1",
        "method": "subscriptions/listen",
        "params": {
            "notifications": {"toolsListChanged": True},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": modern,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    headers = {**HEADERS, "mcp-protocol-version": modern, "mcp-method": "subscriptions/listen"}
    with anyio.fail_after(60):
        async with replicas(2, sharing) as (url, front), httpx2.AsyncClient() as http:
            for funnel in front.funnels:
                await funnel.wait_ready(30)
            front.pinned = 1
            async with (
                front.funnels[1].events() as own_events,
                http.stream("POST", url, json=listen, headers=headers) as stream,
            ):
                assert stream.status_code == 200
                lines = stream.aiter_lines()
                async for line in lines:
                    if "notifications/subscriptions/acknowledged" in line:
                        break
                await front.funnels[0].set_disabled("sdk", disabled=True)
                async for line in lines:
                    if "notifications/tools/list_changed" in line:
                        assert '"io.modelcontextprotocol/subscriptionId":"L1"' in line
                        break
                while True:
                    try:
                        event = own_events.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    assert event.kind != "list_changed"


async def sample(
    context: Any, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text="sampled"), model="m"
    )


async def test_a_backend_asks_the_client_during_a_call_whichever_replica_the_answer_lands_on() -> (
    None
):
    # The backend's request goes out on the call's POST stream (the replica running the
    # call); the client's answer is a new POST, which round robin sends anywhere.
    bus, _, sharing = shared(2)
    with anyio.fail_after(60):
        async with AsyncExitStack() as stack:
            pairs = [
                await stack.enter_async_context(
                    replica(sharing=sharing[i], server="conformance_server.py")
                )
                for i in range(2)
            ]
            front = Front([e for e, _ in pairs], [f for _, f in pairs])
            url = await stack.enter_async_context(serve(front))
            http = await stack.enter_async_context(httpx2.AsyncClient())
            client = await stack.enter_async_context(
                Client(
                    streamable_http_client(url, http_client=http),
                    mode="legacy",
                    sampling_callback=sample,
                )
            )
            for _ in range(4):
                result = await client.call_tool("sdk__test_sampling", {"prompt": "hi"})
                assert _text(result) == "LLM response: sampled"
        heard = [decode_bus(payload, KEYS) for payload in bus.published]
        # Some answers landed on the replica that had not asked, and were passed on.
        assert any(m is not None and m.kind == "answer" for m in heard), heard


async def test_a_deleted_sealed_session_stays_ended_on_its_replica_without_sharing() -> None:
    # Without a store the id alone would rebuild it: the replica remembers the end.
    ping = {"jsonrpc": "2.0", "id": 4, "method": "ping"}
    with anyio.fail_after(60):
        async with replicas(count=1) as (url, front), httpx2.AsyncClient() as http:
            headers = await start(http, url, front, on=0)
            assert (await http.delete(url, headers=headers)).status_code == 204
            assert (await http.post(url, json=ping, headers=headers)).status_code == 404
            assert (await http.delete(url, headers=headers)).status_code == 404
            async with http.stream("GET", url, headers=headers) as stream:
                assert stream.status_code == 404
            assert front.replicas[0].session_count == 0


async def test_a_resource_subscription_made_on_one_replica_is_heard_on_a_get_stream_on_another() -> (
    None
):
    *_, sharing = shared(2)
    uri = "test://watched-resource"
    subscribe = {"jsonrpc": "2.0", "id": 7, "method": "resources/subscribe", "params": {"uri": uri}}
    with anyio.fail_after(60):
        async with AsyncExitStack() as stack:
            pairs = [
                await stack.enter_async_context(
                    replica(sharing=sharing[i], server="conformance_server.py")
                )
                for i in range(2)
            ]
            front = Front([e for e, _ in pairs], [f for _, f in pairs])
            url = await stack.enter_async_context(serve(front))
            http = await stack.enter_async_context(httpx2.AsyncClient())
            for funnel in front.funnels:
                await funnel.wait_ready(30)
            headers = await start(http, url, front, on=0)
            async with http.stream("GET", url, headers=headers) as stream:
                assert stream.status_code == 200
                front.pinned = 1
                answer = await http.post(url, json=subscribe, headers=headers)
                assert answer.status_code == 200, answer.text
                assert held(front.replicas[1]).record.uris == (uri,)
                # Replica 0 holds the session and its GET stream: the bus brings it the
                # subscription, which it makes on its own backend ...
                copy = held(front.replicas[0])
                await until(lambda: copy.mcp in front.funnels[0]._resource_subscribers.get(uri, ()))
                assert copy.record.uris == (uri,)
                # ... so an update from that backend reaches the stream.
                front.funnels[0]._on_backend_notification(
                    "sdk",
                    Notification(
                        method="notifications/resources/updated", params=to_raw({"uri": uri})
                    ),
                )
                async for line in stream.aiter_lines():
                    if "notifications/resources/updated" in line:
                        assert uri in line
                        break
