"""Queue ids: unique, sortable by arrival, Postfix-looking.

An id is 16 uppercase alphanumerics (``[0-9A-Z]``, so pflogsumm's ``[0-9A-Za-z]+`` and
mailq parsers accept it), made of three fixed-width base-36 fields::

    TTTTTTTTTT  S  PPPPP
    microseconds since the epoch (10 digits: good until 2084)
                sequence within one microsecond (1 digit)
                   process id (5 digits: covers Linux's largest pid_max, 2**22)

Invariants: ASCII order of the digits equals numeric order, so lexicographic order of
ids is arrival order; within one process ids strictly increase even when the clock steps
back (we keep counting from the last stamp); two live processes never share a pid, so
they never share an id. After ``fork()`` the child takes its own pid.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
STAMP_WIDTH = 10
SEQ_WIDTH = 1
PID_WIDTH = 5
ID_LENGTH = STAMP_WIDTH + SEQ_WIDTH + PID_WIDTH
_SEQ_LIMIT = 36**SEQ_WIDTH


def encode36(value: int, width: int) -> str:
    """``value`` in base 36, zero-padded to exactly ``width`` digits."""
    if value < 0 or value >= 36**width:
        raise ValueError(f"{value} does not fit in {width} base-36 digits")
    digits = ["0"] * width
    for i in range(width - 1, -1, -1):
        value, r = divmod(value, 36)
        digits[i] = ALPHABET[r]
    return "".join(digits)


def decode36(text: str) -> int:
    return int(text, 36)


class QueueIdGenerator:
    """Thread-safe id source; one per process is enough (see :func:`new_queue_id`)."""

    def __init__(self, clock: Callable[[], int] = time.time_ns, pid: int | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._fixed_pid = pid
        self._reset()

    def _reset(self) -> None:
        pid = os.getpid() if self._fixed_pid is None else self._fixed_pid
        self._suffix = encode36(pid % 36**PID_WIDTH, PID_WIDTH)
        self._last = -1
        self._seq = 0

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def __call__(self) -> str:
        now = self._clock() // 1000
        with self._lock:
            if now > self._last:
                self._last, self._seq = now, 0
            else:
                # Same microsecond, or the clock stepped back: keep counting forward.
                self._seq += 1
                if self._seq == _SEQ_LIMIT:
                    self._last, self._seq = self._last + 1, 0
            stamp, seq = self._last, self._seq
        return encode36(stamp, STAMP_WIDTH) + ALPHABET[seq] + self._suffix


def arrival_of(queue_id: str) -> float:
    """The epoch time embedded in an id (seconds)."""
    return decode36(queue_id[:STAMP_WIDTH]) / 1e6


_default = QueueIdGenerator()
os.register_at_fork(after_in_child=_default.after_fork)


def new_queue_id() -> str:
    return _default()


def is_queue_id(text: str) -> bool:
    return len(text) == ID_LENGTH and all(c in ALPHABET for c in text)
