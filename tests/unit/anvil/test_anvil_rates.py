"""RateTable: the slotted sliding window, its guarantee, its liveness, its memory bound."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ironpost.anvil import DEFAULT_SLOTS, RateTable, slot_width
from ironpost.testing.clock import FakeClock

T = 60.0
W = T / DEFAULT_SLOTS  # 10 s: the FakeClock's epoch start is slot-aligned


def test_slot_width_covers_the_time_unit_exactly() -> None:
    for unit in (1.0, 7.0, 60.0, 0.3, 3600.0, 1e-3, 86400.0 * 7):
        for slots in (1, 3, 6, 7, 10):
            w = slot_width(unit, slots)
            assert Fraction(w) * slots >= Fraction(unit)
            assert w <= unit / slots * (1 + 1e-12)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            slot_width(bad, 6)
    with pytest.raises(ValueError):
        slot_width(60.0, 0)
    with pytest.raises(ValueError):
        RateTable(60.0, max_keys=0)


def test_limit_is_hit_exactly_at_n_plus_one() -> None:
    clock = FakeClock()
    table = RateTable(T)
    counts = [table.admit("1.2.3.4", clock(), 5) for _ in range(5)]
    assert counts == [1, 2, 3, 4, 5]
    assert table.admit("1.2.3.4", clock(), 5) is None
    assert table.count("1.2.3.4", clock()) == 5
    assert table.admit("5.6.7.8", clock(), 5) == 1  # keys are independent


def test_refused_events_do_not_count_so_a_client_that_backs_off_recovers() -> None:
    clock = FakeClock()
    table = RateTable(T)
    for _ in range(3):
        assert table.admit("c", clock(), 3) is not None
    # Hammering through the whole unit is refused and not counted...
    for _ in range(59):
        clock.advance(1)
        assert table.admit("c", clock(), 3) is None
    assert table.count("c", clock()) == 3
    # ...so the full limit is back one unit (plus at most one slot) after the burst.
    clock.advance(T + W - 59)
    assert table.count("c", clock()) == 0
    assert [table.admit("c", clock(), 3) for _ in range(4)] == [1, 2, 3, None]


def test_events_stay_counted_for_the_whole_time_unit() -> None:
    clock = FakeClock()
    start = clock.now  # a slot boundary
    table = RateTable(T)
    clock.advance(3.0)  # mid-slot
    assert table.admit("c", clock(), 1) == 1
    clock.advance(T - 0.001)
    assert table.admit("c", clock(), 1) is None  # still inside (t - T, t]
    # Conservative by less than one slot: the event counts until its slot leaves the ring.
    clock.set(start + T + W - 0.001)
    assert table.admit("c", clock(), 1) is None
    clock.advance(0.002)
    assert table.admit("c", clock(), 1) == 1


def test_a_burst_across_a_window_edge_is_refused_unlike_postfix_fixed_window() -> None:
    # Postfix's fixed window (from the first event) would let 2*limit through here:
    # `limit` events at the end of its window and `limit` more right after it resets.
    clock = FakeClock()
    table = RateTable(T)
    assert table.admit("c", clock(), 10) == 1  # the window's first event
    clock.advance(T - 1)
    for _ in range(9):
        assert table.admit("c", clock(), 10) is not None
    clock.advance(2)  # a fixed window that began at the first event has reset by now
    assert table.admit("c", clock(), 10) is None


def test_batches_are_all_or_nothing() -> None:
    clock = FakeClock()
    table = RateTable(T)
    assert table.admit("u", clock(), 10, 7) == 7
    assert table.admit("u", clock(), 10, 4) is None
    assert table.count("u", clock()) == 7
    assert table.admit("u", clock(), 10, 3) == 10
    assert table.admit("fresh", clock(), 10, 11) is None
    assert "fresh" not in table


def test_add_counts_unconditionally_and_forget_drops() -> None:
    clock = FakeClock()
    table = RateTable(T)
    assert [table.add("k", clock()) for _ in range(3)] == [1, 2, 3]
    clock.advance(T / 2)
    assert table.add("k", clock(), 2) == 5
    clock.advance(T / 2 + W)
    assert table.count("k", clock()) == 2  # the first three left the window
    table.forget("k")
    table.forget("never-seen")
    assert table.count("k", clock()) == 0
    assert "k" not in table


def test_a_clock_that_goes_back_counts_in_the_newest_slot() -> None:
    table = RateTable(T)
    assert table.admit("c", 1000.0, 2) == 1
    assert table.admit("c", 900.0, 2) == 2
    assert table.admit("c", 1000.0, 2) is None
    assert table.admit("c", 1000.0 + T + W, 2) == 1


def test_idle_keys_expire_lazily_and_by_sweep() -> None:
    clock = FakeClock()
    table = RateTable(T)
    for i in range(1000):
        table.admit(f"10.0.{i // 256}.{i % 256}", clock(), 5)
    assert len(table) == 1000
    clock.advance(T + W)
    # Each call drops a few idle keys: traffic alone shrinks the table.
    for i in range(300):
        table.admit(f"new{i}", clock(), 5)
    assert len(table) == 1000 + 300 - 2 * 300
    clock.advance(T + W)
    assert table.sweep(clock()) == 700
    assert len(table) == 0


def test_sweep_keeps_live_keys_and_stops_at_the_first() -> None:
    clock = FakeClock()
    table = RateTable(T)
    table.add("old", clock())
    clock.advance(T / 2)
    table.add("young", clock())
    table.count("old", clock())  # moves its slot on without a new event
    clock.advance(T / 2 + W)
    assert table.sweep(clock()) == 1
    assert "young" in table and "old" not in table


def test_size_is_capped_and_the_least_recently_used_key_goes() -> None:
    clock = FakeClock()
    table = RateTable(T, max_keys=100)
    table.add("busy", clock())
    for i in range(1000):
        table.add(f"k{i}", clock())
        if i % 50 == 0:
            table.add("busy", clock())  # recently used: survives the flood
    assert len(table) == 100
    assert table.evicted == 1001 - 100
    assert "busy" in table and "k999" in table and "k0" not in table


def test_memory_stays_bounded_under_a_flood_of_distinct_keys() -> None:
    clock = FakeClock()
    table = RateTable(T, max_keys=5000)
    peak = 0
    for i in range(100_000):
        table.admit(f"{i}", clock(), 10)
        if i % 100 == 0:
            clock.advance(1)  # 100 new keys a second: 7,000 live in T + W
        peak = max(peak, len(table))
    assert peak == 5000
    clock.advance(T + W)
    table.sweep(clock())
    assert len(table) == 0


# --- properties ----------------------------------------------------------------------

_gaps = st.lists(
    st.one_of(
        st.just(0.0),
        st.floats(min_value=0.0, max_value=5.0, allow_nan=False),
        st.floats(min_value=0.0, max_value=200.0, allow_nan=False),
    ),
    min_size=1,
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(
    gaps=_gaps,
    limit=st.integers(min_value=1, max_value=12),
    unit=st.one_of(st.sampled_from([1.0, 7.0, 60.0]), st.floats(min_value=0.01, max_value=120)),
    slots=st.integers(min_value=1, max_value=10),
    start=st.one_of(st.just(0.0), st.floats(min_value=0, max_value=2e9, allow_nan=False)),
    batch=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=5),
)
def test_never_more_than_limit_events_in_any_window_of_one_time_unit(
    gaps: list[float],
    limit: int,
    unit: float,
    slots: int,
    start: float,
    batch: list[int],
) -> None:
    """The guarantee, checked in exact arithmetic: for every admitted event at time t,
    the admitted events in (t - T, t] number at most the limit (which is the same as "at
    most limit in any window [x, x + T)": take t as the window's last event)."""
    table = RateTable(unit, slots=slots)
    now = start
    admitted: list[tuple[Fraction, int]] = []
    for i, gap in enumerate(gaps):
        now += gap
        n = batch[i % len(batch)]
        if table.admit("k", now, limit, n) is not None:
            admitted.append((Fraction(now), n))
    span = Fraction(unit)
    for t, _ in admitted:
        inside = sum(n for e, n in admitted if t - span < e <= t)
        assert inside <= limit


@settings(max_examples=200, deadline=None)
@given(
    gaps=_gaps,
    limit=st.integers(min_value=1, max_value=12),
    unit=st.floats(min_value=0.01, max_value=120),
    slots=st.integers(min_value=1, max_value=10),
)
def test_the_whole_limit_is_back_after_one_unit_and_one_slot(
    gaps: list[float], limit: int, unit: float, slots: int
) -> None:
    table = RateTable(unit, slots=slots)
    now = 1000.0
    for gap in gaps:
        now += gap
        table.admit("k", now, limit)
    now += unit + slot_width(unit, slots) * 1.000001
    assert table.count("k", now) == 0
    assert table.admit("k", now, limit, limit) == limit
