"""A second process for the cross-process tests; run with ``sys.executable``.

    proc_worker.py write PATH PREFIX COUNT   set PREFIX0..PREFIX<COUNT-1> in the file store
    proc_worker.py hold file PATH KEY        hold FileTokenStore(PATH).lock(KEY)
    proc_worker.py hold keyring DIR KEY      hold KeyringTokenStore(lock_dir=DIR).lock(KEY)

``hold`` prints ``locked`` once it holds the lock and releases it when stdin closes or
gives a line.
"""

from __future__ import annotations

import sys

import anyio

from funnel_tokenstore import FileTokenStore, KeyringTokenStore, TokenStore


class NoKeychain:
    """A keyring backend that stores nothing: the lock needs no keychain."""

    def get_password(self, service: str, username: str) -> str | None:
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        pass

    def delete_password(self, service: str, username: str) -> None:
        pass


async def write(path: str, prefix: str, count: int) -> None:
    store = FileTokenStore(path)
    for i in range(count):
        await store.set(f"{prefix}{i}", f"{prefix}{i}".encode())


async def hold(kind: str, where: str, key: str) -> None:
    store: FileTokenStore | KeyringTokenStore
    if kind == "file":
        store = FileTokenStore(where)
    else:
        store = KeyringTokenStore(backend=NoKeychain(), lock_dir=where)
    assert isinstance(store, TokenStore)
    async with store.lock(key, timeout=20):
        sys.stdout.write("locked\n")
        sys.stdout.flush()
        await anyio.to_thread.run_sync(sys.stdin.readline)


def main(argv: list[str]) -> None:
    if argv[0] == "write":
        anyio.run(write, argv[1], argv[2], int(argv[3]))
    elif argv[0] == "hold":
        anyio.run(hold, argv[1], argv[2], argv[3])
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
