"""A message's whole life under a fake clock: retries from arrival to bounce in 5 days."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.scheduler import Scheduler, SchedulerConfig
from ironpost.testing.clock import FakeClock

DAY = 86400.0


def _run(
    sched: Scheduler, clock: FakeClock, null_sender: bool = False
) -> tuple[list[float], list[float], float]:
    """Defer every attempt. Returns (attempt times, delay-warning times, bounce time)."""
    arrival = clock()
    attempts: list[float] = [clock()]  # the first attempt happens on arrival
    warnings: list[float] = []
    warned = False
    while True:
        if sched.delay_warning_due(arrival, null_sender, warned):
            warnings.append(clock())
            warned = True
        retry = sched.retry_at(arrival, len(attempts), null_sender)
        if retry is None:
            return attempts, warnings, clock()
        assert retry > clock()
        clock.set(retry)
        attempts.append(retry)


def test_five_day_schedule_from_arrival_to_bounce() -> None:
    clock = FakeClock()
    cfg = SchedulerConfig()
    sched = Scheduler(cfg, clock=clock, rng=random.Random(3))
    arrival = clock()
    times, warnings, bounced = _run(sched, clock)

    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g > 0 for g in gaps)  # strictly increasing attempt times
    j = cfg.backoff_jitter
    for n, gap in enumerate(gaps[:-1], start=1):  # the last gap is cut at the expiry
        base = min(300 * 2 ** (n - 1), 4000)
        assert max(300, base * (1 - j)) <= gap <= base * (1 + j), (n, gap)
    assert max(gaps) <= 4000 * (1 + j)
    assert gaps[-1] <= 4000 * (1 + j)
    # Ends in expiry: the final attempt is at arrival + 5 d and its deferral bounces.
    assert times[-1] == arrival + 5 * DAY
    assert bounced == arrival + 5 * DAY
    assert 100 <= len(times) <= 130  # ~5 d / ~4000 s
    # One delay warning, at the first attempt after 4 h.
    assert len(warnings) == 1
    assert warnings[0] >= arrival + 4 * 3600
    assert warnings[0] - (arrival + 4 * 3600) <= 4000 * (1 + j)


def test_bounce_mail_uses_bounce_queue_lifetime_and_gets_no_warning() -> None:
    clock = FakeClock()
    sched = Scheduler(SchedulerConfig(bounce_queue_lifetime=DAY), clock=clock, rng=random.Random(1))
    arrival = clock()
    _, warnings, bounced = _run(sched, clock, null_sender=True)
    assert bounced == arrival + DAY
    assert warnings == []


def test_startup_spread_through_the_facade() -> None:
    clock = FakeClock()
    sched = Scheduler(SchedulerConfig(startup_spread=30), clock=clock, rng=random.Random(1))
    t = sched.startup_time(clock() - 100)
    assert clock() <= t <= clock() + 30
    assert sched.startup_time(clock() + 500) == clock() + 500


@given(seed=st.integers(0, 2**32), lifetime=st.integers(0, 2 * 86400))
def test_schedule_properties(seed: int, lifetime: int) -> None:
    clock = FakeClock()
    cfg = SchedulerConfig(maximal_queue_lifetime=lifetime, backoff_jitter=0.2)
    sched = Scheduler(cfg, clock=clock, rng=random.Random(seed))
    arrival = clock()
    times, _, bounced = _run(sched, clock)
    assert bounced == max(arrival + lifetime, arrival)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0 < g <= 4000 * 1.2 for g in gaps)
    assert all(g >= 300 for g in gaps[:-1])  # only the last one may be cut short


def test_fake_clock() -> None:
    clock = FakeClock(100.0)
    assert clock() == clock.now == 100.0
    assert clock.advance(5) == 105.0
    clock.set(200.0)
    asyncio.run(clock.sleep(10))
    assert clock() == 210.0
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(0)
