"""The scheduler's slice of the configuration, frozen and typed.

Owns :class:`SchedulerConfig` (built once from :class:`~ironpost.config.settings.Settings`
with :meth:`SchedulerConfig.from_settings`), :class:`TransportLimits` (the per-transport
concurrency and batching numbers after ``<transport>_*`` overrides are applied) and
:class:`FeedbackRule` (Postfix's ``1/concurrency`` feedback syntax).

Invariants: a config never changes after construction; every time is in seconds;
``maximal_backoff_time`` is never below ``minimal_backoff_time`` (a smaller value is
raised to it, as the backoff could not honour both); a limit of 0 means "no limit",
as in Postfix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from ironpost.config.diagnostics import ConfigError, Diagnostic, split_origin
from ironpost.config.params import PARAMS
from ironpost.config.settings import Settings

_INT = re.compile(r"[0-9]+\Z")
_FEEDBACK = re.compile(r"([0-9]+(?:\.[0-9]*)?)\s*(/\s*concurrency)?\Z")

#: Postfix's per-transport suffixes (``smtp_destination_concurrency_limit``, ...) and the
#: :class:`TransportOverride` field each one sets.
TRANSPORT_SUFFIXES: dict[str, str] = {
    "_initial_destination_concurrency": "initial_concurrency",
    "_destination_concurrency_limit": "concurrency_limit",
    "_destination_recipient_limit": "recipient_limit",
    "_destination_concurrency_failed_cohort_limit": "failed_cohort_limit",
    "_destination_concurrency_positive_feedback": "positive_feedback",
    "_destination_concurrency_negative_feedback": "negative_feedback",
}

#: SchedulerConfig fields that are ironpost's own tuning, not main.cf parameters.
TUNING_FIELDS = frozenset(
    {"backoff_jitter", "startup_spread", "destination_idle_time", "max_destinations"}
)


@dataclass(frozen=True, slots=True)
class FeedbackRule:
    """Concurrency feedback per delivery: ``amount`` or ``amount/concurrency``.

    Postfix's default ``1/concurrency`` changes the window by one after a window-full
    of same-kind results, like TCP congestion avoidance; ``1`` changes it on every one.
    """

    amount: float
    per_window: bool

    def value(self, window: int) -> float:
        return self.amount / max(window, 1) if self.per_window else self.amount

    @classmethod
    def parse(cls, text: str) -> FeedbackRule:
        m = _FEEDBACK.match(text.strip())
        if m is None or not 0 < float(m.group(1)) <= 1:
            raise ValueError(f"{text!r}: expected a number in (0, 1], or 1/concurrency")
        return cls(float(m.group(1)), m.group(2) is not None)

    def __str__(self) -> str:
        amount = f"{self.amount:g}"
        return f"{amount}/concurrency" if self.per_window else amount


PER_WINDOW = FeedbackRule(1.0, True)


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """What the destination limiter needs for one transport."""

    initial_concurrency: int  # never above concurrency_limit (when that is not 0)
    concurrency_limit: int  # 0: no per-destination limit (the process limit still holds)
    recipient_limit: int  # 0: no limit
    failed_cohort_limit: int  # 0: a destination is never declared dead
    positive_feedback: FeedbackRule
    negative_feedback: FeedbackRule


@dataclass(frozen=True, slots=True)
class TransportOverride:
    """``<transport>_*`` values set in main.cf; None: use the default_* value."""

    initial_concurrency: int | None = None
    concurrency_limit: int | None = None
    recipient_limit: int | None = None
    failed_cohort_limit: int | None = None
    positive_feedback: FeedbackRule | None = None
    negative_feedback: FeedbackRule | None = None


@dataclass(frozen=True)
class SchedulerConfig:
    """Retry, lifetime and concurrency parameters, with Postfix's names and ironpost's
    defaults. The last group is ironpost's own tuning, not read from main.cf."""

    queue_run_delay: float = 300.0
    minimal_backoff_time: float = 300.0
    maximal_backoff_time: float = 4000.0
    maximal_queue_lifetime: float = 5 * 86400.0
    bounce_queue_lifetime: float = 5 * 86400.0
    delay_warning_time: float = 4 * 3600.0  # 0: never warn
    initial_destination_concurrency: int = 5
    default_destination_concurrency_limit: int = 20
    default_destination_recipient_limit: int = 50
    default_destination_concurrency_failed_cohort_limit: int = 1
    default_destination_concurrency_positive_feedback: FeedbackRule = PER_WINDOW
    default_destination_concurrency_negative_feedback: FeedbackRule = PER_WINDOW
    default_process_limit: int = 100
    transport_retry_time: float = 60.0
    transport_overrides: Mapping[str, TransportOverride] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # --- ironpost's tuning ---------------------------------------------------------
    #: Retry delays are multiplied by a factor drawn from [1 - jitter, 1 + jitter].
    backoff_jitter: float = 0.1
    #: Messages already due when the manager starts are spread over this many seconds.
    startup_spread: float = 60.0
    #: An idle destination's window and counters are forgotten after this long.
    destination_idle_time: float = 300.0
    #: Hard bound on remembered destinations (idle ones are evicted first).
    max_destinations: int = 10_000

    def __post_init__(self) -> None:
        if not 0 <= self.backoff_jitter < 1:
            raise ValueError("backoff_jitter must be in [0, 1)")
        if self.minimal_backoff_time <= 0:
            raise ValueError("minimal_backoff_time must be positive")
        if self.maximal_backoff_time < self.minimal_backoff_time:
            object.__setattr__(self, "maximal_backoff_time", self.minimal_backoff_time)
        if self.default_process_limit < 1:
            raise ValueError("default_process_limit must be at least 1")

    def limits(self, transport: str) -> TransportLimits:
        """The effective limits of ``transport`` (overrides applied)."""
        o = self.transport_overrides.get(transport, TransportOverride())
        limit = _pick(o.concurrency_limit, self.default_destination_concurrency_limit)
        initial = max(1, _pick(o.initial_concurrency, self.initial_destination_concurrency))
        if limit:
            initial = min(initial, limit)
        return TransportLimits(
            initial_concurrency=initial,
            concurrency_limit=limit,
            recipient_limit=_pick(o.recipient_limit, self.default_destination_recipient_limit),
            failed_cohort_limit=_pick(
                o.failed_cohort_limit, self.default_destination_concurrency_failed_cohort_limit
            ),
            positive_feedback=o.positive_feedback
            or self.default_destination_concurrency_positive_feedback,
            negative_feedback=o.negative_feedback
            or self.default_destination_concurrency_negative_feedback,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **tuning: float) -> SchedulerConfig:
        """Read the parameters; ``tuning`` sets ironpost's own fields (backoff_jitter, ...).

        Parameters missing from the table (the per-transport ones and the cohort and
        feedback knobs) are read when main.cf sets them; a bad value raises
        :class:`ConfigError` naming its ``file:line``.
        """
        reader = _Reader(settings)
        base = cls(
            queue_run_delay=settings.seconds("queue_run_delay"),
            minimal_backoff_time=settings.seconds("minimal_backoff_time"),
            maximal_backoff_time=settings.seconds("maximal_backoff_time"),
            maximal_queue_lifetime=settings.seconds("maximal_queue_lifetime"),
            bounce_queue_lifetime=settings.seconds("bounce_queue_lifetime"),
            delay_warning_time=settings.seconds("delay_warning_time"),
            initial_destination_concurrency=settings.integer("initial_destination_concurrency"),
            default_destination_concurrency_limit=settings.integer(
                "default_destination_concurrency_limit"
            ),
            default_destination_recipient_limit=settings.integer(
                "default_destination_recipient_limit"
            ),
            default_process_limit=settings.integer("default_process_limit"),
            transport_retry_time=settings.seconds("transport_retry_time"),
        )
        cohort = reader.integer("default_destination_concurrency_failed_cohort_limit")
        positive = reader.feedback("default_destination_concurrency_positive_feedback")
        negative = reader.feedback("default_destination_concurrency_negative_feedback")
        overrides: dict[str, dict[str, object]] = {}
        for name in reader.names():
            for suffix, attr in TRANSPORT_SUFFIXES.items():
                transport = name[: -len(suffix)]
                if name.endswith(suffix) and transport and transport != "default":
                    value = reader.feedback(name) if "feedback" in attr else reader.integer(name)
                    if value is not None:
                        overrides.setdefault(transport, {})[attr] = value
        reader.raise_errors()
        changes: dict[str, object] = {
            "transport_overrides": MappingProxyType(
                {t: TransportOverride(**v) for t, v in sorted(overrides.items())}  # type: ignore[arg-type]
            ),
            "startup_spread": min(60.0, base.queue_run_delay),
            "destination_idle_time": max(base.queue_run_delay, base.transport_retry_time),
        }
        if cohort is not None:
            changes["default_destination_concurrency_failed_cohort_limit"] = cohort
        if positive is not None:
            changes["default_destination_concurrency_positive_feedback"] = positive
        if negative is not None:
            changes["default_destination_concurrency_negative_feedback"] = negative
        for key, tuned in tuning.items():
            if key not in TUNING_FIELDS:
                raise TypeError(f"{key!r} is not a scheduler tuning field")
            changes[key] = tuned
        return replace(base, **changes)  # type: ignore[arg-type]


def _pick(value: int | None, default: int) -> int:
    return default if value is None else value


class _Reader:
    """Reads parameters that may be absent from the table; collects diagnostics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.diags: list[Diagnostic] = []

    def names(self) -> list[str]:
        explicit = [name for name, _ in self.settings.explicit_items()]
        table = [n for n in PARAMS if any(n.endswith(s) for s in TRANSPORT_SUFFIXES)]
        return sorted({*explicit, *table})

    def _raw(self, name: str) -> str | None:
        if name in PARAMS:
            return self.settings.raw(name)
        try:
            explicit = self.settings.is_explicit(name)
        except KeyError:
            return None
        return self.settings.raw(name) if explicit else None

    def _error(self, name: str, message: str) -> None:
        file, line = split_origin(self.settings.origin(name) or "(defaults)")
        self.diags.append(Diagnostic("error", file, line, f"{name}: {message}"))

    def integer(self, name: str) -> int | None:
        raw = self._raw(name)
        if raw is None:
            return None
        if not _INT.match(raw.strip()):
            self._error(name, f"{raw!r}: not a non-negative number")
            return None
        return int(raw)

    def feedback(self, name: str) -> FeedbackRule | None:
        raw = self._raw(name)
        if raw is None:
            return None
        try:
            return FeedbackRule.parse(raw)
        except ValueError as exc:
            self._error(name, str(exc))
            return None

    def raise_errors(self) -> None:
        if self.diags:
            raise ConfigError(self.diags)
