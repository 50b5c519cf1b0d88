"""The contract every token store passes, as a reusable pytest suite.

Subclass :class:`TokenStoreContract` in a test module and provide a ``store`` fixture;
every test of the contract then runs against that store::

    import pytest
    from funnel_tokenstore import TokenStore
    from funnel_tokenstore.testing import TokenStoreContract

    class TestMyStore(TokenStoreContract):
        @pytest.fixture
        def store(self, tmp_path) -> TokenStore:
            return MyStore(tmp_path / "tokens")

The tests are async and marked ``anyio`` (they need pytest and anyio's pytest plugin,
which comes with anyio). For detailed assertion messages, call
``pytest.register_assert_rewrite("funnel_tokenstore.testing")`` in a ``conftest.py``
before anything imports this module. Every key a test uses starts with a random prefix and is deleted
afterwards, so the suite can run against a shared keychain. A store whose backend is slow
can lower :attr:`TokenStoreContract.large_value_size` and
:attr:`TokenStoreContract.concurrent_tasks`.
"""

# The contract is a pytest suite shipped as a module: its checks are plain asserts, which
# pytest rewrites when the module is registered (see the docstring).
# ruff: noqa: S101

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import AsyncIterator
from typing import ClassVar

import anyio
import anyio.lowlevel
import pytest

from funnel_tokenstore._errors import InvalidKey
from funnel_tokenstore._keys import MAX_KEY_LENGTH
from funnel_tokenstore._protocol import TokenStore
from funnel_tokenstore._redis_testing import RedisUnavailable, redis_server

__all__ = ["KeyFactory", "RedisUnavailable", "TokenStoreContract", "redis_server"]

#: Keys every store must keep apart and unchanged: punctuation, spaces, path-like and
#: URL-like text, and text that looks like a store's own internal names.
ODD_KEYS = (
    " leading and trailing spaces ",
    "slash/and\\backslash",
    "colon:semicolon;comma,",
    "quotes'\"`",
    "../../etc/passwd",
    "https://issuer.example/path?q=1&x=%20#frag",
    "{json}[array]<angle>",
    "~!@$^*()+=|",
    "b64:looks-like-a-value",
    "key/0123456789abcdef/0",
)

INVALID_KEYS = ("", "new\nline", "tab\there", "nul\0", "non-ascii-é", "x" * (MAX_KEY_LENGTH + 1))


class KeyFactory:
    """Hands out keys with a random per-test prefix and remembers them for clean-up."""

    def __init__(self) -> None:
        self.prefix = f"contract-{secrets.token_hex(4)}-"
        self.issued: list[str] = []

    def __call__(self, name: str = "key") -> str:
        """Return the key for ``name`` in this test."""
        key = self.prefix + name
        self.issued.append(key)
        return key


class TokenStoreContract:
    """Tests every :class:`~funnel_tokenstore.TokenStore` must pass.

    Subclasses override the ``store`` fixture. Class attributes tune the load.
    """

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    #: Size in bytes of the "large value" round trip.
    large_value_size: ClassVar[int] = 256 * 1024
    #: How many tasks the concurrency tests run at once.
    concurrent_tasks: ClassVar[int] = 20

    @pytest.fixture
    def store(self) -> TokenStore:
        """The store under test: subclasses must override this fixture."""
        raise NotImplementedError(f"{type(self).__name__} must define a `store` fixture")

    @pytest.fixture
    async def keys(self, store: TokenStore) -> AsyncIterator[KeyFactory]:
        """Fresh keys for one test, deleted from ``store`` afterwards."""
        factory = KeyFactory()
        yield factory
        with anyio.fail_after(30):
            for key in factory.issued:
                await store.delete(key)

    # -- the basic contract -------------------------------------------------------------

    async def test_store_implements_the_protocol(self, store: TokenStore) -> None:
        """The store is a TokenStore (runtime-checkable protocol)."""
        assert isinstance(store, TokenStore)

    async def test_missing_key_reads_as_none(self, store: TokenStore, keys: KeyFactory) -> None:
        """A key never set reads as None."""
        with anyio.fail_after(10):
            assert await store.get(keys("missing")) is None

    @pytest.mark.parametrize(
        "value",
        [
            b"an-access-token",
            b"",
            b"\x00",
            b"\x00nul\x00inside\x00",
            bytes(range(256)),
            "h\u00e9llo w\u00f6rld \u2603".encode(),
            b"=" * 7,
        ],
        ids=["ascii", "empty", "nul", "nuls-inside", "all-bytes", "utf8", "padding-chars"],
    )
    async def test_set_then_get_returns_the_same_bytes(
        self, store: TokenStore, keys: KeyFactory, value: bytes
    ) -> None:
        """Any bytes come back exactly, as bytes: empty, NUL, non-UTF-8."""
        key = keys()
        with anyio.fail_after(10):
            await store.set(key, value)
            got = await store.get(key)
        assert type(got) is bytes
        assert got == value

    async def test_a_large_value_round_trips(self, store: TokenStore, keys: KeyFactory) -> None:
        """A value of ``large_value_size`` bytes comes back whole."""
        key = keys()
        value = secrets.token_bytes(self.large_value_size)
        with anyio.fail_after(30):
            await store.set(key, value)
            assert await store.get(key) == value

    async def test_set_replaces_the_previous_value(
        self, store: TokenStore, keys: KeyFactory
    ) -> None:
        """Each set replaces the value, growing or shrinking it."""
        key = keys()
        large = secrets.token_bytes(self.large_value_size)
        with anyio.fail_after(30):
            for value in (b"first", large, b"second", b"", b"third"):
                await store.set(key, value)
                assert await store.get(key) == value

    async def test_delete_removes_the_value(self, store: TokenStore, keys: KeyFactory) -> None:
        """After delete, the key reads as None."""
        key = keys()
        with anyio.fail_after(10):
            await store.set(key, b"value")
            await store.delete(key)
            assert await store.get(key) is None

    async def test_delete_removes_a_large_value(self, store: TokenStore, keys: KeyFactory) -> None:
        """Deleting a large value leaves nothing that a later set trips over."""
        key = keys()
        with anyio.fail_after(30):
            await store.set(key, secrets.token_bytes(self.large_value_size))
            await store.delete(key)
            assert await store.get(key) is None
            await store.set(key, b"small again")
            assert await store.get(key) == b"small again"

    async def test_deleting_a_missing_key_is_not_an_error(
        self, store: TokenStore, keys: KeyFactory
    ) -> None:
        """Deleting a missing key, or twice, succeeds quietly."""
        key = keys()
        with anyio.fail_after(10):
            await store.delete(key)
            await store.set(key, b"value")
            await store.delete(key)
            await store.delete(key)
            assert await store.get(key) is None

    async def test_keys_are_independent(self, store: TokenStore, keys: KeyFactory) -> None:
        """Keys that share a prefix never see each other's values."""
        a, b, prefix_of_a = keys("a"), keys("ab"), keys("")[:-1]
        with anyio.fail_after(10):
            await store.set(a, b"value a")
            await store.set(b, b"value b")
            assert await store.get(prefix_of_a) is None
            await store.delete(a)
            assert await store.get(a) is None
            assert await store.get(b) == b"value b"

    @pytest.mark.parametrize("name", ODD_KEYS)
    async def test_keys_with_odd_characters_are_kept_apart(
        self, store: TokenStore, keys: KeyFactory, name: str
    ) -> None:
        """Punctuation, spaces and path- or URL-like keys work and stay apart."""
        key, neighbour = keys(name), keys(name + "-neighbour")
        with anyio.fail_after(10):
            await store.set(key, b"value of " + key.encode())
            await store.set(neighbour, b"neighbour")
            assert await store.get(key) == b"value of " + key.encode()
            await store.delete(key)
            assert await store.get(key) is None
            assert await store.get(neighbour) == b"neighbour"

    @pytest.mark.parametrize("key", INVALID_KEYS)
    async def test_invalid_keys_are_rejected(self, store: TokenStore, key: str) -> None:
        """Empty, non-printable, non-ASCII or over-long keys raise InvalidKey."""
        with anyio.fail_after(10):
            with pytest.raises(InvalidKey):
                await store.get(key)
            with pytest.raises(InvalidKey):
                await store.set(key, b"value")
            with pytest.raises(InvalidKey):
                await store.delete(key)
            with pytest.raises(InvalidKey):
                async with store.lock(key):
                    pass

    # -- concurrency ----------------------------------------------------------------------

    async def test_many_concurrent_sets_of_different_keys_all_land(
        self, store: TokenStore, keys: KeyFactory
    ) -> None:
        """Concurrent sets of different keys all land; none is lost."""
        names = [keys(f"concurrent-{i}") for i in range(self.concurrent_tasks)]
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for key in names:
                    tg.start_soon(store.set, key, key.encode())
            for key in names:
                assert await store.get(key) == key.encode()

    async def test_concurrent_sets_of_one_key_leave_one_whole_value(
        self, store: TokenStore, keys: KeyFactory
    ) -> None:
        """Concurrent sets of one key leave one of the values, whole."""
        key = keys()
        values = [bytes([i]) * (1000 + i) for i in range(self.concurrent_tasks)]
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for value in values:
                    tg.start_soon(store.set, key, value)
            assert await store.get(key) in values

    async def test_lock_admits_one_holder_at_a_time(
        self, store: TokenStore, keys: KeyFactory
    ) -> None:
        """lock(key) admits one task at a time within a process."""
        key = keys()
        inside = peak = 0

        async def hold() -> None:
            nonlocal inside, peak
            async with store.lock(key):
                inside += 1
                peak = max(peak, inside)
                # Give every other task the chance to (wrongly) enter too.
                for _ in range(5):
                    await anyio.lowlevel.checkpoint()
                inside -= 1

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(hold)
        assert peak == 1

    async def test_lock_makes_read_modify_write_safe(
        self, store: TokenStore, keys: KeyFactory
    ) -> None:
        """Increments under lock(key) are never lost."""
        key = keys()

        async def increment() -> None:
            async with store.lock(key):
                current = await store.get(key)
                await anyio.lowlevel.checkpoint()
                await store.set(key, str(int(current or b"0") + 1).encode())

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(increment)
            assert await store.get(key) == b"10"

    async def test_locks_of_different_keys_do_not_block_each_other(
        self, store: TokenStore, keys: KeyFactory
    ) -> None:
        """Holding lock(a) does not block lock(b)."""
        with anyio.fail_after(10):
            async with store.lock(keys("one")), store.lock(keys("two")):
                pass

    async def test_store_is_usable_while_holding_the_lock(
        self, store: TokenStore, keys: KeyFactory
    ) -> None:
        """get/set/delete inside lock(key) do not deadlock."""
        key = keys()
        with anyio.fail_after(10):
            async with store.lock(key):
                await store.set(key, b"inside")
                assert await store.get(key) == b"inside"
                await store.delete(key)
                assert await store.get(key) is None

    async def test_lock_is_released_when_the_body_raises(
        self, store: TokenStore, keys: KeyFactory
    ) -> None:
        """An exception in the body releases the lock."""
        key = keys()

        class BodyFailed(Exception):
            pass

        with anyio.fail_after(10):
            with pytest.raises(BodyFailed):
                async with store.lock(key):
                    raise BodyFailed
            async with store.lock(key):
                pass

    async def test_lock_is_released_when_its_holder_is_cancelled(
        self, store: TokenStore, keys: KeyFactory
    ) -> None:
        """Cancelling the holder releases the lock."""
        key = keys()
        entered = anyio.Event()

        async def hold_forever() -> None:
            async with store.lock(key):
                entered.set()
                await anyio.sleep_forever()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(hold_forever)
                await entered.wait()
                tg.cancel_scope.cancel()
            async with store.lock(key):
                pass

    # -- secrecy --------------------------------------------------------------------------

    async def test_values_never_show_in_repr_or_logs(
        self, store: TokenStore, keys: KeyFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """No stored value appears in repr, str or any log record."""
        secret = b"SECRET-" + secrets.token_hex(16).encode()
        large_secret = secret * (self.large_value_size // len(secret) + 1)
        key = keys()
        caplog.set_level(logging.DEBUG)
        with anyio.fail_after(30):
            for value in (secret, large_secret):
                await store.set(key, value)
                assert await store.get(key) == value
                async with store.lock(key):
                    pass
            await store.delete(key)
        shown = [repr(store), str(store), caplog.text]
        shown += [str(arg) for record in caplog.records for arg in (record.args or ())]
        forms = [secret.decode(), base64.b64encode(secret).decode()[:20]]
        for text in shown:
            for form in forms:
                assert form not in text
