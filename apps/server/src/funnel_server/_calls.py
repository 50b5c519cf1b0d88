"""Every tool call, whichever way it came in: per-tool rate limits and the audit event.

Theory of operation: stdio, ``/mcp``, ``/ws`` and REST all end in
:meth:`Funnel.call_tool`. :class:`ServerFunnel` is the funnel this app runs; it overrides
that one method, so a limit or an audit line cannot be forgotten on any path. Which path
a call came from travels in a context variable (:data:`call_origin`) set by each front
door, so the audit event can say ``client=ws``.

Limits come from the config's ``rateLimits.tools``: every pattern that matches the
exposed name counts the call in its own bucket (shared by all clients). A call is
refused without being counted anywhere when any bucket is full, with the time until it
would be allowed. With shared state (``--shared-state``) the buckets live in Valkey/Redis
and count every replica's calls once (:meth:`SharedState.acquire
<funnel_server._shared.SharedState.acquire>`, a sliding log in one Lua script); without
it they are this process's :class:`~funnel_auth.RateLimiter`.

With shared state, a login completed on this replica is announced on the ``tokens``
channel, and :meth:`ServerFunnel.follow_logins` makes every other replica's waiting
backend read the new tokens and connect.
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import msgspec
from msgspec import Raw

from funnel_auth import AuthorizationCodeAuth, RateLimiter
from funnel_proxy import Funnel, FunnelConfig, PatternSet, RateLimits, ReloadReport, ToolEntry
from funnel_server._audit import audit
from funnel_server._shared import SharedStateUnavailable
from funnel_transports import RpcError

if TYPE_CHECKING:
    from funnel_server._shared import SharedState

__all__ = ["RATE_LIMITED", "ServerFunnel", "ToolCallLimits", "ToolRateLimited", "call_origin"]

logger = logging.getLogger("funnel_server")

TOKENS_CHANNEL: Final = "tokens"
"""The shared-state channel a replica announces a completed login on."""


class _TokensChanged(msgspec.Struct, frozen=True):
    server: str
    origin: str


RATE_LIMITED: Final = -32029
"""The JSON-RPC error code of a call refused by a rate limit (implementation-defined range)."""

call_origin: contextvars.ContextVar[str] = contextvars.ContextVar(
    "funnel_call_origin", default="stdio"
)
"""Which front door a tool call came through: ``stdio``, ``mcp``, ``ws`` or ``rest``."""


class ToolRateLimited(RpcError):
    """A call was refused by a configured rate limit.

    It is an :class:`~funnel_transports.RpcError`, so every MCP path answers it as a
    JSON-RPC error (code :data:`RATE_LIMITED`, ``data.retryAfter`` in seconds).

    Attributes:
        tool: The exposed tool name.
        retry_after: Seconds until the call would be allowed.
    """

    def __init__(self, tool: str, retry_after: float) -> None:
        self.tool = tool
        self.retry_after = retry_after
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            RATE_LIMITED,
            f"Rate limit exceeded for {tool}: try again in {seconds} s",
            {"retryAfter": seconds},
        )


class ToolCallLimits:
    """The configured per-tool call limits (pure: an injected clock, no I/O).

    Args:
        limits: The config's ``rateLimits``.
        clock: A monotonic clock in seconds.

    Attributes:
        config: The ``rateLimits`` these limits were built from.
    """

    def __init__(self, limits: RateLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = limits
        self._buckets = [
            (
                pattern,
                PatternSet([pattern]),
                RateLimiter(max_attempts=limit.calls, window=limit.per_seconds, clock=clock),
            )
            for pattern, limit in sorted(limits.tools.items())
        ]

    def __bool__(self) -> bool:
        return bool(self._buckets)

    def buckets(self, tool: str) -> list[tuple[str, int, float]]:
        """``(pattern, calls, seconds)`` of every limit that matches ``tool``."""
        return [
            (pattern, self.config.tools[pattern].calls, self.config.tools[pattern].per_seconds)
            for pattern, match, _ in self._buckets
            if match.matches(tool)
        ]

    def acquire(self, tool: str) -> float:
        """Count a call of ``tool`` if every matching limit allows it.

        Returns:
            0.0 when the call may go ahead (it was counted in every matching bucket),
            else the seconds until it would be allowed (nothing counted).
        """
        if not self._buckets:
            return 0.0
        matching = [
            (pattern, limiter) for pattern, match, limiter in self._buckets if match.matches(tool)
        ]
        wait = max((limiter.check(pattern) for pattern, limiter in matching), default=0.0)
        if wait > 0:
            return wait
        for pattern, limiter in matching:
            limiter.acquire(pattern)
        return 0.0


class ServerFunnel(Funnel):
    """The :class:`Funnel` this app runs: rate-limited, audited tool calls.

    Args:
        config: The configuration (its ``rateLimits`` apply).
        clock: A monotonic clock for the limits (injectable for tests).
        shared: The replicas' shared state: limits are counted there, logins announced.
        **options: Passed on to :class:`Funnel`.
    """

    def __init__(
        self,
        config: FunnelConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedState | None = None,
        **options: Any,
    ) -> None:
        super().__init__(config, **options)
        self._clock = clock
        self.shared = shared
        self.limits = ToolCallLimits(config.rate_limits, clock=clock)
        self._replica = f"{os.getpid()}-{id(self):x}"

    async def apply_config(self, config: FunnelConfig) -> ReloadReport:
        """:meth:`Funnel.apply_config`, and the new config's ``rateLimits`` (counts start afresh)."""
        report = await super().apply_config(config)
        if config.rate_limits != self.limits.config:
            self.limits = ToolCallLimits(config.rate_limits, clock=self._clock)
        return report

    def admit(self, entry: ToolEntry) -> dict[str, str | float | None]:
        """Refuse a call that a configured limit does not allow (audited either way).

        Raises:
            ToolRateLimited: A configured limit refused the call.
        """
        fields: dict[str, str | float | None] = {
            "server": entry.server,
            "tool": entry.name,
            "client": call_origin.get(),
        }
        # With shared state the limits were counted in Redis by call_tool already.
        wait = 0.0 if self.shared is not None else self.limits.acquire(entry.name)
        if wait > 0:
            audit("tool.call", outcome="limited", retry_after=round(wait, 3), **fields)
            raise ToolRateLimited(entry.name, wait)
        return fields

    async def call_tool(
        self,
        entry: ToolEntry,
        arguments: Raw | Mapping[str, Any] | None,
        **options: Any,
    ) -> Raw:
        """:meth:`Funnel.call_tool`, counted against the limits shared by all replicas first.

        Raises:
            ToolRateLimited: A configured limit refused the call (counted across replicas).
        """
        if self.shared is not None and self.limits:
            buckets = [
                (f"tool:{pattern}", calls, seconds)
                for pattern, calls, seconds in self.limits.buckets(entry.name)
            ]
            try:
                wait = await self.shared.acquire(buckets)
            except SharedStateUnavailable as exc:
                # Fail closed: a limit nobody can count is not a limit.
                audit(
                    "tool.call",
                    outcome="failure",
                    reason="shared state unreachable",
                    server=entry.server,
                    tool=entry.name,
                    client=call_origin.get(),
                )
                raise RpcError(
                    -32603, f"{entry.name} is rate limited and the shared state is unreachable"
                ) from exc
            if wait > 0:
                audit(
                    "tool.call",
                    outcome="limited",
                    retry_after=round(wait, 3),
                    server=entry.server,
                    tool=entry.name,
                    client=call_origin.get(),
                )
                raise ToolRateLimited(entry.name, wait)
        return await super().call_tool(entry, arguments, **options)

    async def complete_authorization(
        self,
        *,
        state: str,
        code: str | None,
        iss: str | None,
        error: str | None = None,
        error_description: str | None = None,
    ) -> str:
        """:meth:`Funnel.complete_authorization`, then tell the other replicas (shared state)."""
        server = await super().complete_authorization(
            state=state, code=code, iss=iss, error=error, error_description=error_description
        )
        if self.shared is not None:
            message = _TokensChanged(server=server, origin=self._replica)
            await self.shared.publish(TOKENS_CHANNEL, msgspec.json.encode(message))
        return server

    async def follow_logins(self) -> None:
        """Until cancelled: when another replica completes a login, connect its backend here.

        Each such backend drops its copy of the pending flow, reads the tokens from the
        shared store and reconnects. Without shared state it returns at once.
        """
        if self.shared is None:
            return
        decoder = msgspec.json.Decoder(_TokensChanged)
        async with self.shared.subscribe(TOKENS_CHANNEL) as messages:
            async for payload in messages:
                try:
                    message = decoder.decode(payload)
                except msgspec.DecodeError:
                    logger.warning("ignored a malformed message on the tokens channel")
                    continue
                if message.origin != self._replica:
                    self.authorized_elsewhere(message.server)

    def authorized_elsewhere(self, server: str) -> None:
        """Another replica authorized ``server``: use its tokens here (reconnect the backend)."""
        backend = self._backends.get(server)
        if backend is None:
            return
        auth = backend.auth
        if isinstance(auth, AuthorizationCodeAuth):
            auth.authorized_elsewhere()
        if backend.state.status != "connected":
            logger.info("[%s] authorized on another replica; connecting", server)
            backend.reconnect()

    def record(
        self, context: Any, entry: ToolEntry, outcome: str, duration_ms: float, reason: str | None
    ) -> None:
        """Write the call's ``tool.call`` audit event."""
        audit("tool.call", outcome=outcome, duration_ms=duration_ms, reason=reason, **context)
