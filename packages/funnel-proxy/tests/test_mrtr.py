"""The multi-round-trip state funnel hands out: opaque, expiring, tamper-proof."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from funnel_proxy._mrtr import StateSealer, input_required, is_input_required
from funnel_transports import to_raw


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_sealed_state_names_its_call_until_it_expires() -> None:
    clock = Clock()
    sealer = StateSealer(ttl=60, clock=clock)
    state = sealer.seal("c1-abcd")
    assert sealer.unseal(state) == "c1-abcd"
    clock.now += 61
    assert sealer.unseal(state) is None


@given(st.text(min_size=1, max_size=40).filter(lambda s: "|" not in s))
def test_every_call_id_round_trips_whatever_bytes_its_mac_holds(call_id: str) -> None:
    sealer = StateSealer()
    assert sealer.unseal(sealer.seal(call_id)) == call_id


def test_a_state_from_another_funnel_or_altered_in_any_byte_is_refused() -> None:
    sealer, other = StateSealer(), StateSealer()
    state = sealer.seal("c1-abcd")
    assert other.unseal(state) is None
    token = state.removeprefix("funnel1.")
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for index in range(len(raw)):
        forged = bytearray(raw)
        forged[index] ^= 0x01
        text = "funnel1." + base64.urlsafe_b64encode(bytes(forged)).decode().rstrip("=")
        assert sealer.unseal(text) is None


@given(st.one_of(st.text(), st.integers(), st.none(), st.binary().map(repr)))
def test_anything_else_is_not_a_state_of_ours(value: object) -> None:
    sealer = StateSealer()
    if isinstance(value, str) and value.startswith("funnel1."):
        return
    assert sealer.unseal(value) is None


def test_an_input_required_result_is_recognised_without_being_fooled_by_its_text() -> None:
    assert is_input_required(input_required({"r1": {"method": "roots/list", "params": {}}}, "s"))
    assert not is_input_required(to_raw({"content": [{"type": "text", "text": "input_required"}]}))
    assert not is_input_required(to_raw({"resultType": "complete"}))
