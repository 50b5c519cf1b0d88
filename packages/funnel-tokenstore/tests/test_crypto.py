"""StateKeys: sealing, rotation, purpose separation, and every way a sealed value can be wrong."""

from __future__ import annotations

import pytest

from funnel_tokenstore import (
    StateKeys,
    TokenStoreConfigError,
    TokenStoreCorrupt,
    generate_state_key,
)


def test_seal_opens_and_hides_the_plaintext() -> None:
    keys = StateKeys.parse(generate_state_key())
    sealed = keys.seal(b"refresh-token-value", aad=b"server/a")
    assert b"refresh-token-value" not in sealed
    assert keys.open(sealed, aad=b"server/a") == b"refresh-token-value"
    assert keys.seal(b"x") != keys.seal(b"x")  # a fresh nonce each time


def test_a_value_moved_to_another_place_does_not_open() -> None:
    keys = StateKeys.parse(generate_state_key())
    sealed = keys.seal(b"secret", aad=b"server/a")
    with pytest.raises(TokenStoreCorrupt, match="integrity"):
        keys.open(sealed, aad=b"server/b")


@pytest.mark.parametrize("position", [0, 3, 12, 30, -1])
def test_any_flipped_byte_is_refused(position: int) -> None:
    keys = StateKeys.parse(generate_state_key())
    sealed = bytearray(keys.seal(b"secret value"))
    sealed[position] ^= 0x01
    with pytest.raises(TokenStoreCorrupt):
        keys.open(bytes(sealed))


def test_rotation_old_values_open_new_ones_use_the_first_key() -> None:
    old, new = generate_state_key(), generate_state_key()
    before = StateKeys.parse(old).seal(b"v")
    rotated = StateKeys.parse(f"{new},{old}")
    assert rotated.open(before) == b"v"
    assert not rotated.is_current(before)
    assert rotated.is_current(rotated.seal(b"v"))
    with pytest.raises(TokenStoreCorrupt, match="no longer configured"):
        StateKeys.parse(new).open(before)


def test_derived_keys_are_independent_and_rotate_too() -> None:
    old, new = generate_state_key(), generate_state_key()
    sessions = StateKeys.parse(old).derive("sessions")
    sealed = sessions.seal(b"s")
    with pytest.raises(TokenStoreCorrupt):
        StateKeys.parse(old).derive("tokens").open(sealed)
    assert StateKeys.parse(f"{new},{old}").derive("sessions").open(sealed) == b"s"


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "no state key"), ("not base64!", "base64url"), ("c2hvcnQ", "5 bytes")],
)
def test_bad_key_text_is_a_config_error_that_does_not_echo_it(text: str, message: str) -> None:
    with pytest.raises(TokenStoreConfigError, match=message) as caught:
        StateKeys.parse(text)
    assert (not text) or text not in str(caught.value)


def test_the_same_key_twice_is_refused() -> None:
    key = generate_state_key()
    with pytest.raises(TokenStoreConfigError, match="twice"):
        StateKeys.parse(f"{key},{key}")


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUNNEL_STATE_KEY", raising=False)
    assert StateKeys.from_env() is None
    monkeypatch.setenv("FUNNEL_STATE_KEY", generate_state_key())
    keys = StateKeys.from_env()
    assert keys is not None
    assert keys.open(keys.seal(b"x")) == b"x"
    assert repr(keys) == "StateKeys(1 keys)"
