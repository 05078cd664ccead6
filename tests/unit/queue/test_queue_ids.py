"""Queue ids: format, order, uniqueness across threads, monotonic under clock steps."""

from __future__ import annotations

import re
import threading

from hypothesis import given
from hypothesis import strategies as st

from ironpost.queue.ids import (
    ID_LENGTH,
    QueueIdGenerator,
    arrival_of,
    decode36,
    encode36,
    is_queue_id,
    new_queue_id,
)

PFLOGSUMM_QID = re.compile(r"^[0-9A-Za-z]+$")


def test_format_is_postfix_like() -> None:
    qid = new_queue_id()
    assert len(qid) == ID_LENGTH == 16
    assert PFLOGSUMM_QID.match(qid)
    assert qid == qid.upper()
    assert is_queue_id(qid)


@given(st.integers(0, 36**10 - 1), st.integers(0, 36**10 - 1))
def test_encoding_preserves_order(a: int, b: int) -> None:
    ea, eb = encode36(a, 10), encode36(b, 10)
    assert decode36(ea) == a
    assert (ea < eb) == (a < b)


def test_clock_stepping_back_stays_monotonic() -> None:
    ticks = iter([5_000_000_000, 5_000_000_000, 4_000_000_000, 3_000_000_000, 6_000_000_000])
    gen = QueueIdGenerator(clock=lambda: next(ticks), pid=42)
    ids = [gen() for _ in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


def test_sequence_overflow_moves_the_stamp_forward() -> None:
    gen = QueueIdGenerator(clock=lambda: 1_000_000_000, pid=1)
    ids = [gen() for _ in range(100)]  # far more than 36 in one microsecond
    assert ids == sorted(ids)
    assert len(set(ids)) == 100


def test_processes_differ_by_pid() -> None:
    a = QueueIdGenerator(clock=lambda: 1_000_000_000, pid=100)()
    b = QueueIdGenerator(clock=lambda: 1_000_000_000, pid=101)()
    assert a != b and a[:11] == b[:11]


def test_arrival_is_embedded() -> None:
    gen = QueueIdGenerator(clock=lambda: 1_700_000_000_123_456_000, pid=1)
    assert arrival_of(gen()) == 1_700_000_000.123456


def test_unique_and_sorted_across_threads() -> None:
    per_thread: list[list[str]] = [[] for _ in range(8)]

    def work(out: list[str]) -> None:
        for _ in range(2000):
            out.append(new_queue_id())

    threads = [threading.Thread(target=work, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in per_thread for i in out]
    assert len(set(every)) == len(every)
    for out in per_thread:  # each thread sees a strictly increasing sequence
        assert out == sorted(out)
