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
