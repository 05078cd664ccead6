"""How long a message may stay queued, and when its sender hears about the delay.

Owns :class:`Lifetime`: queue-lifetime expiry (``maximal_queue_lifetime``, or
``bounce_queue_lifetime`` for mail with the null sender, i.e. bounces), the one delay
warning per message (``delay_warning_time``), and :meth:`Lifetime.retry_at`, which turns
a proposed retry time into "retry then" or "bounce now".

Invariants, as in Postfix: expiry is only acted on when a delivery fails temporarily
(a recipient deferred at or after its expiry bounces; nothing bounces between
attempts); the last retry is moved forward to the expiry instant, so a message bounces
at ``arrival + lifetime`` and not up to a whole backoff later; a lifetime of 0 means one
attempt only; mail with the null sender never gets a delay warning (there is nobody to
send it to), and no message gets a second one.
"""

from __future__ import annotations

from ironpost.scheduler.config import SchedulerConfig


class Lifetime:
    __slots__ = ("_bounce", "_maximal", "_warning")

    def __init__(self, config: SchedulerConfig) -> None:
        self._maximal = config.maximal_queue_lifetime
        self._bounce = config.bounce_queue_lifetime
        self._warning = config.delay_warning_time

    def lifetime(self, null_sender: bool) -> float:
        return self._bounce if null_sender else self._maximal

    def expires_at(self, arrival: float, null_sender: bool) -> float:
        return arrival + self.lifetime(null_sender)

    def expired(self, arrival: float, now: float, null_sender: bool) -> bool:
        """The message has been queued for its whole lifetime: a deferral now bounces."""
        return now >= self.expires_at(arrival, null_sender)

    def retry_at(
        self, arrival: float, now: float, null_sender: bool, proposed: float
    ) -> float | None:
        """A recipient was just deferred: when to retry it, or None to bounce it now.

        ``proposed`` is the backoff's choice (``Backoff.next_attempt``). A retry that
        would fall after the expiry is moved to the expiry itself, so the final attempt
        happens exactly when the lifetime ends and a deferral there bounces.
        """
        expiry = self.expires_at(arrival, null_sender)
        if now >= expiry:
            return None
        return min(proposed, expiry)

    def delay_warning_at(self, arrival: float, null_sender: bool, warned: bool) -> float | None:
        """When the delay warning becomes due, or None if none will ever be sent."""
        if warned or null_sender or self._warning <= 0:
            return None
        at = arrival + self._warning
        # A warning due only at or after expiry would arrive with (or after) the bounce.
        return at if at < self.expires_at(arrival, null_sender) else None

    def delay_warning_due(
        self, arrival: float, now: float, null_sender: bool, warned: bool
    ) -> bool:
        """Send the delay warning now (the caller records that it did, then passes
        ``warned=True`` forever after)."""
        at = self.delay_warning_at(arrival, null_sender, warned)
        return at is not None and at <= now < self.expires_at(arrival, null_sender)
