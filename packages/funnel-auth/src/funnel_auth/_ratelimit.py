"""A sliding-window rate limiter: at most N attempts per key in any window of T seconds.

Pure: it keeps timestamps from an injected clock and does no I/O and no sleeping. It
answers "how long until the next attempt is allowed", and the caller decides whether to
wait or to fail.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """In-memory sliding-window limiter, per key.

    Example:
        >>> clock = iter([0.0, 0.1, 0.2]).__next__
        >>> limiter = RateLimiter(max_attempts=2, window=60.0, clock=clock)
        >>> limiter.acquire("server-a"), limiter.acquire("server-a"), limiter.acquire("server-a")
        (0.0, 0.0, 60.0)

    Args:
        max_attempts: Attempts allowed per key within any window.
        window: The window length in seconds.
        clock: A monotonic clock in seconds (injectable for tests).
        max_keys: Keys kept at most; the least recently used are forgotten first, so
            that a flood of distinct keys (client addresses) cannot grow memory.
    """

    def __init__(
        self,
        *,
        max_attempts: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if max_attempts < 1 or window <= 0 or max_keys < 1:
            raise ValueError("max_attempts, window and max_keys must be positive")
        self.max_attempts = max_attempts
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._attempts: dict[str, deque[float]] = {}

    def _prune(self, key: str, now: float) -> deque[float]:
        attempts = self._attempts.pop(key, None)
        if attempts is None:
            attempts = deque()
        while attempts and attempts[0] <= now - self.window:
            attempts.popleft()
        # Re-insert at the end: dict order is then least-recently-used first.
        self._attempts[key] = attempts
        return attempts

    def _wait(self, key: str, now: float) -> float:
        attempts = self._prune(key, now)
        if len(attempts) < self.max_attempts:
            return 0.0
        return max(attempts[0] + self.window - now, 0.0)

    def check(self, key: str) -> float:
        """Return seconds until an attempt for ``key`` is allowed (0.0 = now); record nothing."""
        return self._wait(key, self._clock())

    def acquire(self, key: str) -> float:
        """Record an attempt for ``key`` if allowed.

        Returns:
            0.0 when the attempt is allowed (and recorded), else the seconds until the
            next attempt will be allowed (nothing recorded).
        """
        now = self._clock()
        wait = self._wait(key, now)
        if wait > 0:
            return wait
        self._attempts[key].append(now)
        while len(self._attempts) > self._max_keys:
            del self._attempts[next(iter(self._attempts))]
        return 0.0

    def reset(self, key: str) -> None:
        """Forget every attempt for ``key`` (after a success, say)."""
        self._attempts.pop(key, None)

    def __len__(self) -> int:
        return len(self._attempts)
