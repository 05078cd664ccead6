"""Queue lifetime and delay warnings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ironpost.scheduler import Lifetime, SchedulerConfig

DAY = 86400.0
T0 = 1_000_000.0


def test_expiry_uses_bounce_lifetime_for_null_sender() -> None:
    life = Lifetime(SchedulerConfig(maximal_queue_lifetime=5 * DAY, bounce_queue_lifetime=DAY))
    assert life.expires_at(T0, null_sender=False) == T0 + 5 * DAY
    assert life.expires_at(T0, null_sender=True) == T0 + DAY
    assert not life.expired(T0, T0 + DAY - 1, null_sender=True)
    assert life.expired(T0, T0 + DAY, null_sender=True)
    assert not life.expired(T0, T0 + DAY, null_sender=False)


def test_retry_moves_last_attempt_to_expiry_then_bounces() -> None:
    life = Lifetime(SchedulerConfig())
    end = T0 + 5 * DAY
    assert life.retry_at(T0, T0 + 100, False, T0 + 400) == T0 + 400
    # The backoff would overshoot the end: the final attempt happens at the end.
    assert life.retry_at(T0, end - 1000, False, end + 3000) == end
    # Deferred at (or after) the end: bounce now.
    assert life.retry_at(T0, end, False, end + 300) is None
    assert life.retry_at(T0, end + 5, False, end + 305) is None


def test_zero_lifetime_means_one_attempt() -> None:
    life = Lifetime(SchedulerConfig(maximal_queue_lifetime=0))
    assert life.retry_at(T0, T0, False, T0 + 300) is None


def test_delay_warning_once_and_never_for_bounces() -> None:
    life = Lifetime(SchedulerConfig(delay_warning_time=4 * 3600))
    at = T0 + 4 * 3600
    assert life.delay_warning_at(T0, null_sender=False, warned=False) == at
    assert not life.delay_warning_due(T0, at - 1, False, False)
    assert life.delay_warning_due(T0, at, False, False)
    assert life.delay_warning_due(T0, at + DAY, False, False)  # late is still due
    assert not life.delay_warning_due(T0, at + 1, False, warned=True)
    assert not life.delay_warning_due(T0, at + 1, True, False)  # null sender
    assert life.delay_warning_at(T0, True, False) is None


def test_delay_warning_zero_disables() -> None:
    life = Lifetime(SchedulerConfig(delay_warning_time=0))
    assert life.delay_warning_at(T0, False, False) is None
    assert not life.delay_warning_due(T0, T0 + 10 * DAY, False, False)


def test_no_delay_warning_at_or_after_expiry() -> None:
    life = Lifetime(SchedulerConfig(delay_warning_time=5 * DAY, maximal_queue_lifetime=5 * DAY))
    assert life.delay_warning_at(T0, False, False) is None
    short = Lifetime(SchedulerConfig(delay_warning_time=3600, maximal_queue_lifetime=DAY))
    assert not short.delay_warning_due(T0, T0 + DAY, False, False)  # bounce instead


@given(
    age=st.integers(0, 30 * 86400),
    lifetime=st.integers(0, 10 * 86400),  # main.cf times are whole seconds
    proposed_delay=st.floats(1, 10_000),
)
def test_retry_never_after_expiry(age: int, lifetime: int, proposed_delay: float) -> None:
    life = Lifetime(SchedulerConfig(maximal_queue_lifetime=lifetime))
    now = T0 + age
    r = life.retry_at(T0, now, False, now + proposed_delay)
    if age >= lifetime:
        assert r is None
    else:
        assert r is not None and now < r <= T0 + lifetime
