"""When to try a deferred recipient again: exponential backoff with jitter.

Owns :class:`Backoff`. The n-th consecutive deferral waits
``minimal_backoff_time * 2**(n-1)``, capped at ``maximal_backoff_time``, times a random
factor in ``[1 - jitter, 1 + jitter]``, and never less than ``minimal_backoff_time``.

Invariants (checked by property tests): every delay lies in
``[minimal_backoff_time, maximal_backoff_time * (1 + jitter)]``; without jitter the
delays never decrease with the attempt count. The jitter exists so that the retries of
many messages deferred together (a destination outage, a restart) do not all fire at
the same instant. Randomness comes from an injected :class:`random.Random`, so tests
are deterministic.
"""

from __future__ import annotations

import math
import random

from ironpost.scheduler.config import SchedulerConfig

# 2**64 * 1 s is beyond any sane maximal_backoff_time; avoids huge exponents.
_MAX_DOUBLINGS = 64


class Backoff:
    __slots__ = ("_hi", "_jitter", "_lo", "_rng", "_spread")

    def __init__(self, config: SchedulerConfig, rng: random.Random | None = None) -> None:
        self._lo = config.minimal_backoff_time
        self._hi = config.maximal_backoff_time
        self._jitter = config.backoff_jitter
        self._spread = config.startup_spread
        self._rng = rng if rng is not None else random.Random()

    def base_delay(self, attempts: int) -> float:
        """The delay after ``attempts`` failed attempts, before jitter."""
        doublings = min(max(attempts, 1) - 1, _MAX_DOUBLINGS)
        return min(math.ldexp(self._lo, doublings), self._hi)

    def delay(self, attempts: int) -> float:
        """The jittered delay after ``attempts`` failed attempts (1 for the first)."""
        base = self.base_delay(attempts)
        if self._jitter:
            base *= 1.0 + self._rng.uniform(-self._jitter, self._jitter)
        return max(base, self._lo)

    def next_attempt(self, now: float, attempts: int) -> float:
        """Absolute time of the next attempt after ``attempts`` failed attempts."""
        return now + self.delay(attempts)

    def startup_time(self, now: float, scheduled: float) -> float:
        """When a message found in the queue at startup is tried.

        One already due gets a random time in ``[now, now + startup_spread]`` so that a
        restart after an outage does not try the whole deferred queue in one burst; one
        not yet due keeps its time.
        """
        if scheduled > now:
            return scheduled
        return now + self._rng.uniform(0.0, self._spread) if self._spread > 0 else now
