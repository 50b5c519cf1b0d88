from __future__ import annotations

import base64
import gc
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import keyring
import keyring.backend
import keyring.backends.SecretService
import keyring.errors
import pytest

from funnel_tokenstore import (
    KeyringTokenStore,
    TokenStore,
    TokenStoreCorrupt,
    TokenStoreUnavailable,
)
from funnel_tokenstore.testing import TokenStoreContract

WINDOWS_MAX_CHARS = 1280  # 2560-byte credential blob, UTF-16


class FakeKeyring:
    """An in-memory keyring backend with keyring's semantics, an optional size limit and
    hooks that run before a read or write (to interleave a "second process")."""

    def __init__(self, max_chars: int | None = None) -> None:
        self.entries: dict[tuple[str, str], str] = {}
        self.max_chars = max_chars
        self.lock = threading.Lock()
        self.before_get: Callable[[str, str], None] | None = None
        self.before_set: Callable[[str, str], None] | None = None

    def get_password(self, service: str, username: str) -> str | None:
        if self.before_get is not None:
            self.before_get(service, username)
        with self.lock:
            return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        if self.max_chars is not None and len(password) > self.max_chars:
            raise keyring.errors.PasswordSetError("the credential blob is too large")
        if self.before_set is not None:
            self.before_set(service, username)
        with self.lock:
            self.entries[service, username] = password

    def delete_password(self, service: str, username: str) -> None:
        with self.lock:
            if (service, username) not in self.entries:
                raise keyring.errors.PasswordDeleteError("no such password")
            del self.entries[service, username]


class RaisingKeyring(FakeKeyring):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def get_password(self, service: str, username: str) -> str | None:
        raise self.error

    def set_password(self, service: str, username: str, password: str) -> None:
        raise self.error


def chunk_entries(fake: FakeKeyring) -> dict[str, str]:
    return {
        user: text for (service, user), text in fake.entries.items() if service.endswith("/chunks")
    }


def manifest_names(head: str, key: str) -> list[str]:
    assert head.startswith("chunks:v1:")
    generation, count, _length = head.removeprefix("chunks:v1:").split(":")
    return [f"{key}/{generation}/{i}" for i in range(int(count))]


# -- the contract ----------------------------------------------------------------------


class TestKeyringStoreOnAFakeWindowsSizedKeychain(TokenStoreContract):
    """The default entry limit never exceeds what Windows Credential Manager takes."""

    @pytest.fixture
    def store(self) -> TokenStore:
        return KeyringTokenStore(backend=FakeKeyring(max_chars=WINDOWS_MAX_CHARS))


@pytest.fixture
def secret_service() -> Iterator[keyring.backend.KeyringBackend]:
    backend = keyring.get_keyring()
    if not isinstance(backend, keyring.backends.SecretService.Keyring):
        pytest.skip(
            f"needs a real Secret Service keyring, keyring chose {backend}; run the tests "
            "under tools/with-keyring.sh (gnome-keyring in a private D-Bus session)"
        )
    yield backend
    # keyring leaves a D-Bus connection unclosed when the daemon fails a call (it has
    # aborted under heavy load: a GLib assertion in gnome-keyring); collect it here, so
    # that its ResourceWarning is this test's, not whichever runs next.
    gc.collect()


@pytest.mark.keyring
class TestKeyringStoreOnSecretService(TokenStoreContract):
    large_value_size = 8 * 1024

    @pytest.fixture
    def store(self, secret_service: keyring.backend.KeyringBackend) -> TokenStore:
        return KeyringTokenStore(
            service=f"funnel-test-{secrets.token_hex(4)}", backend=secret_service
        )


# -- chunking --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_value_over_the_limit_is_split_into_chunks_within_the_limit() -> None:
    fake = FakeKeyring(max_chars=64)
    store = KeyringTokenStore(backend=fake, max_entry_chars=64)
    value = secrets.token_bytes(1000)
    await store.set("big", value)
    head = fake.entries["mcp-funnel", "big"]
    chunks = chunk_entries(fake)
    assert sorted(chunks) == sorted(manifest_names(head, "big"))
    assert len(chunks) == -(-len(base64.b64encode(value)) // 64)
    assert all(len(text) <= 64 for text in fake.entries.values())
    assert await store.get("big") == value


@pytest.mark.anyio
async def test_a_value_that_fits_is_one_entry() -> None:
    fake = FakeKeyring()
    store = KeyringTokenStore(backend=fake)
    value = secrets.token_bytes(700)  # 936 base64 characters, under the 1024 default
    await store.set("k", value)
    assert fake.entries == {("mcp-funnel", "k"): "b64:" + base64.b64encode(value).decode()}


@pytest.mark.anyio
async def test_each_write_leaves_no_chunk_of_the_previous_value() -> None:
    fake = FakeKeyring()
    store = KeyringTokenStore(backend=fake, max_entry_chars=64)
    await store.set("k", secrets.token_bytes(500))
    first = set(chunk_entries(fake))
    await store.set("k", secrets.token_bytes(300))
    second = set(chunk_entries(fake))
    assert second
    assert not first & second
    assert second == set(manifest_names(fake.entries["mcp-funnel", "k"], "k"))
    await store.set("k", b"small")
    assert chunk_entries(fake) == {}
    await store.set("k", secrets.token_bytes(500))
    await store.delete("k")
    assert fake.entries == {}


@pytest.mark.anyio
async def test_a_reader_during_a_write_sees_the_old_value_whole() -> None:
    fake = FakeKeyring()
    store = KeyringTokenStore(backend=fake, max_entry_chars=64)
    old, new = b"o" * 500, b"n" * 500
    await store.set("k", old)
    paused, resume = threading.Event(), threading.Event()

    def pause_in_the_middle(service: str, username: str) -> None:
        if service.endswith("/chunks") and username.endswith("/3") and not paused.is_set():
            paused.set()
            resume.wait(10)

    fake.before_set = pause_in_the_middle
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.set, "k", new)
                assert await anyio.to_thread.run_sync(paused.wait, 10)
                assert await store.get("k") == old
                resume.set()
            assert await store.get("k") == new
    finally:
        resume.set()


@pytest.mark.anyio
async def test_a_reader_that_loses_the_race_with_a_writer_reads_again() -> None:
    fake = FakeKeyring()
    store = KeyringTokenStore(backend=fake, max_entry_chars=64)
    await store.set("k", b"o" * 500)
    new = b"a new, short value"
    raced = False

    def another_process_writes(service: str, username: str) -> None:
        # Between our reading the manifest and its chunks, another process swaps the
        # manifest and deletes the old chunks.
        nonlocal raced
        if service.endswith("/chunks") and not raced:
            raced = True
            with fake.lock:
                fake.entries["mcp-funnel", "k"] = "b64:" + base64.b64encode(new).decode()
                for name in [n for (s, n) in fake.entries if s.endswith("/chunks")]:
                    del fake.entries["mcp-funnel/chunks", name]

    fake.before_get = another_process_writes
    assert await store.get("k") == new
    assert raced


@pytest.mark.anyio
async def test_a_chunk_missing_under_an_unchanged_manifest_is_corrupt() -> None:
    fake = FakeKeyring()
    store = KeyringTokenStore(backend=fake, max_entry_chars=64)
    await store.set("k", b"SECRET" * 100)
    name = manifest_names(fake.entries["mcp-funnel", "k"], "k")[2]
    del fake.entries["mcp-funnel/chunks", name]
    with pytest.raises(TokenStoreCorrupt, match=r"'k'.*chunk 2 of") as caught:
        await store.get("k")
    assert "SECRET" not in str(caught.value)
    await store.delete("k")
    assert fake.entries == {}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "text", ["a plain password", "b64:not base64!", "chunks:v1:nothex:2:100", "chunks:v1:1:2"]
)
async def test_an_entry_in_another_format_is_corrupt_and_a_set_replaces_it_with_a_warning(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeKeyring()
    fake.entries["mcp-funnel", "k"] = text
    store = KeyringTokenStore(backend=fake)
    with pytest.raises(TokenStoreCorrupt, match="'k'") as caught:
        await store.get("k")
    assert text not in str(caught.value)
    caplog.set_level(logging.WARNING, logger="funnel_tokenstore")
    await store.set("k", b"fresh")
    assert await store.get("k") == b"fresh"
    if not text.startswith("b64:"):  # a b64: head parses; only its text is bad
        assert any("unreadable keychain entry 'k'" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_a_failed_write_keeps_the_old_value_and_removes_its_new_chunks() -> None:
    fake = FakeKeyring()
    store = KeyringTokenStore(backend=fake, max_entry_chars=64)
    await store.set("k", b"old" * 100)
    before = dict(fake.entries)
    calls = 0

    def fail_on_the_third_chunk(service: str, username: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise keyring.errors.PasswordSetError("keychain full")

    fake.before_set = fail_on_the_third_chunk
    with pytest.raises(TokenStoreUnavailable, match="keychain full"):
        await store.set("k", b"new" * 100)
    assert fake.entries == before
    fake.before_set = None
    assert await store.get("k") == b"old" * 100


# -- errors and timeouts -----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "match"),
    [
        (keyring.errors.NoKeyringError("no backend"), "MCP_FUNNEL_TOKEN_STORE=file"),
        (keyring.errors.KeyringLocked("locked"), "keychain is locked"),
        (keyring.errors.InitError("no collection"), "no collection"),
        (OSError("D-Bus socket gone"), "OSError: D-Bus socket gone"),
    ],
)
async def test_keychain_failures_become_token_store_unavailable(
    error: Exception, match: str
) -> None:
    store = KeyringTokenStore(backend=RaisingKeyring(error))
    with pytest.raises(TokenStoreUnavailable, match=match) as caught:
        await store.get("k")
    assert caught.value.__cause__ is error
    with pytest.raises(TokenStoreUnavailable, match=match):
        await store.set("k", b"v")


@pytest.mark.anyio
async def test_a_delete_that_fails_is_reported() -> None:
    class UndeletableKeyring(FakeKeyring):
        def delete_password(self, service: str, username: str) -> None:
            raise keyring.errors.PasswordDeleteError("access denied")

    fake = UndeletableKeyring()
    store = KeyringTokenStore(backend=fake)
    await store.set("k", b"v")
    with pytest.raises(TokenStoreUnavailable, match="access denied"):
        await store.delete("k")
    assert await store.get("k") == b"v"


@pytest.mark.anyio
async def test_a_keychain_that_does_not_answer_times_out() -> None:
    fake = FakeKeyring()
    answer = threading.Event()

    def hang(service: str, username: str) -> None:
        answer.wait(10)

    fake.before_get = hang
    store = KeyringTokenStore(backend=fake, timeout=0.2)
    try:
        with anyio.fail_after(5), pytest.raises(TokenStoreUnavailable, match="did not answer"):
            await store.get("k")
    finally:
        answer.set()


def test_a_limit_below_64_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 64"):
        KeyringTokenStore(backend=FakeKeyring(), max_entry_chars=63)


def test_the_lock_directory_defaults_to_locks_in_the_funnel_home(funnel_home_in_tmp: Path) -> None:
    store = KeyringTokenStore(backend=FakeKeyring())
    assert store.lock_dir == funnel_home_in_tmp / "locks"
    assert repr(store).startswith("KeyringTokenStore(service='mcp-funnel', backend='")
    assert repr(store).endswith("test_keyring.FakeKeyring')")


# -- a real Secret Service ---------------------------------------------------------------


@pytest.mark.keyring
@pytest.mark.anyio
async def test_chunks_in_a_real_secret_service_are_replaced_and_deleted(
    secret_service: keyring.backend.KeyringBackend,
) -> None:
    service = f"funnel-test-{secrets.token_hex(4)}"
    store = KeyringTokenStore(service=service, backend=secret_service, max_entry_chars=64)
    first = secrets.token_bytes(1000)
    with anyio.fail_after(20):
        await store.set("big", first)
        head = secret_service.get_password(service, "big")
        assert head is not None
        names = manifest_names(head, "big")
        parts = [secret_service.get_password(f"{service}/chunks", name) for name in names]
        assert all(part is not None and len(part) <= 64 for part in parts)
        assert "".join(p or "" for p in parts) == base64.b64encode(first).decode()
        assert await store.get("big") == first

        second = secrets.token_bytes(700)
        await store.set("big", second)
        assert await store.get("big") == second
        assert all(secret_service.get_password(f"{service}/chunks", n) is None for n in names)
        new_head = secret_service.get_password(service, "big")
        assert new_head is not None
        new_names = manifest_names(new_head, "big")

        await store.delete("big")
        assert secret_service.get_password(service, "big") is None
        assert all(secret_service.get_password(f"{service}/chunks", n) is None for n in new_names)
