"""A second process for the cross-process tests; run with ``sys.executable``.

    proc_worker.py write PATH PREFIX COUNT   set PREFIX0..PREFIX<COUNT-1> in the file store
    proc_worker.py hold file PATH KEY        hold FileTokenStore(PATH).lock(KEY)
    proc_worker.py hold keyring DIR KEY      hold KeyringTokenStore(lock_dir=DIR).lock(KEY)
    proc_worker.py hold redis URL NS KEY LEASE   hold RedisTokenStore(URL).lock(KEY)
    proc_worker.py increment URL NS KEY COUNT    COUNT read-modify-writes of KEY under lock(KEY)

``hold`` prints ``locked`` once it holds the lock and releases it when stdin closes or
gives a line. ``increment`` prints ``ready``, waits for a line on stdin, then adds one to
the number under KEY COUNT times, each time under ``lock(KEY)``, and records ``+PID`` and
``-PID`` in the Redis list ``NS:trace`` on entering and leaving the lock.
"""

from __future__ import annotations

import sys

import anyio

from funnel_tokenstore import FileTokenStore, KeyringTokenStore, RedisTokenStore, TokenStore


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


async def hold_redis(url: str, namespace: str, key: str, lease: float) -> None:
    store = RedisTokenStore(url, namespace=namespace, lease=lease)
    async with store, store.lock(key, timeout=20):
        sys.stdout.write("locked\n")
        sys.stdout.flush()
        await anyio.to_thread.run_sync(sys.stdin.readline)


async def increment(url: str, namespace: str, key: str, count: int) -> None:
    import os

    import redis.asyncio

    trace = redis.asyncio.Redis.from_url(url)
    me = os.getpid()
    async with RedisTokenStore(url, namespace=namespace) as store:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await anyio.to_thread.run_sync(sys.stdin.readline)
        for _ in range(count):
            async with store.lock(key, timeout=30):
                await trace.rpush(f"{namespace}:trace", f"+{me}")
                current = await store.get(key)
                await store.set(key, str(int(current or b"0") + 1).encode())
                await trace.rpush(f"{namespace}:trace", f"-{me}")
    await trace.aclose()


def main(argv: list[str]) -> None:
    if argv[0] == "write":
        anyio.run(write, argv[1], argv[2], int(argv[3]))
    elif argv[0] == "hold" and argv[1] == "redis":
        anyio.run(hold_redis, argv[2], argv[3], argv[4], float(argv[5]))
    elif argv[0] == "hold":
        anyio.run(hold, argv[1], argv[2], argv[3])
    elif argv[0] == "increment":
        anyio.run(increment, argv[1], argv[2], argv[3], int(argv[4]))
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
