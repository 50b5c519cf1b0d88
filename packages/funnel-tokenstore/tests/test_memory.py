from __future__ import annotations

import pytest

from funnel_tokenstore import MemoryTokenStore, TokenStore
from funnel_tokenstore.testing import TokenStoreContract


class TestMemoryTokenStore(TokenStoreContract):
    @pytest.fixture
    def store(self) -> TokenStore:
        return MemoryTokenStore()


@pytest.mark.anyio
async def test_memory_store_keeps_a_copy_of_a_mutable_value() -> None:
    store = MemoryTokenStore()
    value = bytearray(b"original")
    await store.set("key", value)  # type: ignore[arg-type]  # a bytes-like caller mistake
    value[:] = b"mutated!"
    assert await store.get("key") == b"original"


@pytest.mark.anyio
async def test_memory_store_lists_keys_and_compares_and_sets() -> None:
    store = MemoryTokenStore()
    await store.set("b", b"1")
    await store.set("a", b"2")
    assert await store.keys() == ["a", "b"]
    assert not await store.compare_and_set("a", b"other", b"3")
    assert not await store.compare_and_set("missing", b"", b"3")
    assert await store.compare_and_set("a", b"2", b"3")
    assert await store.get("a") == b"3"
