"""Per-destination concurrency: slow start, shrinking, dead destinations, process cap."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ironpost.delivery.transport import Disposition, NextHop, RecipientResult
from ironpost.scheduler import (
    DestinationLimiter,
    Feedback,
    FeedbackRule,
    SchedulerConfig,
    TransportOverride,
    feedback_of,
)
from ironpost.testing.clock import FakeClock

MX = NextHop("smtp", "example.com")
OTHER = NextHop("smtp", "example.org")


def _limiter(clock: FakeClock | None = None, **kw: Any) -> tuple[DestinationLimiter, FakeClock]:
    clock = clock or FakeClock()
    return DestinationLimiter(SchedulerConfig(**kw), clock), clock


def _fill(lim: DestinationLimiter, dest: NextHop) -> int:
    n = 0
    while lim.acquire(dest):
        n += 1
    return n


def _round(lim: DestinationLimiter, dest: NextHop, feedback: Feedback) -> int:
    """Fill the window, then complete every delivery with ``feedback``."""
    n = _fill(lim, dest)
    for _ in range(n):
        lim.release(dest, feedback, "connect to mx.example.com[192.0.2.1]:25: refused")
    return n


def test_starts_at_initial_concurrency() -> None:
    lim, _ = _limiter()
    assert lim.window(MX) == 5
    assert _fill(lim, MX) == 5
    assert lim.in_flight(MX) == 5
    assert lim.acquire(OTHER)  # another destination has its own window


def test_slow_start_one_per_window_of_successes_up_to_limit() -> None:
    lim, _ = _limiter(default_destination_concurrency_limit=8)
    windows = []
    for _ in range(6):
        _round(lim, MX, Feedback.SUCCESS)
        windows.append(lim.window(MX))
    assert windows == [6, 7, 8, 8, 8, 8]


def test_per_success_feedback_grows_faster() -> None:
    lim, _ = _limiter(default_destination_concurrency_positive_feedback=FeedbackRule(1, False))
    for _ in range(2):
        assert lim.acquire(MX)
        lim.release(MX, Feedback.SUCCESS)
    assert lim.window(MX) == 7


def test_failures_shrink_window_then_kill_destination() -> None:
    lim, clock = _limiter(default_destination_concurrency_failed_cohort_limit=3)
    _round(lim, MX, Feedback.SUCCESS)
    assert lim.window(MX) == 6
    _round(lim, MX, Feedback.FAILURE)  # one window-full of failures: -1
    assert lim.window(MX) == 5
    _round(lim, MX, Feedback.FAILURE)
    assert lim.window(MX) == 4
    assert not lim.is_dead(MX)
    _round(lim, MX, Feedback.FAILURE)  # third failed cohort
    assert lim.is_dead(MX)
    assert lim.window(MX) == 0
    assert lim.dead_until(MX) == clock() + 60  # transport_retry_time


def test_success_resets_failure_count() -> None:
    lim, _ = _limiter()
    for _ in range(20):
        for fb in (Feedback.FAILURE, Feedback.FAILURE, Feedback.SUCCESS):
            assert lim.acquire(MX)
            lim.release(MX, fb)
    assert not lim.is_dead(MX)


def test_neutral_neither_grows_nor_fails() -> None:
    lim, _ = _limiter()
    for _ in range(10):
        _round(lim, MX, Feedback.NEUTRAL)
    assert lim.window(MX) == 5
    assert not lim.is_dead(MX)


def test_dead_destination_comes_back_after_its_time_with_one_probe() -> None:
    lim, clock = _limiter()
    _round(lim, MX, Feedback.FAILURE)  # 5 failures = one cohort: dead (limit 1)
    assert lim.is_dead(MX)
    assert lim.dead_reason(MX) == "connect to mx.example.com[192.0.2.1]:25: refused"
    assert not lim.acquire(MX)
    assert lim.acquire(OTHER)  # a dead destination does not block others
    clock.advance(59)
    assert not lim.acquire(MX)
    clock.advance(1)
    assert not lim.is_dead(MX)
    assert lim.dead_reason(MX) is None
    assert lim.window(MX) == 1
    assert lim.acquire(MX)  # the probe
    assert not lim.acquire(MX)  # only one
    lim.release(MX, Feedback.SUCCESS)
    assert lim.window(MX) == 5  # back at the initial window
    assert _fill(lim, MX) == 5


def test_failed_probe_doubles_dead_time_up_to_minimal_backoff() -> None:
    lim, clock = _limiter()
    _round(lim, MX, Feedback.FAILURE)
    spans = []
    for _ in range(5):
        until = lim.dead_until(MX)
        assert until is not None
        spans.append(until - clock())
        clock.set(until)
        assert lim.acquire(MX)
        lim.release(MX, Feedback.FAILURE, "timeout")
    assert spans == [60, 120, 240, 300, 300]
    # A success clears the history: the next death starts at transport_retry_time again.
    clock.set(lim.dead_until(MX) or 0)
    assert lim.acquire(MX)
    lim.release(MX, Feedback.SUCCESS)
    _round(lim, MX, Feedback.FAILURE)
    assert lim.dead_until(MX) == clock() + 60


def test_neutral_probe_revives() -> None:
    lim, clock = _limiter()
    _round(lim, MX, Feedback.FAILURE)
    clock.advance(60)
    assert lim.acquire(MX)
    lim.release(MX, Feedback.NEUTRAL)
    assert lim.window(MX) == 5


def _die_with_straggler() -> tuple[DestinationLimiter, FakeClock, float]:
    # Feedback "1" shrinks the window on each failure, so the cohort count reaches 1
    # after four failures while the fifth delivery is still in flight.
    lim, clock = _limiter(default_destination_concurrency_negative_feedback=FeedbackRule(1, False))
    assert _fill(lim, MX) == 5
    for _ in range(4):
        lim.release(MX, Feedback.FAILURE, "timeout")
    until = lim.dead_until(MX)
    assert until == clock() + 60
    assert lim.in_flight(MX) == 1
    clock.advance(30)
    return lim, clock, until


def test_straggler_failure_does_not_extend_death() -> None:
    lim, _, until = _die_with_straggler()
    lim.release(MX, Feedback.FAILURE, "later")
    assert lim.dead_until(MX) == until
    assert lim.dead_reason(MX) == "timeout"


def test_straggler_success_revives() -> None:
    lim, _, _ = _die_with_straggler()
    lim.release(MX, Feedback.SUCCESS)
    assert not lim.is_dead(MX)
    assert lim.window(MX) == 5


def test_cohort_limit_zero_never_dies() -> None:
    lim, _ = _limiter(default_destination_concurrency_failed_cohort_limit=0)
    for _ in range(50):
        _round(lim, MX, Feedback.FAILURE)
    assert not lim.is_dead(MX)
    assert lim.window(MX) == 1


def test_process_limit_is_global() -> None:
    lim, _ = _limiter(default_process_limit=7)
    assert _fill(lim, MX) == 5
    assert _fill(lim, OTHER) == 2
    assert lim.total_in_flight == 7
    assert not lim.acquire(NextHop("lmtp", "unix:/run/lmtp"))
    lim.release(MX, Feedback.SUCCESS)
    assert lim.acquire(OTHER)


def test_release_without_acquire_is_an_error() -> None:
    lim, _ = _limiter()
    with pytest.raises(ValueError):
        lim.release(MX, Feedback.SUCCESS)
    assert lim.acquire(MX)
    lim.release(MX, Feedback.SUCCESS)
    with pytest.raises(ValueError):
        lim.release(MX, Feedback.SUCCESS)
    assert lim.total_in_flight == 0


def test_per_transport_limits() -> None:
    cfg = SchedulerConfig(
        transport_overrides={
            "lmtp": TransportOverride(concurrency_limit=2, recipient_limit=1),
            "relay": TransportOverride(concurrency_limit=0, recipient_limit=0),
        }
    )
    lim = DestinationLimiter(cfg, FakeClock())
    lmtp = NextHop("lmtp", "unix:/run/dovecot/lmtp")
    assert lim.window(lmtp) == 2  # initial capped at the limit
    assert _fill(lim, lmtp) == 2
    assert lim.recipient_limit("lmtp") == 1
    assert lim.recipient_limit("smtp") == 50
    assert lim.recipient_limit("relay") is None
    assert lim.concurrency_limit("relay") is None
    assert lim.concurrency_limit("smtp") == 20


def test_idle_destinations_are_forgotten() -> None:
    lim, clock = _limiter(destination_idle_time=300)
    _round(lim, MX, Feedback.SUCCESS)
    assert lim.window(MX) == 6
    assert lim.acquire(OTHER)  # busy: kept however long it takes
    clock.advance(301)
    assert lim.forget_idle() == 1
    assert len(lim) == 1
    assert lim.window(MX) == 5  # slow start begins again
    assert lim.in_flight(OTHER) == 1


def test_dead_destinations_are_kept_until_they_expire() -> None:
    lim, clock = _limiter(destination_idle_time=10, transport_retry_time=100)
    _round(lim, MX, Feedback.FAILURE)
    clock.advance(50)
    assert lim.forget_idle() == 0
    assert lim.is_dead(MX)
    clock.advance(60)
    assert lim.forget_idle() == 1


def test_memory_is_bounded() -> None:
    lim, clock = _limiter(max_destinations=100)
    for i in range(1000):
        d = NextHop("smtp", f"d{i}.example")
        assert lim.acquire(d)
        lim.release(d, Feedback.SUCCESS)
        clock.advance(0.001)
    assert len(lim) <= 100


def test_feedback_of_results() -> None:
    def r(disp: Disposition, failed: bool = False) -> RecipientResult:
        return RecipientResult(0, disp, "4.4.1", "x", "none", destination_failed=failed)

    assert feedback_of([r(Disposition.SENT), r(Disposition.DEFERRED)]) is Feedback.SUCCESS
    assert feedback_of([r(Disposition.BOUNCED), r(Disposition.DEFERRED)]) is Feedback.NEUTRAL
    assert feedback_of([r(Disposition.DEFERRED, failed=True)]) is Feedback.FAILURE
    assert feedback_of([]) is Feedback.NEUTRAL


OPS = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "release", "advance"]),
        st.integers(0, 3),
        st.sampled_from(list(Feedback)),
    ),
    max_size=300,
)


@settings(max_examples=150)
@given(ops=OPS, limit=st.integers(1, 12), procs=st.integers(1, 30))
def test_invariants_under_random_operations(
    ops: list[tuple[str, int, Feedback]], limit: int, procs: int
) -> None:
    lim, clock = _limiter(default_destination_concurrency_limit=limit, default_process_limit=procs)
    dests = [NextHop("smtp", f"d{i}.example") for i in range(4)]
    held = [0, 0, 0, 0]
    for op, i, fb in ops:
        d = dests[i]
        if op == "acquire":
            before = lim.in_flight(d)
            if lim.acquire(d):
                held[i] += 1
                assert before < max(lim.window(d), 1)
        elif op == "release" and held[i]:
            lim.release(d, fb)
            held[i] -= 1
        elif op == "advance":
            clock.advance(37.0 * (i + 1))
        assert lim.total_in_flight == sum(held) <= procs
        assert lim.window(d) <= limit
        assert [lim.in_flight(x) for x in dests] == held


def test_revive_all_forgets_dead_marks() -> None:
    from ironpost.delivery.transport import NextHop
    from ironpost.scheduler import DestinationLimiter, Feedback, SchedulerConfig

    now = [1000.0]
    limiter = DestinationLimiter(SchedulerConfig(initial_destination_concurrency=1), lambda: now[0])
    dest = NextHop("smtp", "down.example")
    assert limiter.acquire(dest)
    limiter.release(dest, Feedback.FAILURE, "connection refused")
    assert limiter.is_dead(dest)
    assert limiter.revive_all() == 1
    assert not limiter.is_dead(dest)
    assert limiter.acquire(dest)
    assert limiter.revive_all() == 0
