"""Backoff: doubling from minimal_backoff_time, capped, jittered, never below minimal."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.scheduler import Backoff, SchedulerConfig


def _backoff(seed: int = 1, **kw: Any) -> Backoff:
    return Backoff(SchedulerConfig(**kw), random.Random(seed))


def test_base_delay_doubles_then_caps() -> None:
    b = _backoff()
    assert [b.base_delay(n) for n in range(1, 7)] == [300, 600, 1200, 2400, 4000, 4000]
    assert b.base_delay(0) == 300  # "no attempt yet" is treated as the first
    assert b.base_delay(10**9) == 4000  # no overflow on absurd counts


def test_no_jitter_is_exact() -> None:
    b = _backoff(backoff_jitter=0.0)
    assert b.next_attempt(1000.0, 1) == 1300.0
    assert b.next_attempt(1000.0, 3) == 2200.0


def test_jitter_varies_delays_and_is_deterministic_per_seed() -> None:
    a, b, c = _backoff(seed=7), _backoff(seed=7), _backoff(seed=8)
    assert [a.delay(n) for n in range(1, 9)] == [b.delay(n) for n in range(1, 9)]
    delays = {c.delay(6) for _ in range(50)}
    assert len(delays) > 40  # spread out, not one value
    assert min(delays) >= 3600 and max(delays) <= 4400


def test_never_below_minimal_even_with_downward_jitter() -> None:
    b = _backoff(backoff_jitter=0.5)
    assert min(b.delay(1) for _ in range(500)) >= 300


def test_maximal_below_minimal_is_raised_to_minimal() -> None:
    cfg = SchedulerConfig(minimal_backoff_time=600, maximal_backoff_time=100, backoff_jitter=0)
    assert cfg.maximal_backoff_time == 600
    assert Backoff(cfg, random.Random(0)).delay(5) == 600


def test_bad_jitter_rejected() -> None:
    with pytest.raises(ValueError):
        SchedulerConfig(backoff_jitter=1.0)


@given(
    lo=st.integers(1, 10_000),
    extra=st.integers(0, 100_000),
    jitter=st.floats(0, 0.5),
    attempts=st.integers(-5, 200),
    seed=st.integers(0, 2**32),
)
def test_delay_always_within_bounds(
    lo: int, extra: int, jitter: float, attempts: int, seed: int
) -> None:
    cfg = SchedulerConfig(
        minimal_backoff_time=lo, maximal_backoff_time=lo + extra, backoff_jitter=jitter
    )
    d = Backoff(cfg, random.Random(seed)).delay(attempts)
    assert lo <= d <= (lo + extra) * (1 + jitter) + 1e-6


@given(lo=st.integers(1, 5000), extra=st.integers(0, 50_000), n=st.integers(1, 100))
def test_base_delay_is_monotonic(lo: int, extra: int, n: int) -> None:
    b = Backoff(SchedulerConfig(minimal_backoff_time=lo, maximal_backoff_time=lo + extra))
    assert b.base_delay(n) <= b.base_delay(n + 1) <= lo + extra


def test_startup_spread_only_moves_due_messages() -> None:
    b = _backoff(startup_spread=60.0)
    now = 10_000.0
    assert b.startup_time(now, now + 500) == now + 500
    due = [b.startup_time(now, now - k) for k in range(200)]
    assert all(now <= t <= now + 60 for t in due)
    assert len({round(t) for t in due}) > 30  # not a burst at one instant


def test_startup_spread_zero_means_now() -> None:
    assert _backoff(startup_spread=0.0).startup_time(50.0, 10.0) == 50.0
