"""The contract every client transport fulfils.

A transport moves whole JSON-RPC messages between this process and one MCP server. It
knows nothing of MCP semantics beyond what its wire demands (HTTP transports read the
method to set headers); request correlation, timeouts and negotiation live in
:class:`~funnel_transports.ClientSession`.

Lifecycle: ``async with transport:`` connects (for stdio: spawns the process) and returns
only once messages can flow; leaving the block closes it, bounded in time and shielded
from cancellation. :meth:`Transport.receive` returns the next inbound message and raises
:class:`TransportClosed` once the transport was closed by us or the peer ended cleanly,
or a :class:`ConnectionLost` when the connection broke. Batches a peer sends arrive as
their individual messages.

Two optional fast paths, which :class:`~funnel_transports.ClientSession` uses when a
transport has them (the stdio transport has both; the HTTP ones have ``attach``):

* ``send_nowait(message) -> None`` sends or queues a message without waiting (bounded;
  raises like :meth:`Transport.send`), so a request costs no task;
* ``attach(sink)`` makes the transport's own reader call ``sink(message)`` for every
  inbound message instead of queueing it for :meth:`Transport.receive`, which then only
  reports the end of the connection.
"""

from __future__ import annotations

from typing import Any, Protocol, Self, runtime_checkable

from funnel_transports._jsonrpc import Message

__all__ = ["Transport"]


@runtime_checkable
class Transport(Protocol):
    """A bidirectional stream of JSON-RPC messages to one MCP server."""

    @property
    def name(self) -> str:
        """The server's name, used in log lines and error messages."""
        ...

    async def send(self, message: Message) -> None:
        """Send one message.

        Raises:
            TransportClosed: The transport is closed.
            ConnectionLost: The connection broke while sending.
            AuthRequired: (HTTP) the server wants authorization the auth cannot give.
        """
        ...

    async def receive(self) -> Message:
        """Wait for the next message from the server.

        Raises:
            TransportClosed: The transport was closed, or the peer ended cleanly.
            ConnectionLost: The connection broke.
        """
        ...

    def set_protocol_version(self, version: str) -> None:
        """Tell the transport which MCP protocol version the session negotiated.

        HTTP transports send it as ``MCP-Protocol-Version`` and switch between the
        session-based and the stateless (2026-07-28) behaviour; others ignore it.
        """
        ...

    async def aclose(self) -> None:
        """Close the transport and release everything it holds (idempotent)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: Any) -> bool | None: ...
