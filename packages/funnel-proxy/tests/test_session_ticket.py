"""Session ids that carry their sealed state: pure, no I/O (property-based for tampering)."""

from __future__ import annotations

import base64
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnel_proxy._session_sharing import BusMessage, decode_bus, encode_bus
from funnel_proxy._session_ticket import (
    MAX_TICKET_BYTES,
    SessionRecord,
    SessionTicket,
    TicketTooLarge,
    open_record,
    open_ticket,
    seal_record,
    seal_ticket,
)
from funnel_tokenstore import StateKeys

KEY = StateKeys([b"k" * 32]).derive("mcp-sessions")
NOW = 1_800_000_000.0


def ticket(expires: float = NOW + 3600, **overrides: object) -> SessionTicket:
    fields: dict[str, object] = {
        "number": b"\x01" * 16,
        "protocol_version": "2025-11-25",
        "client_info": {"name": "agent", "version": "1.0"},
        "capabilities": {"sampling": {}, "elicitation": {"form": {}}},
        "expires": expires,
    }
    fields.update(overrides)
    return SessionTicket(**fields)  # type: ignore[arg-type]


def test_a_sealed_id_opens_to_the_same_ticket_with_the_same_key() -> None:
    session_id = seal_ticket(ticket(), KEY)
    assert open_ticket(session_id, KEY, now=NOW) == ticket()
    assert ticket().initialize_params() == {
        "protocolVersion": "2025-11-25",
        "clientInfo": {"name": "agent", "version": "1.0"},
        "capabilities": {"sampling": {}, "elicitation": {"form": {}}},
    }


def test_a_sealed_id_is_header_safe_and_bounded() -> None:
    session_id = seal_ticket(ticket(), KEY)
    assert all(0x21 <= ord(c) <= 0x7E for c in session_id)
    assert len(session_id) < 4 * MAX_TICKET_BYTES
    # Sealing is randomised: two ids for the same state differ.
    assert seal_ticket(ticket(), KEY) != session_id


def test_an_id_from_another_deployment_does_not_open() -> None:
    other = StateKeys([b"o" * 32]).derive("mcp-sessions")
    assert open_ticket(seal_ticket(ticket(), other), KEY, now=NOW) is None


def test_an_id_sealed_for_another_purpose_does_not_open() -> None:
    tokens = StateKeys([b"k" * 32]).derive("tokens")
    assert open_ticket(seal_ticket(ticket(), tokens), KEY, now=NOW) is None


def test_an_id_sealed_before_a_rotation_still_opens_until_its_key_is_dropped() -> None:
    old = StateKeys([b"k" * 32])
    rotated = StateKeys([b"n" * 32, b"k" * 32])
    session_id = seal_ticket(ticket(), old.derive("mcp-sessions"))
    assert open_ticket(session_id, rotated.derive("mcp-sessions"), now=NOW) == ticket()
    dropped = StateKeys([b"n" * 32])
    assert open_ticket(session_id, dropped.derive("mcp-sessions"), now=NOW) is None


@given(lifetime=st.floats(min_value=-1e6, max_value=1e6), elapsed=st.floats(0, 2e6))
def test_an_id_opens_exactly_until_it_expires(lifetime: float, elapsed: float) -> None:
    session_id = seal_ticket(ticket(expires=NOW + lifetime), KEY)
    opened = open_ticket(session_id, KEY, now=NOW + elapsed)
    assert (opened is not None) == (NOW + elapsed < NOW + lifetime)


@settings(max_examples=300)
@given(data=st.data())
def test_any_change_to_a_sealed_id_makes_it_unknown(data: st.DataObject) -> None:
    session_id = seal_ticket(ticket(), KEY)
    raw = bytearray(base64.urlsafe_b64decode(session_id[3:] + "=" * (-len(session_id[3:]) % 4)))
    index = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, 7))
    raw[index] ^= 1 << bit
    tampered = "s1." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert open_ticket(tampered, KEY, now=NOW) is None


@settings(max_examples=300)
@given(text=st.one_of(st.text(), st.text().map(lambda t: "s1." + t)))
def test_whatever_a_client_sends_as_an_id_opens_to_none_and_never_raises(text: str) -> None:
    assert open_ticket(text, KEY, now=NOW) is None


@given(cut=st.integers(1, 60))
def test_a_truncated_id_is_unknown(cut: int) -> None:
    session_id = seal_ticket(ticket(), KEY)
    assert open_ticket(session_id[:-cut], KEY, now=NOW) is None


def test_a_ticket_too_large_for_a_header_is_refused() -> None:
    huge = ticket(capabilities={"experimental": {"blob": "x" * MAX_TICKET_BYTES}})
    with pytest.raises(TicketTooLarge, match="at most 2048"):
        seal_ticket(huge, KEY)


def test_a_record_opens_only_under_the_key_it_was_stored_under() -> None:
    record = SessionRecord(level="debug", uris=("file:///a",))
    data = seal_record("mcp-session:aa", record, KEY)
    assert open_record("mcp-session:aa", data, KEY) == record
    assert open_record("mcp-session:bb", data, KEY) is None
    assert open_record("mcp-session:aa", data[:-1] + bytes([data[-1] ^ 1]), KEY) is None
    assert open_record("mcp-session:aa", b"garbage", KEY) is None


def test_bus_messages_round_trip_and_foreign_payloads_are_ignored() -> None:
    message = BusMessage(origin="r1", kind="record", session="ab", record=SessionRecord(ended=True))
    assert decode_bus(encode_bus(message, KEY), KEY) == message
    other = StateKeys([secrets.token_bytes(32)])
    assert decode_bus(encode_bus(message, other), KEY) is None
    assert decode_bus(b"hello", KEY) is None
