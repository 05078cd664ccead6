"""Per-destination concurrency: slow start, negative feedback, dead destinations.

Owns :class:`DestinationLimiter`, the queue manager's gate before every delivery. A
destination is a :class:`~ironpost.delivery.transport.NextHop` (transport, next hop).
The manager calls :meth:`DestinationLimiter.acquire` before handing a batch to a
transport and :meth:`DestinationLimiter.release` with a :class:`Feedback` afterwards.

The rules follow Postfix's qmgr (SCHEDULER_README, "concurrency scheduling"):

- a destination starts with a window of ``initial_destination_concurrency``
  deliveries in flight; each success adds ``positive_feedback`` (default
  ``1/concurrency``: +1 per window-full of successes) up to the transport's
  ``_destination_concurrency_limit``;
- each connection-level failure adds ``1/window`` to a failed-cohort count and
  ``negative_feedback`` to a failure count; when the latter reaches 1 the window
  shrinks by one (never below 1); when the cohort count reaches
  ``_destination_concurrency_failed_cohort_limit`` (default 1: about one window of
  consecutive failures) the destination is declared dead. Any success resets both;
- a dead destination takes no deliveries for ``transport_retry_time``, doubled on each
  consecutive death up to ``max(minimal_backoff_time, transport_retry_time)``; then
  exactly one probe delivery may go. Its success (or a neutral result: the host
  answered) brings the destination back at the initial window; its failure kills it
  again. (Postfix reopens at the initial window at once; a single probe spares a host
  that is still down.)
- recipient-level results (a 4xx/5xx to RCPT) are :attr:`Feedback.NEUTRAL`: they say
  nothing about the host's health, so they neither grow the window nor count as
  failures, but they do show the host is alive.

Invariants: ``in_flight(d) <= window(d)`` at each acquire; the total in flight never
exceeds ``default_process_limit``; state is kept only for destinations in use, dead, or
used within ``destination_idle_time``, and never for more than ``max_destinations``
idle ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from ironpost.delivery.transport import Disposition, NextHop, RecipientResult
from ironpost.scheduler.config import SchedulerConfig, TransportLimits

# Floating feedback sums (5 x 1/5) may land a hair below 1.
_EPS = 1e-9


class Feedback(StrEnum):
    SUCCESS = "success"  # the delivery reached the host and something was accepted
    FAILURE = "failure"  # connection-level: refused, timeout, 4xx greeting, lost session
    NEUTRAL = "neutral"  # the host answered, but only with recipient-level 4xx/5xx


def feedback_of(results: Iterable[RecipientResult]) -> Feedback:
    """The destination feedback of one delivery request's results.

    ``destination_failed`` on any result is a FAILURE; else any SENT is a SUCCESS; a
    request whose recipients were all deferred or bounced by the host is NEUTRAL.
    """
    sent = False
    for r in results:
        if r.destination_failed:
            return Feedback.FAILURE
        sent = sent or r.disposition is Disposition.SENT
    return Feedback.SUCCESS if sent else Feedback.NEUTRAL


@dataclass(slots=True)
class _State:
    window: int  # 0 while dead
    busy: int = 0
    success: float = 0.0  # positive feedback accumulated towards +1
    failure: float = 0.0  # negative feedback accumulated towards -1
    fail_cohorts: float = 0.0
    dead_until: float = 0.0  # > 0: dead (or probe allowed once the time has passed)
    deaths: int = 0  # consecutive deaths without a success in between
    probing: bool = False
    reason: str | None = None
    last_used: float = 0.0


class DestinationLimiter:
    """Concurrency gate per destination plus the global process cap. Not thread-safe:
    the queue manager calls it from one event loop."""

    def __init__(self, config: SchedulerConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._process_limit = config.default_process_limit
        self._idle = config.destination_idle_time
        self._max = config.max_destinations
        self._dead_min = config.transport_retry_time
        self._dead_max = max(config.minimal_backoff_time, config.transport_retry_time)
        # Insertion order is last-use order: every touch re-inserts at the end.
        self._states: dict[NextHop, _State] = {}
        self._limits: dict[str, TransportLimits] = {}
        self._total = 0
        self._next_sweep = 0.0

    # --- limits --------------------------------------------------------------------

    def limits(self, transport: str) -> TransportLimits:
        lim = self._limits.get(transport)
        if lim is None:
            lim = self._limits[transport] = self._config.limits(transport)
        return lim

    def recipient_limit(self, transport: str) -> int | None:
        """Most recipients per delivery request to ``transport``; None: no limit."""
        return self.limits(transport).recipient_limit or None

    def concurrency_limit(self, transport: str) -> int | None:
        """Most deliveries in flight per destination of ``transport``; None: no limit."""
        return self.limits(transport).concurrency_limit or None

    # --- the gate ------------------------------------------------------------------

    def acquire(self, dest: NextHop) -> bool:
        """Take a delivery slot for ``dest``; False when dead, at its window, or at
        the process limit (the caller leaves the batch queued and tries later)."""
        if self._total >= self._process_limit:
            return False
        now = self._clock()
        st = self._states.get(dest)
        if st is None:
            st = self._states[dest] = self._new(dest, now)
        if st.dead_until:
            if now < st.dead_until:
                return False
            # The dead time is over: let one probe through.
            st.dead_until = 0.0
            st.probing = True
            st.window = 1
        if st.busy >= st.window:
            return False
        st.busy += 1
        self._total += 1
        self._touch(dest, st, now)
        return True

    def release(self, dest: NextHop, feedback: Feedback, reason: str | None = None) -> None:
        """Return the slot taken by :meth:`acquire` with the delivery's feedback.

        ``reason`` (for a FAILURE) is kept as :meth:`dead_reason` if the destination
        dies, so that the manager can defer its other mail with the cause.
        """
        st = self._states.get(dest)
        if st is None or st.busy == 0:
            raise ValueError(f"release of {dest} without a matching acquire")
        now = self._clock()
        st.busy -= 1
        self._total -= 1
        self._touch(dest, st, now)
        lim = self.limits(dest.transport)
        if feedback is Feedback.FAILURE:
            self._negative(st, lim, now, reason)
        elif feedback is Feedback.SUCCESS:
            self._positive(st, lim)
        elif st.probing or st.dead_until:
            self._revive(st, lim)  # NEUTRAL: the host answered, so it is not dead
        else:
            st.fail_cohorts = 0.0
        if now >= self._next_sweep:
            self.forget_idle()

    def give_back(self, dest: NextHop) -> None:
        """Return a slot that was taken but not used for a delivery (its waiter was
        cancelled): no feedback. A probe slot given back stays the probe slot (``probing``
        is kept), so the next delivery is the probe."""
        st = self._states.get(dest)
        if st is None or st.busy == 0:
            raise ValueError(f"give_back of {dest} without a matching acquire")
        st.busy -= 1
        self._total -= 1

    def _touch(self, dest: NextHop, st: _State, now: float) -> None:
        # Re-insert at the end: dict order stays last-use order for forget_idle.
        st.last_used = now
        del self._states[dest]
        self._states[dest] = st

    def _positive(self, st: _State, lim: TransportLimits) -> None:
        if st.probing or st.dead_until:
            self._revive(st, lim)
            return
        limit = lim.concurrency_limit
        if not limit or st.window < limit:
            st.success += lim.positive_feedback.value(st.window)
            if st.success >= 1 - _EPS:
                st.window += math.floor(st.success + _EPS)
                st.success = 0.0
                if limit and st.window > limit:
                    st.window = limit
        st.failure = 0.0
        st.fail_cohorts = 0.0
        st.deaths = 0

    def _negative(self, st: _State, lim: TransportLimits, now: float, reason: str | None) -> None:
        if st.dead_until > now:
            return  # already dead: a straggler from before does not extend it
        if st.probing:
            self._die(st, now, reason)
            return
        st.fail_cohorts += 1.0 / max(st.window, 1)
        if lim.failed_cohort_limit and st.fail_cohorts >= lim.failed_cohort_limit - _EPS:
            self._die(st, now, reason)
            return
        st.failure += lim.negative_feedback.value(st.window)
        if st.failure >= 1 - _EPS:
            # Postfix restarts the positive hysteresis only on an actual decrease.
            st.window = max(1, st.window - math.floor(st.failure + _EPS))
            st.failure = 0.0
            st.success = 0.0

    def _die(self, st: _State, now: float, reason: str | None) -> None:
        st.deaths += 1
        span = min(math.ldexp(self._dead_min, min(st.deaths - 1, 32)), self._dead_max)
        st.dead_until = now + span
        st.window = 0
        st.probing = False
        st.reason = reason
        st.success = st.failure = st.fail_cohorts = 0.0

    @staticmethod
    def _revive(st: _State, lim: TransportLimits) -> None:
        st.dead_until = 0.0
        st.probing = False
        st.deaths = 0
        st.reason = None
        st.window = lim.initial_concurrency
        st.success = st.failure = st.fail_cohorts = 0.0

    def _new(self, dest: NextHop, now: float) -> _State:
        if now >= self._next_sweep or len(self._states) >= self._max:
            self.forget_idle()
        if len(self._states) >= self._max:
            self._evict(len(self._states) - self._max + 1)
        return _State(window=self.limits(dest.transport).initial_concurrency, last_used=now)

    # --- what the manager asks -----------------------------------------------------

    def is_dead(self, dest: NextHop) -> bool:
        """Dead now: defer this destination's mail without trying it."""
        return self.dead_until(dest) is not None

    def dead_until(self, dest: NextHop) -> float | None:
        """When a dead destination accepts its probe delivery; None if not dead."""
        st = self._states.get(dest)
        if st is None or st.dead_until <= self._clock():
            return None
        return st.dead_until

    def dead_reason(self, dest: NextHop) -> str | None:
        """The failure text that killed ``dest`` (for "delivery temporarily suspended")."""
        return self._states[dest].reason if self.is_dead(dest) else None

    def window(self, dest: NextHop) -> int:
        """The current concurrency window (0 while dead)."""
        st = self._states.get(dest)
        if st is None:
            return self.limits(dest.transport).initial_concurrency
        if st.dead_until and st.dead_until <= self._clock():
            return 1  # the probe slot
        return st.window

    def in_flight(self, dest: NextHop) -> int:
        st = self._states.get(dest)
        return st.busy if st else 0

    @property
    def total_in_flight(self) -> int:
        return self._total

    def __len__(self) -> int:
        """How many destinations are remembered."""
        return len(self._states)

    def revive_all(self) -> int:
        """Forget every dead mark (``postqueue -f`` does: the operator says "try now").
        Return how many destinations were dead."""
        now = self._clock()
        revived = 0
        for dest, st in self._states.items():
            if st.dead_until > now or st.probing:
                self._revive(st, self.limits(dest.transport))
                revived += 1
        return revived

    # --- bounded memory ------------------------------------------------------------

    def forget_idle(self) -> int:
        """Drop destinations idle for ``destination_idle_time`` (not busy, not dead);
        return how many. Called by the limiter itself; the manager may call it too."""
        now = self._clock()
        self._next_sweep = now + min(self._idle, 60.0)
        cutoff = now - self._idle
        drop: list[NextHop] = []
        for dest, st in self._states.items():
            if st.last_used > cutoff:
                break  # last-use order: everything after is fresher
            if st.busy == 0 and st.dead_until <= now and not st.probing:
                drop.append(dest)
        for dest in drop:
            del self._states[dest]
        return len(drop)

    def _evict(self, count: int) -> None:
        """Over max_destinations: drop the least recently used idle ones, even dead."""
        drop: list[NextHop] = []
        for dest, st in self._states.items():
            if len(drop) >= count:
                break
            if st.busy == 0:
                drop.append(dest)
        for dest in drop:
            del self._states[dest]
