"""State shared by several funnel-server replicas, in Valkey or Redis.

Theory of operation. ``funnel-server --shared-state URL`` (``FUNNEL_SHARED_STATE``) makes
replicas with the same config, ``FUNNEL_API_TOKEN`` and ``FUNNEL_STATE_KEY`` behave as one
funnel behind a plain round-robin balancer. :class:`SharedState` owns the one
``redis.asyncio`` client of a process and everything built on it:

- the token store (``EncryptedTokenStore(RedisTokenStore(...))`` from funnel-tokenstore),
  used whatever the local token-store setting says, so tokens and client registrations
  exist once for all replicas, sealed at rest (and a value that is not sealed is refused);
- :meth:`publish` / :meth:`subscribe`: one pub/sub connection per process, fanned out to
  bounded local queues (a subscriber that does not keep up loses messages; it never
  blocks the reader or the publisher);
- :meth:`acquire`: rate-limit counters counted once across replicas (below);
- :meth:`ping`: readiness.

Rate limits use a *sliding log* per bucket, one Redis sorted set of the admitted calls'
times, in one Lua script that reads the clock of the Redis server (``TIME``), so the
replicas' own clocks never matter. For every bucket of a call it drops entries older
than the window and counts the rest; if any bucket is full the call is refused and
nothing is counted (the answer is the time until the oldest entry of the fullest bucket
leaves its window); otherwise the call is added to every bucket and each key's expiry set
to its window. The script runs atomically, so "30 per minute" admits exactly 30 across
any number of replicas; the ± of the issue is only the network's reordering at the edge
of a window.

Every key lives under ``<namespace>:`` (default ``funnel``), so several funnels may share
one Redis database. Secrets never reach Redis unsealed: the token store seals under its
own subkey of ``FUNNEL_STATE_KEY``, pending logins under ``derive("flows")``. Without the
flag none of this exists and ``redis`` is never imported.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from funnel_auth import AuthorizationFlows, PendingAuthorization
from funnel_tokenstore import (
    STATE_KEY_ENV,
    StateKeys,
    TokenStore,
    TokenStoreConfigError,
    TokenStoreError,
)

if TYPE_CHECKING:
    import redis.asyncio

    from funnel_tokenstore import RedisTokenStore

__all__ = [
    "SHARED_STATE_ENV",
    "SharedFlows",
    "SharedState",
    "SharedStateError",
    "SharedStateUnavailable",
    "shared_state_url",
]

logger = logging.getLogger("funnel_server.shared")

SHARED_STATE_ENV: Final = "FUNNEL_SHARED_STATE"
_SCHEMES: Final = ("redis", "rediss", "unix")
_QUEUE: Final = 256
_CONNECT_TIMEOUT: Final = 5.0
_CONTROL: Final = "_control"
_FLOW_LOCK_SECONDS: Final = 30.0

# KEYS: the buckets. ARGV: a unique member, then (limit, window in ms) per bucket.
# Returns 0 when admitted (counted in every bucket), else the ms until it would be.
_ACQUIRE_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i * 2])
  local window = tonumber(ARGV[i * 2 + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local left = window
    if oldest[2] then left = tonumber(oldest[2]) + window - now end
    if left < 1 then left = 1 end
    if left > wait then wait = left end
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[1] .. ':' .. now)
  redis.call('PEXPIRE', key, tonumber(ARGV[i * 2 + 1]))
end
return 0
"""


class SharedStateError(Exception):
    """Shared state is misconfigured (bad URL, no ``FUNNEL_STATE_KEY``): a start-up error."""


class SharedStateUnavailable(SharedStateError):
    """Valkey/Redis cannot be reached (or answered with an error)."""


def shared_state_url(flag: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The shared-state URL from ``--shared-state`` or ``FUNNEL_SHARED_STATE``, checked.

    Raises:
        SharedStateError: The URL's scheme is not ``redis``, ``rediss`` or ``unix``.
    """
    environ = os.environ if environ is None else environ
    url = (flag or environ.get(SHARED_STATE_ENV, "")).strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise SharedStateError(
            f"--shared-state {_display(url)!r}: use redis://HOST:PORT/DB, rediss://… (TLS) or "
            "unix:///path/to/redis.sock"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise SharedStateError(f"--shared-state {_display(url)!r} names no host")
    return url


def _display(url: str) -> str:
    """``url`` without its password (it may carry one: ``redis://:secret@host``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return parts._replace(netloc=f"{user}***@{netloc}").geturl()


class SharedState:
    """The state replicas share through Valkey/Redis (see the module docstring).

    Use as an async context manager: entering connects (bounded) and starts the pub/sub
    reader; leaving stops it and closes the connections.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL.
        keys: The state keys (``FUNNEL_STATE_KEY``); every secret is sealed with them.
        namespace: The prefix of every key and channel.

    Attributes:
        url: The URL (may hold a password: never log it, use :attr:`display_url`).
        keys: The state keys.
        namespace: The key prefix.
    """

    def __init__(self, url: str, *, keys: StateKeys, namespace: str = "funnel") -> None:
        self.url = url
        self.keys = keys
        self.namespace = namespace
        self._client: redis.asyncio.Redis | None = None
        self._pubsub: Any = None
        self._channels: dict[str, set[MemoryObjectSendStream[bytes]]] = {}
        self._acquire_script: Any = None
        self._token_store: TokenStore | None = None
        self._redis_store: RedisTokenStore | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    @classmethod
    def from_environment(
        cls, flag: str | None, environ: Mapping[str, str] | None = None
    ) -> SharedState | None:
        """The shared state ``--shared-state`` / the environment ask for, or ``None``.

        Raises:
            SharedStateError: A bad URL, or no (or a malformed) ``FUNNEL_STATE_KEY``.
        """
        environ = os.environ if environ is None else environ
        url = shared_state_url(flag, environ)
        if url is None:
            return None
        text = environ.get(STATE_KEY_ENV, "").strip()
        if not text:
            raise SharedStateError(
                f"--shared-state needs {STATE_KEY_ENV}: secrets in the shared store are always "
                "encrypted, with the same key on every replica. Generate one with "
                "funnel-server state-key"
            )
        try:
            keys = StateKeys.parse(text)
        except TokenStoreConfigError as exc:
            raise SharedStateError(f"{STATE_KEY_ENV}: {exc}") from None
        return cls(url, keys=keys)

    @property
    def display_url(self) -> str:
        """The URL with any password masked."""
        return _display(self.url)

    def key(self, *parts: str) -> str:
        """A Redis key in this funnel's namespace."""
        return ":".join((self.namespace, *parts))

    @property
    def client(self) -> redis.asyncio.Redis:
        """The connected client.

        Raises:
            SharedStateError: Used outside ``async with``.
        """
        if self._client is None:
            raise SharedStateError("the shared state is not connected (use async with)")
        return self._client

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> SharedState:
        import redis.asyncio

        self._client = redis.asyncio.Redis.from_url(
            self.url,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            health_check_interval=30,
        )
        if not await self.ping():
            await self._close()
            raise SharedStateUnavailable(f"cannot reach the shared state at {self.display_url}")
        try:
            self._acquire_script = self._client.register_script(_ACQUIRE_LUA)
            self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            # Subscribed to a control channel from the start: redis-py's reader stops when
            # a pub/sub connection has no channel at all.
            await self._pubsub.subscribe(self._channel(_CONTROL))
            self._tg = anyio.create_task_group()
            await self._tg.__aenter__()
            self._tg.start_soon(self._read)
        except BaseException:
            await self._close()
            raise
        logger.info("shared state: %s (namespace %s)", self.display_url, self.namespace)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._tg is not None:
            # Left first and outside the scopes below: a task group's scope must be the
            # innermost one when it exits.
            tg, self._tg = self._tg, None
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            for streams in self._channels.values():
                for stream in streams:
                    stream.close()
            self._channels.clear()
            if self._pubsub is not None:
                await self._pubsub.aclose()
                self._pubsub = None
            if self._redis_store is not None:
                await self._redis_store.aclose()
                self._redis_store = None
            if self._client is not None:
                await self._client.aclose()
                self._client = None

    async def ping(self) -> bool:
        """Whether Valkey/Redis answers now (readiness); never raises."""
        if self._client is None:
            return False
        try:
            with anyio.fail_after(_CONNECT_TIMEOUT):
                return bool(await self._client.ping())
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            logger.warning("shared state at %s unreachable: %s", self.display_url, exc)
            return False

    # ------------------------------------------------------------------ tokens

    def token_store(self) -> TokenStore:
        """The shared, encrypted token store (tokens and client registrations).

        Every value is sealed (``EncryptedTokenStore`` derives its own subkey of
        :attr:`keys`); a value in Redis that is not sealed is refused, never trusted.
        """
        if self._token_store is None:
            from funnel_tokenstore import EncryptedTokenStore, RedisTokenStore

            # Its keys are <namespace>:tok:… and :lock:…, apart from this module's own.
            self._redis_store = RedisTokenStore(self.url, namespace=self.namespace)
            self._token_store = EncryptedTokenStore(
                self._redis_store, self.keys, migrate_plaintext=False
            )
        return self._token_store

    # ------------------------------------------------------------------ pub/sub

    def _channel(self, channel: str) -> str:
        return self.key("channel", channel)

    async def publish(self, channel: str, payload: bytes) -> None:
        """Send ``payload`` to every replica's subscribers of ``channel`` (this one's too).

        Delivery is at most once: a replica that is not connected at that moment misses
        it (callers that must not miss anything read the store again when they reconnect).

        Raises:
            SharedStateUnavailable: Redis cannot be reached.
        """
        try:
            await self.client.publish(self._channel(channel), payload)
        except Exception as exc:
            raise SharedStateUnavailable(f"publish on {channel!r} failed: {exc}") from exc

    @asynccontextmanager
    async def subscribe(
        self, channel: str, *, max_buffer: int = _QUEUE
    ) -> AsyncIterator[MemoryObjectReceiveStream[bytes]]:
        """Receive ``channel``'s messages for the duration of the block.

        The stream is bounded (``max_buffer``): when it is full a new message is dropped
        for this subscriber (and logged), so a slow subscriber never holds up the reader.
        The subscription is active when the block starts.
        """
        send, receive = anyio.create_memory_object_stream[bytes](max_buffer)
        name = self._channel(channel)
        subscribers = self._channels.setdefault(name, set())
        first = not subscribers
        subscribers.add(send)
        try:
            if first:
                await self._pubsub.subscribe(name)
            yield receive
        finally:
            subscribers.discard(send)
            send.close()
            receive.close()
            if not subscribers and self._channels.get(name) is subscribers:
                del self._channels[name]
                if self._pubsub is not None:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                        try:
                            await self._pubsub.unsubscribe(name)
                        except Exception as exc:  # noqa: BLE001 - the connection is going anyway
                            logger.debug("unsubscribe %s failed: %s", channel, exc)

    async def _read(self) -> None:
        """The one pub/sub reader: fan each message out to the local subscribers."""
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except Exception as exc:  # noqa: BLE001 - reconnect and carry on
                logger.warning("shared state pub/sub: %s; reconnecting", exc)
                await anyio.sleep(0.5)  # a pause between reconnects, not a timing window
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else str(channel)
            data = message["data"]
            payload = data if isinstance(data, bytes) else str(data).encode()
            for stream in list(self._channels.get(channel, ())):
                _offer(stream, payload, channel)

    # ------------------------------------------------------------------ counters

    async def acquire(self, buckets: Sequence[tuple[str, int, float]]) -> float:
        """Count one event in every bucket if each allows it (atomically, across replicas).

        Args:
            buckets: ``(name, limit, window seconds)`` per bucket.

        Returns:
            0.0 when admitted (counted everywhere), else the seconds until it would be
            (nothing counted).

        Raises:
            SharedStateUnavailable: Redis cannot be reached.
        """
        if not buckets:
            return 0.0
        keys = [self.key("limit", name) for name, _, _ in buckets]
        args: list[str | int] = [secrets.token_hex(6)]
        for _, limit, window in buckets:
            args += [int(limit), max(1, round(window * 1000))]
        try:
            waited = await self._acquire_script(keys=keys, args=args)
        except Exception as exc:
            raise SharedStateUnavailable(f"rate-limit counter failed: {exc}") from exc
        return int(waited) / 1000.0


def _offer(stream: MemoryObjectSendStream[bytes], payload: bytes, channel: str) -> None:
    """Queue ``payload`` for one subscriber; a full queue drops it (and says so)."""
    try:
        stream.send_nowait(payload)
    except anyio.WouldBlock:
        logger.warning("a subscriber of %s is not keeping up: dropped a message", channel)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass


class SharedFlows(AuthorizationFlows):
    """Pending authorization flows every replica sees, sealed in Valkey/Redis.

    A flow is stored twice, both sealed with ``StateKeys.derive("flows")`` (bound to its
    key) and expiring with the flow: under its ``state`` (``GETDEL`` makes it single-use
    across replicas) and under its server and scope set, so a replica that needs the same
    login joins it. The registry's clock is wall time, the one clock the replicas share.
    The per-server lock is a Redis lease (``SET NX PX`` with a token, released only by its
    holder), safe if the holder dies.

    Args:
        shared: The connected shared state.
        ttl: Seconds a flow stays valid.
    """

    def __init__(self, shared: SharedState, *, ttl: float = 300.0) -> None:
        super().__init__(ttl=ttl, clock=time.time)
        self._shared = shared
        self._keys = shared.keys.derive("flows")

    def _state_key(self, state: str) -> str:
        return self._shared.key("flow", "state", hashlib.sha256(state.encode()).hexdigest())

    def _join_key(self, server: str, scope: str | None) -> str:
        words = " ".join(sorted((scope or "").split()))
        digest = hashlib.sha256(f"{server}\0{words}".encode()).hexdigest()
        return self._shared.key("flow", "join", digest)

    def _seal(self, key: str, data: bytes) -> bytes:
        return self._keys.seal(data, aad=key.encode())

    def _open(self, key: str, data: bytes | str | None) -> bytes | None:
        if not isinstance(data, bytes):
            return None
        try:
            return self._keys.open(data, aad=key.encode())
        except TokenStoreError as exc:
            logger.warning("a pending login in the shared state does not open: %s", exc)
            return None

    @asynccontextmanager
    async def lock(self, server: str) -> AsyncIterator[None]:
        """A lease on starting ``server``'s flow, across replicas (and tasks here)."""
        async with super().lock(server):
            lease = self._shared.client.lock(
                self._shared.key("flow", "lock", server),
                timeout=_FLOW_LOCK_SECONDS,
                blocking_timeout=_FLOW_LOCK_SECONDS,
            )
            try:
                acquired = await lease.acquire()
            except Exception as exc:
                raise SharedStateUnavailable(f"flow lock for {server}: {exc}") from exc
            if not acquired:
                raise SharedStateUnavailable(f"flow lock for {server} not acquired in time")
            try:
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await lease.release()
                    except Exception as exc:  # noqa: BLE001 - the lease expires by itself
                        logger.debug("flow lock for %s: %s", server, exc)

    async def add(self, pending: PendingAuthorization) -> None:
        """Record the flow for every replica, expiring with it."""
        data = pending.encode()
        ttl_ms = max(1, round((pending.expires_at - self.now()) * 1000))
        state_key = self._state_key(pending.state)
        join_key = self._join_key(pending.server, pending.scope)
        async with self._shared.client.pipeline(transaction=True) as pipe:
            pipe.set(state_key, self._seal(state_key, data), px=ttl_ms)
            pipe.set(join_key, self._seal(join_key, data), px=ttl_ms)
            await pipe.execute()

    async def discard(self, state: str) -> None:
        """Forget a flow on every replica."""
        pending = await self.pop(state)
        if pending is not None:
            await self._drop_join(pending)

    async def _drop_join(self, pending: PendingAuthorization) -> None:
        join_key = self._join_key(pending.server, pending.scope)
        raw = await self._shared.client.get(join_key)
        opened = self._open(join_key, raw)
        if opened is not None:
            current = PendingAuthorization.decode(opened, self.owners)
            if current.state == pending.state:
                await self._shared.client.delete(join_key)

    async def find(self, server: str, scope: str | None) -> PendingAuthorization | None:
        """The unexpired flow of ``server`` for ``scope`` any replica started, if any."""
        join_key = self._join_key(server, scope)
        raw = await self._shared.client.get(join_key)
        opened = self._open(join_key, raw)
        if opened is None or server not in self.owners:
            return None
        pending = PendingAuthorization.decode(opened, self.owners)
        if pending.expires_at <= self.now() or pending.scope != scope:
            return None
        return pending

    async def pop(self, state: str) -> PendingAuthorization | None:
        """Take the flow out for every replica (``GETDEL``: one callback wins)."""
        state_key = self._state_key(state)
        raw = await self._shared.client.getdel(state_key)
        opened = self._open(state_key, raw)
        if opened is None:
            return None
        pending = PendingAuthorization.decode(opened, self.owners)
        await self._drop_join(pending)
        return pending
