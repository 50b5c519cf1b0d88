"""EncryptedTokenStore: the contract over memory, file and Redis; sealing, rotation, migration."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnel_tokenstore import (
    EncryptedTokenStore,
    FileTokenStore,
    KeyringTokenStore,
    MemoryTokenStore,
    RedisTokenStore,
    Rotation,
    StateKeys,
    TokenStore,
    TokenStoreConfigError,
    TokenStoreCorrupt,
    generate_state_key,
)
from funnel_tokenstore.testing import TokenStoreContract

KEY = StateKeys.parse(generate_state_key())


class TestEncryptedMemory(TokenStoreContract):
    @pytest.fixture
    def store(self) -> TokenStore:
        return EncryptedTokenStore(MemoryTokenStore(), KEY)


class TestEncryptedFile(TokenStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> TokenStore:
        return EncryptedTokenStore(FileTokenStore(tmp_path / "tokens.json"), KEY)


class TestEncryptedRedis(TokenStoreContract):
    @pytest.fixture
    async def store(self, redis_url: str) -> AsyncIterator[TokenStore]:
        namespace = f"t{secrets.token_hex(6)}"
        async with RedisTokenStore(redis_url, namespace=namespace) as inner:
            yield EncryptedTokenStore(inner, KEY)


# -- what lands in the inner store ----------------------------------------------------


@pytest.mark.anyio
async def test_the_inner_store_only_ever_holds_sealed_values(tmp_path: Path) -> None:
    inner = FileTokenStore(tmp_path / "tokens.json")
    store = EncryptedTokenStore(inner, KEY)
    await store.set("oauth:github", b"refresh-token-in-clear")
    raw = await inner.get("oauth:github")
    assert raw is not None
    assert raw.startswith(b"fs1")
    assert b"refresh-token-in-clear" not in raw
    assert b"refresh-token" not in (tmp_path / "tokens.json").read_bytes()
    assert await store.get("oauth:github") == b"refresh-token-in-clear"
    assert await store.keys() == ["oauth:github"]


@pytest.mark.anyio
async def test_a_value_swapped_to_another_key_does_not_open_and_is_left_alone() -> None:
    inner = MemoryTokenStore()
    store = EncryptedTokenStore(inner, KEY)
    await store.set("server-a", b"token of a")
    await store.set("server-b", b"token of b")
    sealed_a = await inner.get("server-a")
    assert sealed_a is not None
    await inner.set("server-b", sealed_a)
    with pytest.raises(TokenStoreCorrupt, match="'server-b'") as caught:
        await store.get("server-b")
    assert "token of" not in str(caught.value)
    assert await inner.get("server-b") == sealed_a  # untouched
    assert await store.get("server-a") == b"token of a"


@pytest.mark.anyio
async def test_a_value_under_a_removed_key_says_so() -> None:
    inner = MemoryTokenStore()
    await EncryptedTokenStore(inner, KEY).set("k", b"v")
    other = EncryptedTokenStore(inner, StateKeys.parse(generate_state_key()))
    with pytest.raises(TokenStoreCorrupt, match="no longer configured"):
        await other.get("k")


@pytest.mark.anyio
async def test_values_are_sealed_under_a_derived_key_not_the_configured_one() -> None:
    inner = MemoryTokenStore()
    await EncryptedTokenStore(inner, KEY).set("k", b"v")
    raw = await inner.get("k")
    assert raw is not None
    with pytest.raises(TokenStoreCorrupt):
        KEY.open(raw, aad=b"k")  # another funnel part using the raw key cannot read it


# -- rotation ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_value_under_an_old_key_is_resealed_on_read() -> None:
    old, new = generate_state_key(), generate_state_key()
    inner = MemoryTokenStore()
    await EncryptedTokenStore(inner, StateKeys.parse(old)).set("k", b"value")
    before = await inner.get("k")
    rotated = EncryptedTokenStore(inner, StateKeys.parse(f"{new},{old}"))
    assert await rotated.get("k") == b"value"
    after = await inner.get("k")
    assert after != before
    # Now only the new key is needed.
    assert await EncryptedTokenStore(inner, StateKeys.parse(new)).get("k") == b"value"


@pytest.mark.anyio
async def test_resealing_never_overwrites_a_value_written_meanwhile() -> None:
    old, new = generate_state_key(), generate_state_key()
    rotated_keys = StateKeys.parse(f"{new},{old}")

    class AnotherWriterRaces(MemoryTokenStore):
        """Another replica stores a fresh token between our read and our write-back."""

        async def get(self, key: str) -> bytes | None:
            value = await super().get(key)
            await super().set(key, self.fresh)
            return value

        fresh = b""

    inner = AnotherWriterRaces()
    await EncryptedTokenStore(inner, StateKeys.parse(old)).set("k", b"old token")
    fresh_store = EncryptedTokenStore(MemoryTokenStore(), rotated_keys)
    await fresh_store.set("k", b"new token")
    fresh = await fresh_store.inner.get("k")
    assert fresh is not None
    inner.fresh = fresh
    assert await EncryptedTokenStore(inner, rotated_keys).get("k") == b"old token"
    assert await MemoryTokenStore.get(inner, "k") == fresh  # the racing write survived


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["memory", "file", "redis"])
async def test_rotate_reseals_every_value_and_reports_corrupt_ones(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    old, new = generate_state_key(), generate_state_key()
    inner: TokenStore
    if kind == "memory":
        inner = MemoryTokenStore()
    elif kind == "file":
        inner = FileTokenStore(tmp_path / "tokens.json")
    else:
        url = request.getfixturevalue("redis_url")
        inner = RedisTokenStore(url, namespace=f"t{secrets.token_hex(6)}")
    before = EncryptedTokenStore(inner, StateKeys.parse(old))
    for i in range(5):
        await before.set(f"k{i}", f"v{i}".encode())
    await inner.set("legacy", b"stored before a key was configured")
    await inner.set("broken", b"fs1 but not sealed at all, long enough to be checked")
    after = EncryptedTokenStore(inner, StateKeys.parse(f"{new},{old}"))
    await after.set("fresh", b"already current")
    with anyio.fail_after(30):
        report = await after.rotate()
    assert report == Rotation(
        resealed=("k0", "k1", "k2", "k3", "k4", "legacy"),
        current=("fresh",),
        corrupt=("broken",),
    )
    only_new = EncryptedTokenStore(inner, StateKeys.parse(new))
    for i in range(5):
        assert await only_new.get(f"k{i}") == f"v{i}".encode()
    assert await only_new.get("legacy") == b"stored before a key was configured"
    assert await inner.get("broken") == b"fs1 but not sealed at all, long enough to be checked"
    assert (await after.rotate(["k0", "fresh"])).current == ("k0", "fresh")
    if isinstance(inner, RedisTokenStore):
        await inner.aclose()


@pytest.mark.anyio
async def test_rotate_needs_a_store_that_can_list_or_compare(tmp_path: Path) -> None:
    class NoKeychain:
        def get_password(self, service: str, username: str) -> str | None:
            return None

        def set_password(self, service: str, username: str, password: str) -> None:
            pass

        def delete_password(self, service: str, username: str) -> None:
            pass

    keychain = KeyringTokenStore(backend=NoKeychain(), lock_dir=tmp_path / "locks")
    with pytest.raises(TokenStoreConfigError, match="compare-and-set"):
        await EncryptedTokenStore(keychain, KEY).rotate(["k"])

    class NoListing(MemoryTokenStore):
        keys = None  # type: ignore[assignment]  # a store without keys()

    with pytest.raises(TokenStoreConfigError, match="cannot list"):
        await EncryptedTokenStore(NoListing(), KEY).rotate()


# -- migration -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_unencrypted_value_is_read_as_it_is_and_sealed(tmp_path: Path) -> None:
    inner = FileTokenStore(tmp_path / "tokens.json")
    await inner.set("oauth:github", b'{"access_token": "from before"}')
    store = EncryptedTokenStore(inner, KEY)
    assert await store.get("oauth:github") == b'{"access_token": "from before"}'
    raw = await inner.get("oauth:github")
    assert raw is not None
    assert raw.startswith(b"fs1")
    assert b"from before" not in (tmp_path / "tokens.json").read_bytes()
    assert await store.get("oauth:github") == b'{"access_token": "from before"}'


@pytest.mark.anyio
async def test_without_migration_an_unencrypted_value_is_refused_and_kept() -> None:
    inner = MemoryTokenStore()
    await inner.set("k", b"plain")
    store = EncryptedTokenStore(inner, KEY, migrate_plaintext=False)
    with pytest.raises(TokenStoreCorrupt, match="not encrypted"):
        await store.get("k")
    assert await inner.get("k") == b"plain"


# -- properties ------------------------------------------------------------------------

# Every valid store key: printable ASCII, space to tilde.
store_keys = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=64).map(
    lambda k: k or "~"
)


@settings(max_examples=60, deadline=None)
@given(key=store_keys, value=st.binary(max_size=2048))
def test_any_value_under_any_key_round_trips_and_is_hidden(key: str, value: bytes) -> None:
    async def check() -> None:
        inner = MemoryTokenStore()
        store = EncryptedTokenStore(inner, KEY)
        await store.set(key, value)
        raw = await inner.get(key)
        assert raw is not None
        assert len(raw) == len(value) + 39  # marker, key id, nonce, tag: nothing else leaks
        if len(value) >= 8:
            assert value not in raw
        assert await store.get(key) == value

    anyio.run(check)


@settings(max_examples=60, deadline=None)
@given(
    a=store_keys,
    b=store_keys,
    value=st.binary(max_size=256),
)
def test_a_sealed_value_opens_under_its_own_key_only(a: str, b: str, value: bytes) -> None:
    async def check() -> None:
        inner = MemoryTokenStore()
        store = EncryptedTokenStore(inner, KEY)
        await store.set(a, value)
        sealed = await inner.get(a)
        assert sealed is not None
        await inner.set(b, sealed)
        if a == b:
            assert await store.get(b) == value
        else:
            with pytest.raises(TokenStoreCorrupt):
                await store.get(b)

    anyio.run(check)


@settings(max_examples=100, deadline=None)
@given(value=st.binary(max_size=256), data=st.data())
def test_any_tampering_is_refused_and_left_in_place(value: bytes, data: st.DataObject) -> None:
    async def check() -> None:
        inner = MemoryTokenStore()
        store = EncryptedTokenStore(inner, KEY)
        await store.set("k", value)
        sealed = await inner.get("k")
        assert sealed is not None
        how = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
        if how == "flip":
            position = data.draw(st.integers(0, len(sealed) - 1))
            bit = data.draw(st.integers(0, 7))
            tampered = bytearray(sealed)
            tampered[position] ^= 1 << bit
            bad = bytes(tampered)
        elif how == "truncate":
            bad = sealed[: data.draw(st.integers(3, len(sealed) - 1))]
        else:
            bad = sealed + data.draw(st.binary(min_size=1, max_size=16))
        await inner.set("k", bad)
        if not bad.startswith(b"fs1"):
            # Flipping the marker makes it look unencrypted: migration reads it as is,
            # which is why migrate_plaintext=False exists for stores nobody else writes.
            strict = EncryptedTokenStore(inner, KEY, migrate_plaintext=False)
            with pytest.raises(TokenStoreCorrupt):
                await strict.get("k")
        else:
            with pytest.raises(TokenStoreCorrupt):
                await store.get("k")
        assert await inner.get("k") == bad

    anyio.run(check)
