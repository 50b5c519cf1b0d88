"""The config's ``rateLimits``: per-tool call limits, enforced by every :class:`Funnel`.

Every pattern of ``rateLimits.tools`` that matches an exposed tool name counts the call in
its own bucket (a sliding window, shared by every client of this process). A call is
refused, and counted nowhere, when any matching bucket is full; the refusal is a JSON-RPC
error (:data:`RATE_LIMITED`, ``data.retryAfter`` in whole seconds) on every path.
Pure: an injected clock, no I/O. Several replicas count in a shared store instead (see
funnel-server's ``--shared-state``), using :meth:`ToolCallLimits.buckets`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

from funnel_auth import RateLimiter
from funnel_proxy._models import RateLimits
from funnel_proxy._patterns import PatternSet
from funnel_transports import RpcError

__all__ = ["RATE_LIMITED", "ToolCallLimits", "ToolRateLimited"]

RATE_LIMITED: Final = -32029
"""The JSON-RPC error code of a call refused by a rate limit (implementation-defined range)."""


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
    """The configured per-tool call limits.

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
