"""RedisTokenStore against a real redis-server: the contract, namespacing, errors, leases."""

from __future__ import annotations

import logging
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
import redis.asyncio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

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


# -- the lease across processes -------------------------------------------------------

WORKER = Path(__file__).with_name("proc_worker.py")


@asynccontextmanager
async def raw_redis(url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def worker(*args: str) -> AsyncIterator[Process]:
    """Start proc_worker.py; kill and reap it afterwards whatever happened."""
    process = await anyio.open_process(
        [sys.executable, str(WORKER), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,
    )
    try:
        yield process
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            with anyio.fail_after(10):
                await process.wait()
            await process.aclose()


async def read_line(process: Process) -> bytes:
    assert process.stdout is not None
    with anyio.fail_after(20):
        return await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 100)


@pytest.mark.anyio
async def test_two_processes_serialise_every_read_modify_write(redis_url: str) -> None:
    namespace, count = fresh_namespace(), 40
    args = ("increment", redis_url, namespace, "counter", str(count))
    async with worker(*args) as one, worker(*args) as two:
        assert await read_line(one) == b"ready"
        assert await read_line(two) == b"ready"
        for process in (one, two):  # both start at once
            assert process.stdin is not None
            await process.stdin.send(b"go\n")
        with anyio.fail_after(60):
            assert await one.wait() == 0
            assert await two.wait() == 0
    async with RedisTokenStore(redis_url, namespace=namespace) as store:
        assert await store.get("counter") == str(2 * count).encode()
    async with raw_redis(redis_url) as raw:
        items = await raw.lrange(f"{namespace}:trace", 0, -1)
    trace = [item.decode() if isinstance(item, bytes) else item for item in items]
    # Every holder left the lock before the next one entered it, and both took turns.
    assert len(trace) == 4 * count
    for enter, leave in zip(trace[::2], trace[1::2], strict=True):
        assert enter[0] == "+"
        assert leave == "-" + enter[1:]
    assert len({item[1:] for item in trace}) == 2


@pytest.mark.anyio
async def test_a_holder_killed_with_sigkill_frees_the_lock_when_its_lease_expires(
    redis_url: str,
) -> None:
    namespace = fresh_namespace()
    lock_key = f"{namespace}:lock:refresh:srv"
    async with (
        RedisTokenStore(redis_url, namespace=namespace) as store,
        raw_redis(redis_url) as raw,
    ):
        async with worker("hold", "redis", redis_url, namespace, "refresh:srv", "2") as holder:
            assert await read_line(holder) == b"locked"
            with pytest.raises(TokenStoreLockTimeout):
                async with store.lock("refresh:srv", timeout=0.2):
                    pass
            holder.send_signal(signal.SIGKILL)
            with anyio.fail_after(10):
                assert await holder.wait() == -signal.SIGKILL
            # It died without releasing: the lease is still there, and nobody renews it.
            assert await raw.exists(lock_key) == 1
        with anyio.fail_after(15):
            async with store.lock("refresh:srv", timeout=10):
                owner = await raw.get(lock_key)
        assert owner is not None
        assert await raw.exists(lock_key) == 0


@pytest.mark.anyio
async def test_a_lease_renewed_past_its_first_expiry_is_not_stolen(redis_url: str) -> None:
    namespace = fresh_namespace()
    lock_key = f"{namespace}:lock:k"
    async with (
        RedisTokenStore(redis_url, namespace=namespace, lease=1.2) as holder,
        RedisTokenStore(redis_url, namespace=namespace) as other,
        raw_redis(redis_url) as raw,
    ):
        async with holder.lock("k"):
            token = await raw.get(lock_key)
            # Two and a half initial leases long: the lease had to be renewed several times.
            with anyio.fail_after(15), pytest.raises(TokenStoreLockTimeout):
                async with other.lock("k", timeout=3):
                    pytest.fail("took a lock whose holder is alive")
            assert await raw.get(lock_key) == token
            assert 0 < await raw.pttl(lock_key) <= 1200
        assert await raw.exists(lock_key) == 0
        with anyio.fail_after(10):
            async with other.lock("k", timeout=5):
                pass


@pytest.mark.anyio
async def test_a_waiter_wakes_on_release_not_at_the_lease_expiry(redis_url: str) -> None:
    namespace = fresh_namespace()
    async with (
        RedisTokenStore(redis_url, namespace=namespace, lease=60) as holder,
        RedisTokenStore(redis_url, namespace=namespace) as waiter,
    ):
        held, release, acquired, blocked = (
            anyio.Event(),
            anyio.Event(),
            anyio.Event(),
            anyio.Event(),
        )

        class Blocked(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.getMessage().startswith("waiting up to"):
                    blocked.set()

        handler = Blocked(logging.DEBUG)
        logger = logging.getLogger("funnel_tokenstore")
        logger.addHandler(handler)
        old_level = logger.level
        logger.setLevel(logging.DEBUG)

        async def hold() -> None:
            async with holder.lock("k"):
                held.set()
                await release.wait()

        async def wait_for_it() -> None:
            # Blocks for min(its timeout, the lease left): 30 s without a wake-up.
            async with waiter.lock("k", timeout=30):
                acquired.set()

        try:
            with anyio.fail_after(8):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(hold)
                    await held.wait()
                    tg.start_soon(wait_for_it)
                    await blocked.wait()  # it saw the lock taken and went to sleep on it
                    release.set()
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
        assert acquired.is_set()


@pytest.mark.anyio
async def test_a_holder_that_loses_its_lease_is_cancelled_and_told(redis_url: str) -> None:
    namespace = fresh_namespace()
    async with (
        RedisTokenStore(redis_url, namespace=namespace, lease=0.3) as store,
        raw_redis(redis_url) as raw,
    ):

        async def hold_while_the_lease_vanishes() -> None:
            async with store.lock("k"):
                await raw.delete(f"{namespace}:lock:k")  # an operator, or an evicting Redis
                await anyio.sleep_forever()

        with anyio.fail_after(10), pytest.raises(TokenStoreUnavailable, match="lost lock 'k'"):
            await hold_while_the_lease_vanishes()
        async with store.lock("k", timeout=5):
            pass


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "funnel test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.mark.anyio
async def test_a_rediss_url_talks_tls_and_checks_the_certificate(
    redis_url: str, tmp_path: Path
) -> None:
    ca, cert, key = write_tls_files(tmp_path)
    port = closed_port()
    tls = ["--tls-port", str(port), "--port", "0", "--tls-auth-clients", "no"]
    tls += ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca)]
    with redis_server(args=tls):
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"
        async with RedisTokenStore(url, namespace=fresh_namespace()) as store:
            await store.set("k", b"over TLS")
            assert await store.get("k") == b"over TLS"
            async with store.lock("k"):
                pass
        # Without the CA the server's certificate is not trusted: no silent fallback.
        async with RedisTokenStore(f"rediss://127.0.0.1:{port}/0", timeout=3) as untrusted:
            with anyio.fail_after(10), pytest.raises(TokenStoreUnavailable, match="rediss://"):
                await untrusted.get("k")


@pytest.mark.anyio
async def test_a_waiter_cancelled_while_waiting_leaves_no_lock_behind(redis_url: str) -> None:
    namespace = fresh_namespace()
    async with (
        RedisTokenStore(redis_url, namespace=namespace) as one,
        RedisTokenStore(redis_url, namespace=namespace) as two,
        raw_redis(redis_url) as raw,
    ):
        async with one.lock("k"):
            with anyio.move_on_after(0.2) as scope:
                async with two.lock("k", timeout=30):
                    pytest.fail("entered a lock that another store holds")
            assert scope.cancelled_caught
        assert await raw.exists(f"{namespace}:lock:k") == 0
        with anyio.fail_after(5):
            async with two.lock("k", timeout=5):
                pass


def test_without_the_redis_package_the_error_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)  # as if it were not installed
    with pytest.raises(TokenStoreConfigError, match=r"funnel-tokenstore\[redis\]"):
        RedisTokenStore("redis://127.0.0.1:6379/0")
