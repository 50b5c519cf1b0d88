"""Rough figures for RedisTokenStore on loopback (not a test; run it by hand).

    uv run --group dev python packages/funnel-tokenstore/tests/bench_redis.py

Prints set+get pairs per second (plain and encrypted, 1500-byte values), the cost of an
uncontended lock/release, and how long a waiter in another store takes to get a lock
after its release (the BLPOP wake-up). On a shared 2-core machine these are noisy.
"""

from __future__ import annotations

import sys
import time

import anyio

from funnel_tokenstore import (
    EncryptedTokenStore,
    RedisTokenStore,
    StateKeys,
    TokenStore,
    generate_state_key,
)
from funnel_tokenstore.testing import redis_server


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


async def pairs(name: str, store: TokenStore, n: int = 2000) -> None:
    value = b"x" * 1500
    started = time.perf_counter()
    for _ in range(n):
        await store.set("k", value)
        await store.get("k")
    took = time.perf_counter() - started
    say(f"{name}: {n / took:.0f} set+get pairs/s ({took / n * 1e6:.0f} us a pair)")


async def main() -> None:
    with redis_server() as url:
        async with (
            RedisTokenStore(url, namespace="bench") as one,
            RedisTokenStore(url, namespace="bench") as two,
        ):
            await pairs("redis", one)
            await pairs(
                "redis, encrypted", EncryptedTokenStore(one, StateKeys.parse(generate_state_key()))
            )
            n = 500
            started = time.perf_counter()
            for _ in range(n):
                async with one.lock("L"):
                    pass
            say(f"lock + release, uncontended: {(time.perf_counter() - started) / n * 1e3:.2f} ms")
            waits: list[float] = []
            released = [0.0]

            async def wait_for_it() -> None:
                async with two.lock("H", timeout=10):
                    waits.append(time.perf_counter() - released[0])

            for _ in range(50):
                async with anyio.create_task_group() as tg, one.lock("H"):
                    tg.start_soon(wait_for_it)
                    await anyio.sleep(0.02)  # a benchmark: let the waiter block in Redis
                    released[0] = time.perf_counter()
            waits.sort()
            say(
                f"release -> acquired by a waiting store: median {waits[len(waits) // 2] * 1e3:.2f} ms,"
                f" max {waits[-1] * 1e3:.2f} ms"
            )


if __name__ == "__main__":
    anyio.run(main)
