"""ResultCache: expiry by an injected clock, remaining TTL, LRU bound."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.dns import Result, Status
from ironpost.dns.cache import ResultCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


ANSWER = Result(Status.ANSWER, ("192.0.2.1",), 300)


def test_served_until_expiry_then_gone() -> None:
    clock = Clock()
    cache = ResultCache(clock)
    cache.put("k", ANSWER, 300)
    assert cache.get("k") is ANSWER  # unchanged TTL: the very same object, no copy
    clock.now = 299.9
    assert cache.get("k") == Result(Status.ANSWER, ("192.0.2.1",), 1)
    clock.now = 300
    assert cache.get("k") is None
    assert len(cache) == 0


def test_remaining_ttl_counts_down() -> None:
    clock = Clock()
    cache = ResultCache(clock)
    cache.put("k", ANSWER, 300)
    clock.now = 100.5
    hit = cache.get("k")
    assert hit is not None and hit.ttl == 200 and hit.records == ANSWER.records


@pytest.mark.parametrize("ttl", [0, -1])
def test_non_positive_ttl_is_not_stored(ttl: float) -> None:
    cache = ResultCache(Clock())
    cache.put("k", ANSWER, ttl)
    assert cache.get("k") is None and len(cache) == 0


def test_least_recently_used_is_evicted() -> None:
    cache = ResultCache(Clock(), max_entries=2)
    cache.put("a", ANSWER, 60)
    cache.put("b", ANSWER, 60)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", ANSWER, 60)
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None


def test_put_replaces_and_refreshes() -> None:
    clock = Clock()
    cache = ResultCache(clock)
    cache.put("k", ANSWER, 10)
    nx = Result(Status.NXDOMAIN, (), 60)
    cache.put("k", nx, 60)
    clock.now = 30
    hit = cache.get("k")
    assert hit is not None and hit.status is Status.NXDOMAIN and len(cache) == 1


def test_size_zero_stores_nothing() -> None:
    cache = ResultCache(Clock(), max_entries=0)
    cache.put("k", ANSWER, 60)
    assert cache.get("k") is None


def test_negative_size_rejected() -> None:
    with pytest.raises(ValueError):
        ResultCache(Clock(), max_entries=-1)


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(-5, 100)), max_size=200),
       st.integers(1, 10))  # fmt: skip
def test_never_exceeds_bound(ops: list[tuple[int, int]], bound: int) -> None:
    clock = Clock()
    cache = ResultCache(clock, max_entries=bound)
    for key, ttl in ops:
        cache.put(key, ANSWER, ttl)
        clock.now += 1
        hit = cache.get(key)
        assert len(cache) <= bound
        assert hit is None or 1 <= hit.ttl <= ttl
