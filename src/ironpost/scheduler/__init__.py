"""When to try next: retry backoff, queue lifetime, per-destination concurrency.

Pure decision logic for the queue manager (no I/O, no asyncio, no wall clock except
an injected ``clock``): see ``docs/scheduler.md`` for the rules in Postfix's terms.
"""

from ironpost.scheduler.backoff import Backoff
from ironpost.scheduler.config import (
    FeedbackRule,
    SchedulerConfig,
    TransportLimits,
    TransportOverride,
)
from ironpost.scheduler.destinations import DestinationLimiter, Feedback, feedback_of
from ironpost.scheduler.lifetime import Lifetime
from ironpost.scheduler.schedule import Scheduler

__all__ = [
    "Backoff",
    "DestinationLimiter",
    "Feedback",
    "FeedbackRule",
    "Lifetime",
    "Scheduler",
    "SchedulerConfig",
    "TransportLimits",
    "TransportOverride",
    "feedback_of",
]
