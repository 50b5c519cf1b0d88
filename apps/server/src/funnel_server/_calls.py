"""Every tool call, whichever way it came in: per-tool rate limits and the audit event.

Theory of operation: stdio, ``/mcp``, ``/ws`` and REST all end in
:meth:`Funnel.call_tool`. :class:`ServerFunnel` is the funnel this app runs; it overrides
that one method, so a limit or an audit line cannot be forgotten on any path. Which path
a call came from travels in a context variable (:data:`call_origin`) set by each front
door, so the audit event can say ``client=ws``.

Limits come from the config's ``rateLimits.tools``: every pattern that matches the
exposed name counts the call in its own bucket (shared by all clients). A call is
refused without being counted anywhere when any bucket is full, with the time until it
would be allowed.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Callable
from typing import Any, Final

from funnel_auth import RateLimiter
from funnel_proxy import Funnel, FunnelConfig, PatternSet, RateLimits, ReloadReport, ToolEntry
from funnel_server._audit import audit
from funnel_transports import RpcError

__all__ = ["RATE_LIMITED", "ServerFunnel", "ToolCallLimits", "ToolRateLimited", "call_origin"]

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
        **options: Passed on to :class:`Funnel`.
    """

    def __init__(
        self,
        config: FunnelConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        super().__init__(config, **options)
        self._clock = clock
        self.limits = ToolCallLimits(config.rate_limits, clock=clock)

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
        wait = self.limits.acquire(entry.name)
        if wait > 0:
            audit("tool.call", outcome="limited", retry_after=round(wait, 3), **fields)
            raise ToolRateLimited(entry.name, wait)
        return fields

    def record(
        self, context: Any, entry: ToolEntry, outcome: str, duration_ms: float, reason: str | None
    ) -> None:
        """Write the call's ``tool.call`` audit event."""
        audit("tool.call", outcome=outcome, duration_ms=duration_ms, reason=reason, **context)
