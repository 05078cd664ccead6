"""One object for the queue manager: config, clock, randomness and the three policies.

Owns :class:`Scheduler`, which wires :class:`~ironpost.scheduler.backoff.Backoff`,
:class:`~ironpost.scheduler.lifetime.Lifetime` and
:class:`~ironpost.scheduler.destinations.DestinationLimiter` to one injected clock and
one injected :class:`random.Random`, and answers the manager's per-recipient question
"deferred again: retry when, or bounce?" in one call. Invariant: nothing here does
I/O or reads the wall clock except through the injected ``clock``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from ironpost.config.settings import Settings
from ironpost.scheduler.backoff import Backoff
from ironpost.scheduler.config import SchedulerConfig
from ironpost.scheduler.destinations import DestinationLimiter
from ironpost.scheduler.lifetime import Lifetime


class Scheduler:
    __slots__ = ("backoff", "clock", "config", "destinations", "lifetime")

    def __init__(
        self,
        config: SchedulerConfig,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.backoff = Backoff(config, rng if rng is not None else random.Random())
        self.lifetime = Lifetime(config)
        self.destinations = DestinationLimiter(config, clock)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> Scheduler:
        return cls(SchedulerConfig.from_settings(settings), clock=clock, rng=rng)

    def retry_at(self, arrival: float, attempts: int, null_sender: bool) -> float | None:
        """A recipient was deferred after its ``attempts``-th attempt (1 for the first):
        the absolute time of its next attempt, or None when it must bounce now because
        the message has used up its queue lifetime."""
        now = self.clock()
        proposed = self.backoff.next_attempt(now, attempts)
        return self.lifetime.retry_at(arrival, now, null_sender, proposed)

    def delay_warning_due(self, arrival: float, null_sender: bool, warned: bool) -> bool:
        return self.lifetime.delay_warning_due(arrival, self.clock(), null_sender, warned)

    def startup_time(self, scheduled: float) -> float:
        """The attempt time of a message found deferred at startup (spread if due)."""
        return self.backoff.startup_time(self.clock(), scheduled)
