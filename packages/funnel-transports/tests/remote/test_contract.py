"""The contract every client transport keeps, run over each of them.

To add a transport, append a :class:`Candidate` to ``CANDIDATES``: ``open`` yields a
transport whose handshake is done (``env`` gives access to the server fixtures),
``unreachable`` builds one aimed at a port where nothing listens, and ``modern`` says
whether requests need the 2026-07-28 ``_meta``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import pytest

from funnel_transports import (
    ConnectError,
    Response,
    SseTransport,
    StreamableHttpTransport,
    Transport,
    TransportClosed,
    TransportError,
    WebSocketTransport,
    from_raw,
)

pytestmark = pytest.mark.anyio


@dataclass
class Env:
    servers: Any
    ws_servers: Any
    wire: Any


@dataclass(frozen=True)
class Candidate:
    name: str
    open: Callable[[Env], AbstractAsyncContextManager[Transport]]
    unreachable: Callable[[int], Transport]
    modern: bool = False


@contextlib.asynccontextmanager
async def http_handshake_era(env: Env) -> AsyncIterator[Transport]:
    apps = env.servers.load("apps")
    async with env.servers.streamable(apps.FaultApp(), name="contract") as transport:
        await env.wire.handshake(transport)
        yield transport


@contextlib.asynccontextmanager
async def http_stateless_era(env: Env) -> AsyncIterator[Transport]:
    sdk_app = env.servers.load("sdk_app")
    async with env.servers.streamable(sdk_app.build_app(), name="contract") as transport:
        transport.set_protocol_version("2026-07-28")
        yield transport


@contextlib.asynccontextmanager
async def legacy_sse(env: Env) -> AsyncIterator[Transport]:
    apps = env.servers.load("apps")
    async with (
        env.servers.uvicorn(apps.FaultApp()) as port,
        SseTransport(f"http://127.0.0.1:{port}/sse", name="contract") as transport,
    ):
        await env.wire.handshake(transport, "2024-11-05")
        yield transport


@contextlib.asynccontextmanager
async def websocket(env: Env) -> AsyncIterator[Transport]:
    async def headers() -> dict[str, str]:
        return {"Authorization": f"Bearer {env.ws_servers.token}"}

    async with (
        env.ws_servers.mcp() as (url, _),
        WebSocketTransport(url, name="contract", headers=headers) as transport,
    ):
        await env.wire.handshake(transport)
        yield transport


CANDIDATES = [
    Candidate(
        "streamable-http",
        http_handshake_era,
        lambda port: StreamableHttpTransport(f"http://127.0.0.1:{port}/mcp", connect_timeout=2),
    ),
    Candidate(
        "streamable-http-2026",
        http_stateless_era,
        lambda port: StreamableHttpTransport(f"http://127.0.0.1:{port}/mcp", connect_timeout=2),
        modern=True,
    ),
    Candidate(
        "sse",
        legacy_sse,
        lambda port: SseTransport(f"http://127.0.0.1:{port}/sse", connect_timeout=2),
    ),
    Candidate(
        "websocket",
        websocket,
        lambda port: WebSocketTransport(f"ws://127.0.0.1:{port}/", connect_timeout=2),
    ),
]


@pytest.fixture(params=CANDIDATES, ids=lambda candidate: candidate.name)
def candidate(request: pytest.FixtureRequest) -> Candidate:
    value: Candidate = request.param
    return value


@pytest.fixture
def env(servers: Any, ws_servers: Any, wire: Any) -> Env:
    return Env(servers, ws_servers, wire)


def echo_params(candidate: Candidate, env: Env, message: str) -> Any:
    params = {"name": "echo", "arguments": {"message": message}}
    return env.wire.modern_params(params) if candidate.modern else params


async def test_a_request_gets_its_response(candidate: Candidate, env: Env) -> None:
    async with candidate.open(env) as transport:
        answer = await env.wire.call(transport, "tools/call", echo_params(candidate, env, "one"))
        assert isinstance(answer, Response)
        assert from_raw(answer.result)["content"][0]["text"] == "Echo: one"


async def test_pipelined_requests_all_get_their_own_answers(candidate: Candidate, env: Env) -> None:
    async with candidate.open(env) as transport:
        requests = [
            env.wire.request("tools/call", echo_params(candidate, env, f"m{i}")) for i in range(8)
        ]
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for request in requests:
                    tg.start_soon(transport.send, request)
            texts: dict[Any, str] = {}
            while len(texts) < len(requests):
                message = await transport.receive()
                if isinstance(message, Response):
                    texts[message.id] = from_raw(message.result)["content"][0]["text"]
        assert texts == {request.id: f"Echo: m{i}" for i, request in enumerate(requests)}


async def test_receive_after_close_raises_transport_closed(candidate: Candidate, env: Env) -> None:
    async with candidate.open(env) as transport:
        pass
    with pytest.raises(TransportClosed):
        await transport.receive()


async def test_send_after_close_raises_transport_closed(candidate: Candidate, env: Env) -> None:
    async with candidate.open(env) as transport:
        pass
    with pytest.raises(TransportClosed):
        await transport.send(env.wire.request("tools/list"))


async def test_aclose_is_idempotent(candidate: Candidate, env: Env) -> None:
    async with candidate.open(env) as transport:
        with anyio.fail_after(5):
            await transport.aclose()
            await transport.aclose()
        with pytest.raises(TransportClosed):
            await transport.receive()


async def test_a_receiver_waiting_while_the_transport_closes_gets_transport_closed(
    candidate: Candidate, env: Env
) -> None:
    outcome: list[BaseException] = []
    waiting = anyio.Event()

    async def receive_one(transport: Transport) -> None:
        waiting.set()
        try:
            await transport.receive()
        except TransportError as exc:
            outcome.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg, candidate.open(env) as transport:
            tg.start_soon(receive_one, transport)
            await waiting.wait()
    assert len(outcome) == 1
    assert isinstance(outcome[0], TransportClosed)


async def test_an_unreachable_server_raises_a_typed_connect_error(
    candidate: Candidate, env: Env
) -> None:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
    transport = candidate.unreachable(port)
    with anyio.fail_after(10), pytest.raises(ConnectError):
        async with transport:
            await transport.send(env.wire.request("tools/list"))
    with pytest.raises(TransportClosed):
        await transport.receive()


async def test_a_transport_is_entered_only_once(candidate: Candidate, env: Env) -> None:
    async with candidate.open(env) as transport:
        with pytest.raises(RuntimeError):
            await transport.__aenter__()
