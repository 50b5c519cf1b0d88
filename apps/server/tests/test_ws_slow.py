"""``/ws`` with a client that does not read: bounded memory, a drop marker, or a disconnect.

In-process fakes: a socket whose sends block until released (a client that stopped
reading, once the kernel buffers are full), and a funnel whose events the test sends.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from funnel_proxy import BackendState, FunnelEvent
from funnel_server._ws import WsConnection

pytestmark = pytest.mark.anyio


class StuckSocket:
    """A WebSocket whose every send waits for ``release``; records what was sent."""

    def __init__(self) -> None:
        self.to_server, self._incoming = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        self._sent_in, self.sent = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        self.release = anyio.Event()
        self.closed: int | None = None

    def client_sends(self, text: str) -> None:
        self.to_server.send_nowait({"type": "websocket.receive", "text": text})

    async def receive(self) -> dict[str, Any]:
        return await self._incoming.receive()

    async def send_text(self, data: str) -> None:
        self._sent_in.send_nowait(json.loads(data))
        await self.release.wait()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = code

    def aclose_all(self) -> None:
        for stream in (self.to_server, self._incoming, self._sent_in, self.sent):
            stream.close()


class EventsFunnel:
    """The part of a Funnel that /ws subscribers use, with events the test sends."""

    def __init__(self) -> None:
        # Unbuffered: a send returns once the subscriber has taken the event.
        self.emit, self._events = anyio.create_memory_object_stream[FunnelEvent](0)
        self.state = BackendState(name="demo", transport="stdio", status="connected")

    @asynccontextmanager
    async def events(self) -> AsyncIterator[MemoryObjectReceiveStream[FunnelEvent]]:
        async with self._events:
            yield self._events

    def states(self) -> list[BackendState]:
        return [self.state]

    @asynccontextmanager
    async def client(self, client: object) -> AsyncIterator[None]:
        # A /ws connection is a client of the funnel while open (it answers elicitations).
        yield


async def next_sent(socket: StuckSocket) -> dict[str, Any]:
    with anyio.fail_after(5):
        return await socket.sent.receive()


async def test_a_subscriber_that_falls_behind_gets_a_drop_marker_and_a_fresh_snapshot() -> None:
    socket, funnel = StuckSocket(), EventsFunnel()
    connection = WsConnection(cast(Any, socket), cast(Any, funnel), max_queued=8)
    async with anyio.create_task_group() as tg:
        tg.start_soon(connection.run)
        socket.client_sends(json.dumps({"type": "subscribe", "events": ["server.status"]}))
        first = await next_sent(socket)  # the snapshot, stuck in the socket
        assert first["type"] == "server.status"
        with anyio.fail_after(5):
            for n in range(100):
                state = BackendState(
                    name="demo", transport="stdio", status="reconnecting", attempt=n
                )
                await funnel.emit.send(FunnelEvent(kind="status", state=state))
            # Not subscribed: ignored, and once taken every status event before it was handled.
            await funnel.emit.send(FunnelEvent(kind="list_changed", lists=frozenset({"tools"})))
        assert connection.dropped == 100 - 8, "eight wait in the outbox, the rest are dropped"
        socket.release.set()
        queued = [await next_sent(socket) for _ in range(8)]
        marker = await next_sent(socket)
        fresh = await next_sent(socket)
        socket.to_server.send_nowait({"type": "websocket.disconnect"})
    socket.aclose_all()
    funnel.emit.close()
    assert [m["type"] for m in queued] == ["server.status"] * 8
    assert marker == {"type": "events.dropped", "count": 92}
    assert fresh == {
        "type": "server.status",
        "server": "demo",
        "status": "connected",
        "toolCount": 0,
    }
    assert socket.closed is None


async def test_a_client_that_leaves_its_answers_unread_is_disconnected() -> None:
    socket, funnel = StuckSocket(), EventsFunnel()
    connection = WsConnection(cast(Any, socket), cast(Any, funnel), max_queued=4)
    for _ in range(10):
        socket.client_sends("not json")  # each one is answered with an error message
    with anyio.fail_after(5):
        await connection.run()  # returns: the connection ended itself
    answers = []
    while True:
        try:
            answers.append(socket.sent.receive_nowait())
        except anyio.WouldBlock:
            break
    socket.aclose_all()
    funnel.emit.close()
    assert socket.closed == 1008
    assert [a["type"] for a in answers] == ["error"], "one answer reached the stuck socket"
