from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from funnel_tokenstore import (
    FileTokenStore,
    KeyringTokenStore,
    TokenStore,
    TokenStoreCorrupt,
    TokenStoreLockTimeout,
    TokenStoreUnavailable,
)
from funnel_tokenstore.testing import TokenStoreContract

WORKER = Path(__file__).with_name("proc_worker.py")
posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")


class TestFileTokenStore(TokenStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> TokenStore:
        return FileTokenStore(tmp_path / "store" / "tokens.json")


class NoKeychain:
    """A keyring backend that stores nothing: lock(key) needs no keychain."""

    def get_password(self, service: str, username: str) -> str | None:
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        pass

    def delete_password(self, service: str, username: str) -> None:
        pass


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- location and permissions ---------------------------------------------------------


@pytest.mark.anyio
async def test_default_file_is_tokens_json_in_the_funnel_home(funnel_home_in_tmp: Path) -> None:
    store = FileTokenStore()
    assert store.path == funnel_home_in_tmp / "tokens.json"
    await store.set("k", b"v")
    assert (funnel_home_in_tmp / "tokens.json").is_file()


@posix_only
@pytest.mark.anyio
async def test_a_new_directory_is_0700_and_the_file_0600(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "tokens.json"
    old = os.umask(0o002)  # a lax umask (group-writable), as some distributions default to
    try:
        await FileTokenStore(path).set("k", b"v")
    finally:
        os.umask(old)
    assert mode(path.parent) == 0o700
    assert mode(path) == 0o600
    assert mode(path.with_name("tokens.json.lock")) == 0o600


@posix_only
@pytest.mark.anyio
async def test_a_file_readable_by_others_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.json"
    store = FileTokenStore(path)
    await store.set("k", b"v")
    path.chmod(0o644)
    caplog.set_level(logging.WARNING, logger="funnel_tokenstore")
    assert await store.get("k") == b"v"
    assert mode(path) == 0o600
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.name == "funnel_tokenstore"
    assert str(path) in record.getMessage()
    assert "0600" in record.getMessage()


@posix_only
@pytest.mark.anyio
async def test_a_directory_writable_by_others_is_kept_but_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    store = FileTokenStore(directory / "tokens.json")
    caplog.set_level(logging.WARNING, logger="funnel_tokenstore")
    await store.set("a", b"1")
    await store.set("b", b"2")
    assert mode(directory) == 0o777
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(directory) in warnings[0].getMessage()


@posix_only
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
@pytest.mark.anyio
async def test_a_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = FileTokenStore(path)
    await store.set("k", b"v")
    os.chown(path, 65534, 65534)
    before = path.read_bytes()
    with pytest.raises(TokenStoreUnavailable, match="belongs to uid 65534"):
        await store.get("k")
    with pytest.raises(TokenStoreUnavailable):
        await store.set("k", b"other")
    assert path.read_bytes() == before


# -- file format, corruption, atomicity -----------------------------------------------


@pytest.mark.anyio
async def test_the_file_is_versioned_json_with_base64_values(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    await FileTokenStore(path).set("k", b"\x00\xff")
    assert json.loads(path.read_text()) == {"version": 1, "tokens": {"k": "AP8="}}


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json at all SECRET",
        b"\xff\xfe SECRET",
        b'["a", "list"]',
        b'{"tokens": {}}',
        b'{"version": 2, "tokens": {}}',
        b'{"version": 1}',
        b'{"version": 1, "tokens": {"k": 3}}',
        b'{"version": 1, "tokens": {"k": "SECRET!!"}}',
    ],
    ids=[
        "empty",
        "not-json",
        "not-utf8",
        "not-object",
        "no-version",
        "newer-version",
        "no-tokens",
        "value-not-string",
        "value-not-base64",
    ],
)
@pytest.mark.anyio
async def test_a_corrupt_file_raises_and_is_never_overwritten(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(content)
    path.chmod(0o600)
    store = FileTokenStore(path)
    for operation in (store.get("k"), store.set("k", b"new"), store.delete("k")):
        with pytest.raises(TokenStoreCorrupt) as caught:
            await operation
        message = str(caught.value)
        assert str(path) in message
        assert "SECRET" not in message
        assert caught.value.__cause__ is None or "SECRET" not in str(caught.value.__cause__)
    assert path.read_bytes() == content


@pytest.mark.anyio
async def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "d" / "tokens.json")
    for i in range(5):
        await store.set(f"k{i}", b"v")
    await store.delete("k0")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["tokens.json", "tokens.json.lock"]


@pytest.mark.anyio
async def test_a_failed_replace_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens.json"
    store = FileTokenStore(path)
    await store.set("k", b"old")
    before = path.read_bytes()

    def no_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(TokenStoreUnavailable, match="No space left"):
        await store.set("k", b"new")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert await store.get("k") == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.json", "tokens.json.lock"]


@pytest.mark.anyio
async def test_deleting_from_a_missing_file_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    await FileTokenStore(path).delete("k")
    assert not path.exists()


# -- several processes and instances -------------------------------------------------


@pytest.mark.anyio
async def test_two_processes_writing_at_once_lose_no_write(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    count = 40
    with anyio.fail_after(25):
        async with anyio.create_task_group() as tg:
            for prefix in ("a", "b"):
                tg.start_soon(
                    anyio.run_process,
                    [sys.executable, str(WORKER), "write", str(path), prefix, str(count)],
                )
            # This process writes too, through its own store.
            store = FileTokenStore(path)
            for i in range(count):
                await store.set(f"c{i}", f"c{i}".encode())
        tokens = json.loads(path.read_text())["tokens"]
    expected = {f"{p}{i}" for p in "abc" for i in range(count)}
    assert set(tokens) == expected
    for key in expected:
        assert await store.get(key) == key.encode()


@pytest.mark.anyio
async def test_two_store_instances_on_one_file_share_the_key_lock(tmp_path: Path) -> None:
    first = FileTokenStore(tmp_path / "tokens.json")
    second = FileTokenStore(tmp_path / "tokens.json")
    async with first.lock("k"):
        with pytest.raises(TokenStoreLockTimeout, match="'k'"):
            async with second.lock("k", timeout=0.2):
                pass
        async with second.lock("other", timeout=5):
            pass
    with anyio.fail_after(5):
        async with second.lock("k"):
            pass


@pytest.mark.anyio
async def test_a_cancelled_lock_waiter_gives_up_promptly_and_leaks_nothing(tmp_path: Path) -> None:
    first = FileTokenStore(tmp_path / "tokens.json")
    second = FileTokenStore(tmp_path / "tokens.json")
    with anyio.fail_after(10):
        async with first.lock("k"):
            with anyio.move_on_after(0.2) as scope:
                async with second.lock("k", timeout=30):
                    pytest.fail("entered a lock that another store holds")
            assert scope.cancelled_caught
        async with second.lock("k", timeout=5), first.lock("other", timeout=5):
            pass


@asynccontextmanager
async def lock_held_by_another_process(*args: str) -> AsyncIterator[Process]:
    """Start proc_worker.py holding a lock; yield once it holds it; stop it afterwards."""
    process = await anyio.open_process(
        [sys.executable, str(WORKER), "hold", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(15):
            line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 100)
        assert line == b"locked"
        yield process
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            with anyio.fail_after(10):
                await process.wait()
            await process.aclose()


async def release(process: Process) -> None:
    assert process.stdin is not None
    await process.stdin.send(b"release\n")
    with anyio.fail_after(10):
        assert await process.wait() == 0


@pytest.mark.anyio
async def test_a_file_store_lock_held_by_another_process_blocks_until_released(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.json"
    store = FileTokenStore(path)
    async with lock_held_by_another_process("file", str(path), "refresh:srv") as process:
        with pytest.raises(TokenStoreLockTimeout):
            async with store.lock("refresh:srv", timeout=0.3):
                pass
        # Other keys and the store itself stay usable meanwhile.
        async with store.lock("refresh:other", timeout=5):
            await store.set("refresh:srv", b"v")
        await release(process)
        with anyio.fail_after(5):
            async with store.lock("refresh:srv"):
                assert await store.get("refresh:srv") == b"v"


@pytest.mark.anyio
async def test_a_keyring_store_lock_held_by_another_process_blocks_until_released(
    tmp_path: Path,
) -> None:
    lock_dir = tmp_path / "locks"
    store = KeyringTokenStore(backend=NoKeychain(), lock_dir=lock_dir)
    async with lock_held_by_another_process("keyring", str(lock_dir), "refresh:srv") as process:
        with pytest.raises(TokenStoreLockTimeout):
            async with store.lock("refresh:srv", timeout=0.3):
                pass
        await release(process)
        with anyio.fail_after(5):
            async with store.lock("refresh:srv"):
                pass


@pytest.mark.anyio
async def test_a_killed_lock_holder_releases_its_lock(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = FileTokenStore(path)
    async with lock_held_by_another_process("file", str(path), "k") as process:
        process.kill()
        with anyio.fail_after(10):
            await process.wait()
        with anyio.fail_after(5):
            async with store.lock("k"):
                pass


@pytest.mark.anyio
async def test_file_store_lists_keys_and_compares_and_sets(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "tokens.json")
    assert await store.keys() == []
    await store.set("b", b"1")
    await store.set("a", b"2")
    assert await store.keys() == ["a", "b"]
    assert not await store.compare_and_set("a", b"other", b"3")
    assert not await store.compare_and_set("missing", b"", b"3")
    assert await FileTokenStore(tmp_path / "tokens.json").compare_and_set("a", b"2", b"3")
    assert await store.get("a") == b"3"
    assert await store.get("missing") is None
