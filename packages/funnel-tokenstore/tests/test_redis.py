"""RedisTokenStore against a real redis-server: the contract, namespacing, errors, leases."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from funnel_tokenstore import (
    RedisTokenStore,
    TokenStore,
    TokenStoreConfigError,
    TokenStoreLockTimeout,
    TokenStoreUnavailable,
)
from funnel_tokenstore.testing import TokenStoreContract, redis_server


def fresh_namespace() -> str:
    return f"t{secrets.token_hex(6)}"


class TestRedisTokenStore(TokenStoreContract):
    @pytest.fixture
    async def store(self, redis_url: str) -> AsyncIterator[TokenStore]:
        async with RedisTokenStore(redis_url, namespace=fresh_namespace()) as store:
            yield store


def closed_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there once the probe is closed


@pytest.mark.anyio
async def test_keys_live_under_the_namespace_as_raw_bytes(redis_url: str) -> None:
    import redis.asyncio

    namespace = fresh_namespace()
    async with RedisTokenStore(redis_url, namespace=namespace) as store:
        await store.set("oauth:github", b"\x00raw\xff")
        raw = redis.asyncio.Redis.from_url(redis_url)
        try:
            assert await raw.get(f"{namespace}:tok:oauth:github") == b"\x00raw\xff"
            assert await raw.keys(f"{namespace}:*") == [f"{namespace}:tok:oauth:github".encode()]
        finally:
            await raw.aclose()
        assert await store.keys() == ["oauth:github"]


@pytest.mark.anyio
async def test_namespaces_keep_deployments_apart(redis_url: str) -> None:
    async with (
        RedisTokenStore(redis_url, namespace=fresh_namespace()) as one,
        RedisTokenStore(redis_url, namespace=fresh_namespace()) as two,
    ):
        await one.set("k", b"one")
        assert await two.get("k") is None
        assert await two.keys() == []
        async with one.lock("k"), two.lock("k", timeout=1):
            pass


@pytest.mark.anyio
async def test_an_unreachable_server_is_unavailable_and_the_password_never_shows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"redis://funnel:hunter2-secret@127.0.0.1:{closed_port()}/0?password=hunter3-secret"
    async with RedisTokenStore(url, timeout=2) as store:
        assert "hunter" not in repr(store)
        for call in (store.get("k"), store.set("k", b"v"), store.delete("k")):
            with anyio.fail_after(10), pytest.raises(TokenStoreUnavailable) as caught:
                await call
            text = str(caught.value)
            assert "127.0.0.1" in text
            assert "funnel:***@" in text
            assert "hunter" not in text
        with anyio.fail_after(10), pytest.raises(TokenStoreUnavailable):
            async with store.lock("k"):
                pass
    assert "hunter" not in caplog.text


@pytest.mark.anyio
async def test_a_password_protected_server_needs_the_right_password(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with redis_server(args=["--requirepass", "right-secret"]) as url:
        wrong = url.replace("redis://", "redis://default:wrong-secret@")
        async with RedisTokenStore(wrong) as store:
            with anyio.fail_after(10), pytest.raises(TokenStoreUnavailable) as caught:
                await store.get("k")
        assert "wrong-secret" not in str(caught.value)
        assert "default:***@" in str(caught.value)
        right = url.replace("redis://", "redis://default:right-secret@")
        async with RedisTokenStore(right) as store:
            await store.set("k", b"v")
            assert await store.get("k") == b"v"
    assert "secret" not in caplog.text


@pytest.mark.anyio
async def test_a_unix_socket_url_works(redis_url: str, tmp_path: Path) -> None:
    with redis_server(unix_socket=tmp_path / "redis.sock") as url:
        assert url.startswith("unix://")
        async with RedisTokenStore(url) as store:
            await store.set("k", b"over a socket")
            assert await store.get("k") == b"over a socket"
            async with store.lock("k"):
                pass


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:6379", "not a Redis URL"),
        ("127.0.0.1:6379", "not a Redis URL"),
        ("redis://u:pw-secret@127.0.0.1:notaport", "not a usable Redis URL"),
    ],
)
def test_bad_urls_are_config_errors_without_the_password(url: str, message: str) -> None:
    with pytest.raises(TokenStoreConfigError, match=message) as caught:
        RedisTokenStore(url)
    assert "pw-secret" not in str(caught.value)


def test_a_bad_namespace_is_a_config_error() -> None:
    with pytest.raises(TokenStoreConfigError, match="namespace"):
        RedisTokenStore("redis://127.0.0.1", namespace="a*b")


@pytest.mark.anyio
async def test_compare_and_set_replaces_only_the_expected_value(redis_url: str) -> None:
    async with RedisTokenStore(redis_url, namespace=fresh_namespace()) as store:
        await store.set("k", b"old")
        assert not await store.compare_and_set("k", b"other", b"new")
        assert await store.get("k") == b"old"
        assert await store.compare_and_set("k", b"old", b"new")
        assert await store.get("k") == b"new"


@pytest.mark.anyio
async def test_two_stores_in_one_process_exclude_each_other_through_redis(redis_url: str) -> None:
    namespace = fresh_namespace()
    async with (
        RedisTokenStore(redis_url, namespace=namespace) as one,
        RedisTokenStore(redis_url, namespace=namespace) as two,
    ):
        async with one.lock("k"):
            with anyio.fail_after(10), pytest.raises(TokenStoreLockTimeout, match="'k'"):
                async with two.lock("k", timeout=0.2):
                    pass
        with anyio.fail_after(10):
            async with two.lock("k", timeout=5):
                pass
