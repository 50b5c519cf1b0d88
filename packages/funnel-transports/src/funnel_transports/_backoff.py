"""Retry delays with exponential growth, a ceiling and jitter.

Pure: a :class:`Backoff` only computes numbers. Whoever reconnects sleeps on them, so
the policy is tested without clocks and is deterministic under a seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Backoff:
    """An exponential backoff policy.

    The delay before retry ``n`` (0-based) is ``min(initial * multiplier**n, max_delay)``,
    moved by up to ``±jitter`` of itself (``jitter=0.25`` spreads delays over 75–125%),
    never below zero and never above ``max_delay``.

    Attributes:
        initial: Seconds before the first retry.
        multiplier: Growth factor per retry (>= 1).
        max_delay: Ceiling in seconds.
        jitter: Relative spread in [0, 1].
        max_attempts: How many retries at most; ``None`` retries forever.
    """

    initial: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.25
    max_attempts: int | None = 10

    def __post_init__(self) -> None:
        if self.initial < 0:
            raise ValueError("Backoff.initial must be >= 0")
        if self.multiplier < 1:
            raise ValueError("Backoff.multiplier must be >= 1")
        if self.max_delay < self.initial:
            raise ValueError("Backoff.max_delay must be >= initial")
        if not 0 <= self.jitter <= 1:
            raise ValueError("Backoff.jitter must be between 0 and 1")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError("Backoff.max_attempts must be >= 0 or None")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The delay in seconds before retry number ``attempt`` (0-based)."""
        # Cap the exponent's effect before it overflows a float for huge attempt counts.
        base = self.max_delay
        if self.multiplier == 1 or attempt < 1024:
            base = min(self.initial * self.multiplier**attempt, self.max_delay)
        spread = base * self.jitter * (2 * rng.random() - 1)
        return min(max(base + spread, 0.0), self.max_delay)

    def delays(
        self, *, seed: int | None = None, rng: random.Random | None = None
    ) -> Iterator[float]:
        """Yield the delay before each retry, ``max_attempts`` of them (or forever).

        Args:
            seed: Seed for a private random generator, for reproducible delays.
            rng: A generator to draw jitter from; wins over ``seed``.
        """
        # Jitter only spreads reconnect storms; it protects nothing, so a non-crypto
        # generator is the right tool.
        source = rng if rng is not None else random.Random(seed)  # noqa: S311
        attempt = 0
        while self.max_attempts is None or attempt < self.max_attempts:
            yield self.delay(attempt, source)
            attempt += 1
