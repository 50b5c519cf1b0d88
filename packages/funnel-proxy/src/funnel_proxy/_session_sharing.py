"""What replicas of the MCP endpoint share: a store, a bus, and the messages on it.

Theory of operation. :class:`McpHttpEndpoint` needs two things from a deployment's
shared state (funnel-server's ``SharedState`` over Valkey/Redis provides both; anything
with these methods will do):

- a :class:`SessionStore`, a key/value store with expiry, for each session's
  :class:`~funnel_proxy._session_ticket.SessionRecord` (log level, subscriptions,
  ended), read once by a replica the first time it sees a session;
- an :class:`EventBus`, at-most-once publish/subscribe, on which a replica announces
  what the others must apply now: a session's record changed (they replay it on the
  session if they hold it), a session ended (they drop it), a list changed (they tell
  their own GET and ``subscriptions/listen`` streams), a client answered a request
  another replica sent it (that replica takes the answer).

Every bus message is sealed (so only a replica with the state key can end a session or
change its level) and names its origin replica, whose own echo it ignores. The codec
here is pure; :class:`McpHttpEndpoint` does the I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

import msgspec

from funnel_proxy._session_ticket import Sealer, SessionRecord

__all__ = ["BusMessage", "EventBus", "SessionSharing", "SessionStore", "decode_bus", "encode_bus"]

#: The bus channel the endpoint's replicas talk on.
SESSION_CHANNEL: Final = "mcp-sessions"
_BUS_AAD: Final = b"funnel mcp bus v1"


class EventBus(Protocol):
    """At-most-once publish/subscribe between replicas (``SharedState`` is one)."""

    async def publish(self, channel: str, payload: bytes) -> None:
        """Send ``payload`` to every subscriber of ``channel``, this replica's included."""
        ...

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterable[bytes]]:
        """Receive ``channel``'s payloads while the block runs (bounded; may drop)."""
        ...


class SessionStore(Protocol):
    """A shared key/value store whose entries expire."""

    async def get(self, key: str) -> bytes | None:
        """The value under ``key``, or ``None``."""
        ...

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds."""
        ...


@dataclass(frozen=True, kw_only=True)
class SessionSharing:
    """How an endpoint's replicas share sessions and events.

    Args:
        bus: The replicas' bus.
        store: The replicas' store.
        replica: This replica's id (unique among the replicas; a random one is fine).
    """

    bus: EventBus
    store: SessionStore
    replica: str = field(default="")


class BusMessage(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One announcement between replicas.

    Attributes:
        origin: The replica that sent it.
        kind: ``record`` (a session's record changed; ``ended`` in it ends it),
            ``lists`` (lists changed on the origin's backends) or ``answer`` (the
            client answered a request that ``target`` sent it, and the answer reached
            the origin).
        session: The session's key (``record``).
        record: The session's new record (``record``).
        lists: Which lists changed (``lists``): ``tools``, ``prompts``, ``resources``.
        target: The replica the message is for (``answer``).
        payload: The client's JSON-RPC answer, encoded (``answer``).
    """

    origin: str
    kind: Literal["record", "lists", "answer"]
    session: str = ""
    record: SessionRecord | None = None
    lists: tuple[str, ...] = ()
    target: str = ""
    payload: bytes = b""


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(BusMessage)


def encode_bus(message: BusMessage, sealer: Sealer) -> bytes:
    """``message`` sealed for the bus."""
    return sealer.seal(_encoder.encode(message), aad=_BUS_AAD)


def decode_bus(payload: bytes, sealer: Sealer) -> BusMessage | None:
    """The message a bus payload carries, or ``None`` if it is not a sealed one (never raises)."""
    try:
        return _decoder.decode(sealer.open(payload, aad=_BUS_AAD))
    except Exception:  # noqa: BLE001 - a foreign or broken payload is ignored
        return None
