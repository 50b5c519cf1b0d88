"""A token store in Redis or Valkey, shared by every replica that points at it.

Theory of operation. A value lives under ``<namespace>:tok:<key>`` as raw bytes (what the
caller gave, unchanged). Every command runs on ``redis.asyncio`` with socket timeouts and,
around it, an anyio deadline of ``timeout`` seconds; a Redis error, a refused connection
or a missed deadline becomes :class:`~funnel_tokenstore.TokenStoreUnavailable` naming the
URL without its password.

``lock(key)`` is a lease, ``<namespace>:lock:<key>``, taken with ``SET NX PX lease`` and a
random owner token. While the body runs, a task renews the lease every third of its length
with a compare-and-expire script, so a long refresh keeps the lock while a holder that dies
(even by SIGKILL) stops renewing and loses it within one lease. Release is a
compare-and-delete script: a holder whose lease was lost never deletes the next holder's
lock. The same script pushes one wake-up token onto ``<namespace>:lockwake:<key>``; a
waiter blocks on that list (``BLPOP``) for at most the lease's remaining time, so it wakes
when the lock is released and, should the wake-up be lost (a holder that died), when the
lease expires, with no fixed-interval polling. Waiting is bounded by ``lock_timeout``.
Tasks of one process queue on an ``anyio.Lock`` per key first, so one task per process at
most waits in Redis for a given lock.

A holder whose lease cannot be renewed before it expires (Redis unreachable for a whole
lease, or the key removed by hand) has lost the lock: its body is cancelled and
``lock(key)`` raises :class:`~funnel_tokenstore.TokenStoreUnavailable`, rather than let it
write while another replica may hold the lock.

``redis`` (the ``redis`` extra) is imported when the first store is created. redis-py runs
on asyncio, so this store needs anyio's asyncio backend.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio

from funnel_tokenstore._errors import (
    TokenStoreConfigError,
    TokenStoreLockTimeout,
    TokenStoreUnavailable,
)
from funnel_tokenstore._keys import check_key

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["RedisTokenStore", "redact_url"]

# One logger for the package: the private module names are not part of the contract.
logger = logging.getLogger("funnel_tokenstore")

_T = TypeVar("_T")
_SCHEMES = ("redis", "rediss", "unix")
_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ACQUIRED = -3

# Take the lock, or say how long the current lease still runs (-2: gone, -1: no expiry).
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -3 end
return redis.call('pttl', KEYS[1])
"""
# Extend the lease only while we still own it.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
# Delete the lock only while we still own it, and wake one waiter.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  redis.call('del', KEYS[2])
  redis.call('rpush', KEYS[2], '1')
  redis.call('pexpire', KEYS[2], ARGV[2])
  return 1
end
return 0
"""
# Replace a value only if it is still the one the caller read.
_COMPARE_AND_SET = """
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('set', KEYS[1], ARGV[2]) return 1 end
return 0
"""


@dataclass(frozen=True, slots=True)
class _Lease:
    key: str
    lock_key: str
    wake_key: str
    token: bytes


def redact_url(url: str) -> str:
    """``url`` without its password (in the user part or a ``password`` query item)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, colon, _password = userinfo.partition(":")
            netloc = f"{user}{':***' if colon else ''}@{hostport}"
        query = parts.query
        if query:
            items = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, "***" if k.lower() == "password" else v) for k, v in items], safe="*"
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<unparsable redis URL>"


def _redis_module() -> Any:
    try:
        import redis.asyncio as redis_asyncio
    except ImportError as exc:
        raise TokenStoreConfigError(
            "the Redis token store needs the 'redis' package: install funnel-tokenstore[redis]"
        ) from exc
    return redis_asyncio


class RedisTokenStore:
    """Keeps values in Redis or Valkey, shared by every process and replica using it.

    Keys are stored as ``<namespace>:tok:<key>``, lock leases as ``<namespace>:lock:<key>``
    and their wake-up lists as ``<namespace>:lockwake:<key>``; nothing else is written.
    Close the store with :meth:`aclose` (or ``async with``) when done.

    Args:
        url: ``redis://[user:password@]host[:port][/db]``, ``rediss://…`` (TLS) or
            ``unix:///path/to/socket[?db=N]``; redis-py's query options apply.
        namespace: Prefix of every key: letters, digits, ``_ . -`` (1 to 64). Several
            funnel deployments can share one database with different namespaces.
        timeout: Seconds each command may take, connecting included, before
            :class:`~funnel_tokenstore.TokenStoreUnavailable`.
        lock_timeout: Seconds :meth:`lock` waits by default.
        lease: Seconds a lock lease lasts without renewal: how long a dead holder keeps
            the lock. Renewed every ``lease / 3`` while held.

    Raises:
        TokenStoreConfigError: Not a Redis URL, a bad namespace or timing, or the
            ``redis`` package is missing.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "funnel",
        timeout: float = 5.0,
        lock_timeout: float = 60.0,
        lease: float = 15.0,
    ) -> None:
        shown = redact_url(url)
        scheme = urlsplit(url).scheme.lower() if "://" in url else ""
        if scheme not in _SCHEMES:
            raise TokenStoreConfigError(
                f"{shown!r} is not a Redis URL: use redis://, rediss:// or unix://"
            )
        if not _NAMESPACE.fullmatch(namespace):
            raise TokenStoreConfigError(
                f"Redis namespace {namespace!r} must be 1 to 64 letters, digits, '_', '.' or '-'"
            )
        if timeout <= 0 or lock_timeout < 0 or lease < 0.03:
            raise TokenStoreConfigError(
                "timeout must be positive, lock_timeout not negative, lease at least 0.03 s"
            )
        redis_asyncio = _redis_module()
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff

        self._url = shown
        self._namespace = namespace
        self._timeout = timeout
        self._lock_timeout = lock_timeout
        self._lease_ms = max(30, int(lease * 1000))
        # One quick retry covers a pooled connection the server has closed meanwhile.
        retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), 1)
        try:
            self._client: redis.asyncio.Redis = redis_asyncio.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=retry,
                decode_responses=False,
            )
            # BLPOP blocks longer than a command may take: its own pool, no read timeout,
            # bounded by an anyio deadline instead.
            self._blocking: redis.asyncio.Redis = redis_asyncio.Redis.from_url(
                url,
                socket_timeout=None,
                socket_connect_timeout=timeout,
                retry=retry,
                decode_responses=False,
            )
        except ValueError as exc:
            # redis-py's message may quote the URL: say it without the password.
            raise TokenStoreConfigError(f"{shown!r} is not a usable Redis URL") from exc
        self._acquire = self._client.register_script(_ACQUIRE)
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)
        self._cas = self._client.register_script(_COMPARE_AND_SET)
        self._local_locks: dict[str, anyio.Lock] = {}

    @property
    def url(self) -> str:
        """The server's URL, without any password."""
        return self._url

    @property
    def namespace(self) -> str:
        """The prefix of every key this store writes."""
        return self._namespace

    def __repr__(self) -> str:
        return f"RedisTokenStore(url={self._url!r}, namespace={self._namespace!r})"

    async def __aenter__(self) -> RedisTokenStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the store's connections (a later call reconnects)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
            await self._client.aclose()
            await self._blocking.aclose()

    def _key(self, key: str) -> str:
        return f"{self._namespace}:tok:{key}"

    async def _call(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        from redis.exceptions import RedisError

        try:
            with anyio.fail_after(self._timeout):
                return await call()
        except TimeoutError as exc:
            raise TokenStoreUnavailable(
                f"Redis at {self._url} did not answer {what} within {self._timeout:g} s"
            ) from exc
        except RedisError as exc:
            raise TokenStoreUnavailable(
                f"Redis at {self._url} failed {what}: {type(exc).__name__}: {exc}"
            ) from exc
        except OSError as exc:
            raise TokenStoreUnavailable(f"cannot reach Redis at {self._url}: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        """Return the value stored under ``key``, or ``None`` when there is none.

        Raises:
            TokenStoreUnavailable: Redis cannot be reached or failed the command.
        """
        check_key(key)
        value = await self._call(f"GET of {key!r}", lambda: self._client.get(self._key(key)))
        # decode_responses=False: redis-py returns bytes (its stubs also allow str).
        return None if value is None else value if isinstance(value, bytes) else value.encode()

    async def set(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key`` (one ``SET``: atomic).

        Raises:
            TokenStoreUnavailable: Redis cannot be reached or failed the command.
        """
        check_key(key)
        data = bytes(value)
        await self._call(f"SET of {key!r}", lambda: self._client.set(self._key(key), data))
        logger.debug("stored %r in Redis %s (%d bytes)", key, self._url, len(data))

    async def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error.

        Raises:
            TokenStoreUnavailable: Redis cannot be reached or failed the command.
        """
        check_key(key)
        await self._call(f"DEL of {key!r}", lambda: self._client.delete(self._key(key)))

    async def compare_and_set(self, key: str, expected: bytes, value: bytes) -> bool:
        """Store ``value`` only if ``key`` still holds ``expected``; whether it did.

        Raises:
            TokenStoreUnavailable: Redis cannot be reached or failed the command.
        """
        check_key(key)
        done = await self._call(
            f"compare-and-set of {key!r}",
            lambda: self._cas(keys=[self._key(key)], args=[bytes(expected), bytes(value)]),
        )
        return bool(done)

    async def keys(self) -> list[str]:
        """Every key in this store's namespace, sorted (``SCAN``, never ``KEYS``).

        Raises:
            TokenStoreUnavailable: Redis cannot be reached or failed the command.
        """
        prefix = f"{self._namespace}:tok:"

        async def scan() -> list[str]:
            found = [
                raw.decode("ascii", "replace")[len(prefix) :]
                async for raw in self._client.scan_iter(match=prefix + "*", count=1000)
            ]
            return sorted(set(found))

        return await self._call("SCAN", scan)

    @asynccontextmanager
    async def lock(self, key: str, *, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold the lease named ``key`` across every process and replica using this Redis.

        Args:
            key: The lock's name (a valid store key; usually the key it protects).
            timeout: Seconds to wait; the store's ``lock_timeout`` when omitted.

        Raises:
            TokenStoreLockTimeout: The lock was not acquired in time.
            TokenStoreUnavailable: Redis cannot be reached, or the lease was lost while
                held (the body is cancelled then).
        """
        check_key(key)
        wait = self._lock_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        local = self._local_locks.setdefault(key, anyio.Lock())
        with anyio.move_on_after(wait) as scope:
            await local.acquire()
        if scope.cancelled_caught:
            raise TokenStoreLockTimeout(
                f"lock {key!r} in Redis {self._url} is held by another task of this process; "
                f"gave up after {wait:g} s"
            )
        try:
            lease = _Lease(
                key=key,
                lock_key=f"{self._namespace}:lock:{key}",
                wake_key=f"{self._namespace}:lockwake:{key}",
                token=secrets.token_hex(16).encode(),
            )
            try:
                await self._take(lease, wait, deadline)
            except TokenStoreLockTimeout:
                raise  # Redis said no to the last try: nothing of ours to give back
            except BaseException:
                # Cancelled (or failed) after Redis may have taken the lock for us: give it
                # back now rather than at the lease's expiry. Compare-and-delete, so a lock
                # that is not ours is left alone.
                with anyio.CancelScope(shield=True):
                    await self._give_back(lease)
                raise
            lost: list[str] = []
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._keep, lease, lost, tg.cancel_scope)
                    try:
                        yield
                    finally:
                        tg.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # The task group wraps the body's own exception: hand it back as raised.
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise
            finally:
                with anyio.CancelScope(shield=True):
                    await self._give_back(lease)
            if lost:
                raise TokenStoreUnavailable(lost[0])
        finally:
            local.release()

    async def _take(self, lease: _Lease, wait: float, deadline: float) -> None:
        key = lease.key
        started = time.monotonic()
        lease_ms = str(self._lease_ms)
        while True:
            ttl = await self._call(
                f"lock of {key!r}",
                lambda: self._acquire(keys=[lease.lock_key], args=[lease.token, lease_ms]),
            )
            if ttl == _ACQUIRED:
                waited = time.monotonic() - started
                if waited > 0.05:
                    logger.debug("acquired Redis lock %r after waiting %.3f s", key, waited)
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TokenStoreLockTimeout(
                    f"lock {key!r} in Redis {self._url} is held by another process or "
                    f"replica; gave up after {wait:g} s"
                )
            if ttl == -2:  # released between SET and PTTL: try again at once
                continue
            lease_left = self._lease_ms / 1000 if ttl < 0 else int(ttl) / 1000
            block = max(0.01, min(remaining, lease_left))
            logger.debug("waiting up to %.3f s for Redis lock %r, held elsewhere", block, key)
            await self._block(key, lease.wake_key, block)

    async def _block(self, key: str, wake_key: str, seconds: float) -> None:
        from redis.exceptions import RedisError

        try:
            with anyio.fail_after(seconds + self._timeout):
                await self._blocking.blpop([wake_key], timeout=round(seconds, 3))
        except TimeoutError as exc:
            raise TokenStoreUnavailable(
                f"Redis at {self._url} did not answer a wait for lock {key!r}"
            ) from exc
        except RedisError as exc:
            raise TokenStoreUnavailable(
                f"Redis at {self._url} failed a wait for lock {key!r}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _keep(self, held: _Lease, lost: list[str], body: anyio.CancelScope) -> None:
        """Renew the lease every third of it; cancel the body if it is lost."""
        key = held.key
        lease = self._lease_ms / 1000
        expires = time.monotonic() + lease
        while True:
            await anyio.sleep(lease / 3)
            try:
                renewed = await self._call(
                    f"lease renewal of lock {key!r}",
                    lambda: self._renew(
                        keys=[held.lock_key], args=[held.token, str(self._lease_ms)]
                    ),
                )
            except TokenStoreUnavailable as exc:
                if time.monotonic() < expires:
                    logger.warning("%s; retrying while the lease lasts", exc)
                    continue
                lost.append(f"lost lock {key!r}: its lease expired while {exc}")
                body.cancel()
                return
            if not renewed:
                lost.append(f"lost lock {key!r} in Redis {self._url}: another holder has it now")
                body.cancel()
                return
            expires = time.monotonic() + lease

    async def _give_back(self, held: _Lease) -> None:
        try:
            await self._call(
                f"release of lock {held.key!r}",
                lambda: self._release(
                    keys=[held.lock_key, held.wake_key], args=[held.token, str(self._lease_ms)]
                ),
            )
        except TokenStoreUnavailable as exc:
            # The lease runs out on its own: the lock is free again within one lease.
            logger.warning("%s; it frees itself when its lease expires", exc)
