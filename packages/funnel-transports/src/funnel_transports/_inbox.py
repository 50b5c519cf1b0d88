"""The inbound half shared by transport implementations.

A transport's reader task :meth:`~Inbox.put` s messages as they arrive and, when its
connection ends, calls :meth:`~Inbox.close` once with the reason. :meth:`~Inbox.get`
hands messages to the session in order and, after the last one, raises the reason:
:class:`TransportClosed` for a clean end, or the stored :class:`TransportError` for a
failure. The error is kept beside the stream, never sent through it as a value.
"""

from __future__ import annotations

import math

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from funnel_transports._errors import TransportClosed, TransportError
from funnel_transports._jsonrpc import Message

__all__ = ["Inbox"]


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

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    @property
    def reason(self) -> TransportError | None:
        """Why the stream ended (``None`` while open, or after a clean close)."""
        return self._reason

    def put(self, message: Message) -> None:
        """Queue one inbound message (ignored once closed)."""
        if not self.closed:
            self._send.send_nowait(message)

    def close(self, reason: TransportError | None = None) -> None:
        """End the stream; later :meth:`get` calls raise ``reason`` once drained.

        Only the first reason counts: later calls are ignored.
        """
        if self.closed:
            return
        self._reason = reason
        self._closed = True
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
