"""Handshake-era MCP sessions carried in their ``Mcp-Session-Id``: sealing, opening, records.

Theory of operation. Behind a round-robin load balancer a session's second message
already lands on another replica. So the session id *is* the session: its immutable
state (what ``initialize`` said: protocol version, client info and capabilities), a
random session number and an absolute expiry, encoded with msgpack and sealed with
AES-256-GCM under ``StateKeys.derive("mcp-sessions")`` (:class:`Sealer`). Any replica
with the same key opens it and rebuilds an initialized session without asking anyone;
one sealed by another deployment, tampered with, truncated or expired opens to ``None``
and is answered like an unknown session. Rotation: a ticket sealed under an older key
still opens while that key is configured.

What changes after ``initialize`` (the ``logging/setLevel`` level, the
``resources/subscribe`` set, the session being ended by DELETE) cannot live in an id the
client never changes: it is a :class:`SessionRecord` kept, sealed too, in a shared
:class:`~funnel_proxy.SessionStore` under the session number, expiring with the session.
Nothing here does I/O or reads a clock; callers pass ``now`` (wall-clock seconds, since
replicas compare expiries made by each other).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final, Protocol

import msgspec

__all__ = [
    "MAX_TICKET_BYTES",
    "Sealer",
    "SessionRecord",
    "SessionTicket",
    "TicketTooLarge",
    "open_record",
    "open_ticket",
    "seal_record",
    "seal_ticket",
]

#: The largest ticket plaintext (msgpack) accepted: the id stays under ~3 KiB of header.
MAX_TICKET_BYTES: Final = 2048
_TICKET_AAD: Final = b"funnel mcp session ticket v1"
_RECORD_AAD: Final = b"funnel mcp session record v1:"
#: Text form of a sealed ticket: a prefix (so a random id of old is never mistaken for
#: one) and unpadded base64url, every character legal in a header value.
_PREFIX: Final = "s1."


class Sealer(Protocol):
    """Authenticated encryption with rotation (:class:`funnel_tokenstore.StateKeys` is one)."""

    def seal(self, plaintext: bytes, *, aad: bytes = b"") -> bytes:
        """Encrypt and authenticate ``plaintext``, bound to ``aad``."""
        ...

    def open(self, sealed: bytes, *, aad: bytes = b"") -> bytes:
        """Check and decrypt what :meth:`seal` made; raise on anything else."""
        ...


class TicketTooLarge(ValueError):
    """The client's ``initialize`` is too large to carry in a session id."""


class SessionTicket(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """What ``initialize`` established, carried (sealed) in the session id.

    Attributes:
        number: 16 random bytes naming the session (its shared record is keyed by it).
        protocol_version: The version the client asked for in ``initialize``.
        client_info: The client's ``clientInfo``.
        capabilities: The client's ``capabilities``.
        expires: Wall-clock seconds after which the id is no longer accepted.
    """

    number: bytes
    protocol_version: str | None
    client_info: dict[str, Any]
    capabilities: dict[str, Any]
    expires: float

    @property
    def key(self) -> str:
        """The session's name in the shared store and on the bus (not the secret id)."""
        return self.number.hex()

    def initialize_params(self) -> dict[str, Any]:
        """The ``initialize`` params that rebuild the session elsewhere."""
        params: dict[str, Any] = {
            "capabilities": self.capabilities,
            "clientInfo": self.client_info,
        }
        if self.protocol_version is not None:
            params["protocolVersion"] = self.protocol_version
        return params


class SessionRecord(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A session's state that changes after ``initialize``, shared by every replica.

    Attributes:
        level: The ``logging/setLevel`` level, if the client set one.
        uris: The resources the client subscribed to.
        ended: The client ended the session (DELETE): every replica answers 404.
    """

    level: str | None = None
    uris: tuple[str, ...] = ()
    ended: bool = False


_encoder: Final = msgspec.msgpack.Encoder()
_ticket_decoder: Final = msgspec.msgpack.Decoder(SessionTicket)
_record_decoder: Final = msgspec.msgpack.Decoder(SessionRecord)


def seal_ticket(ticket: SessionTicket, sealer: Sealer) -> str:
    """The session id carrying ``ticket``.

    Raises:
        TicketTooLarge: The ticket encodes to more than :data:`MAX_TICKET_BYTES`.
    """
    plaintext = _encoder.encode(ticket)
    if len(plaintext) > MAX_TICKET_BYTES:
        raise TicketTooLarge(
            f"the client's initialize (capabilities and clientInfo) is {len(plaintext)} bytes "
            f"encoded; a session id carries at most {MAX_TICKET_BYTES}"
        )
    sealed = sealer.seal(plaintext, aad=_TICKET_AAD)
    return _PREFIX + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")


def open_ticket(session_id: str, sealer: Sealer, *, now: float) -> SessionTicket | None:
    """The ticket a session id carries, or ``None`` if it is not a valid, unexpired one.

    Never raises: whatever the client sends is at worst an unknown session.
    """
    # A sealed ticket is at most ~2.8 KiB of text: refuse a longer one before decoding it.
    if not session_id.startswith(_PREFIX) or len(session_id) > 4 * MAX_TICKET_BYTES:
        return None
    text = session_id[len(_PREFIX) :]
    try:
        sealed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    try:
        plaintext = sealer.open(sealed, aad=_TICKET_AAD)
    except Exception:  # noqa: BLE001 - any failure to open (tampered, other key) is "unknown"
        return None
    try:
        ticket = _ticket_decoder.decode(plaintext)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if len(ticket.number) != 16 or not ticket.expires > now:
        return None
    return ticket


def seal_record(key: str, record: SessionRecord, sealer: Sealer) -> bytes:
    """``record`` as stored under ``key`` (bound to it: it opens nowhere else)."""
    return sealer.seal(_encoder.encode(record), aad=_RECORD_AAD + key.encode())


def open_record(key: str, data: bytes, sealer: Sealer) -> SessionRecord | None:
    """The record stored under ``key``, or ``None`` if ``data`` is not one (never raises)."""
    try:
        return _record_decoder.decode(sealer.open(data, aad=_RECORD_AAD + key.encode()))
    except Exception:  # noqa: BLE001 - a record that does not open is treated as absent
        return None
