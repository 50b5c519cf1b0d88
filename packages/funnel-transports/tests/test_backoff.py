"""Backoff: growth, ceiling, jitter bounds, attempt limits, determinism."""

from __future__ import annotations

import itertools
import random

import pytest

from funnel_transports import Backoff


def test_without_jitter_delays_grow_geometrically_up_to_the_ceiling() -> None:
    policy = Backoff(initial=1, multiplier=2, max_delay=10, jitter=0, max_attempts=6)
    assert list(policy.delays()) == [1, 2, 4, 8, 10, 10]


def test_jitter_keeps_each_delay_within_its_band_and_under_the_ceiling() -> None:
    policy = Backoff(initial=1, multiplier=3, max_delay=20, jitter=0.5, max_attempts=None)
    rng = random.Random(1)
    for attempt, delay in enumerate(itertools.islice(policy.delays(rng=rng), 50)):
        base = min(3**attempt, 20)
        assert base * 0.5 <= delay <= min(base * 1.5, 20)


def test_the_same_seed_gives_the_same_delays_and_another_seed_differs() -> None:
    policy = Backoff(jitter=0.25)
    assert list(policy.delays(seed=42)) == list(policy.delays(seed=42))
    assert list(policy.delays(seed=42)) != list(policy.delays(seed=43))


def test_max_attempts_bounds_the_number_of_delays() -> None:
    assert len(list(Backoff(max_attempts=3).delays(seed=0))) == 3
    assert list(Backoff(max_attempts=0).delays(seed=0)) == []


def test_unbounded_policies_keep_yielding_and_never_overflow() -> None:
    policy = Backoff(initial=1, multiplier=10, max_delay=5, jitter=0, max_attempts=None)
    delays = list(itertools.islice(policy.delays(), 5000))
    assert delays[-1] == 5
    assert policy.delay(10**9, random.Random(0)) == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial": -1}, "initial"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"initial": 10, "max_delay": 1}, "max_delay"),
        ({"jitter": 1.5}, "jitter"),
        ({"max_attempts": -1}, "max_attempts"),
    ],
)
def test_invalid_policies_are_rejected_naming_the_field(
    kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)  # type: ignore[arg-type]
