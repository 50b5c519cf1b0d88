"""The inbound half shared by transport implementations.

A transport's reader task :meth:`~Inbox.put` s messages as they arrive and, when its
connection ends, calls :meth:`~Inbox.close` once with the reason. :meth:`~Inbox.get`
hands messages to the session in order and, after the last one, raises the reason:
:class:`TransportClosed` for a clean end, or the stored :class:`TransportError` for a
failure. The error is kept beside the stream, never sent through it as a value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeAlias

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from funnel_transports._errors import TransportClosed, TransportError
from funnel_transports._jsonrpc import Message

__all__ = ["Inbox", "MessageSink"]

MessageSink: TypeAlias = Callable[[Message], None]
"""Takes one inbound message on the transport's reader task; must not block or raise."""


class Inbox:
    """An unbounded, closeable queue of inbound messages with a terminal reason.

    Unbounded on purpose: the reader must never block on a slow consumer while the peer
    waits for an answer to a message the consumer is itself waiting to send (a classic
    stdio deadlock). Memory is bounded by the peer's own message rate and size limit.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        send: MemoryObjectSendStream[Message]
        receive: MemoryObjectReceiveStream[Message]
        send, receive = anyio.create_memory_object_stream[Message](math.inf)
        self._send = send
        self._receive = receive
        self._reason: TransportError | None = None
        self._closed = False
        self._sink: MessageSink | None = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    @property
    def reason(self) -> TransportError | None:
        """Why the stream ended (``None`` while open, or after a clean close)."""
        return self._reason

    def put(self, message: Message) -> None:
        """Queue one inbound message, or hand it to the attached sink (ignored once closed)."""
        if self._closed:
            return
        if self._sink is not None:
            self._sink(message)
        else:
            self._send.send_nowait(message)

    def attach(self, sink: MessageSink) -> None:
        """From now on hand every message to ``sink`` at once instead of queueing it.

        What is queued already goes to ``sink`` first, in order; :meth:`get` then only
        waits for the end and raises its reason.
        """
        while True:
            try:
                sink(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        self._sink = sink

    def close(self, reason: TransportError | None = None) -> None:
        """End the stream; later :meth:`get` calls raise ``reason`` once drained.

        Only the first reason counts: later calls are ignored.
        """
        if self.closed:
            return
        self._reason = reason
        self._closed = True
        self._sink = None
        self._send.close()

    async def get(self) -> Message:
        """Return the next message, or raise the terminal reason after the last one."""
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if self._reason is not None:
                raise self._reason from None
            raise TransportClosed(f"{self._name}: transport closed") from None

    def aclose_receiver(self) -> None:
        """Release the receiving side (called by the owning transport on close)."""
        self._receive.close()
