"""The anvil's settings: client rate limits, AUTH failure throttling, per-login limits.

Owns :class:`AnvilConfig`, a frozen value built once from the parameter table
(``smtpd_client_*_rate_limit``, ``anvil_rate_time_unit``, ``smtpd_auth_*``,
``smtpd_sasl_user_*``). Invariants: time units are positive; limits, thresholds and delays
are never negative; a rate limit of 0 means "no limit", as in Postfix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from ironpost.anvil.rates import DEFAULT_MAX_KEYS


class SettingsLike(Protocol):
    """The slice of :class:`ironpost.config.settings.Settings` read here."""

    def integer(self, name: str) -> int: ...

    def seconds(self, name: str) -> float: ...


@dataclass(frozen=True, slots=True)
class AnvilConfig:
    time_unit: float = 60.0
    connection_rate: int = 0  # 0: no limit
    message_rate: int = 0
    recipient_rate: int = 0
    auth_rate: int = 0
    auth_failure_delay: float = 1.0
    auth_failure_max_delay: float = 16.0
    auth_ban_threshold: int = 10
    auth_ban_time: float = 900.0
    user_time_unit: float = 3600.0
    user_message_rate: int = 500
    user_recipient_rate: int = 2000
    # Not a main.cf parameter: keys each in-memory table may hold before it evicts the
    # least recently used one (memory stays bounded under a flood of distinct clients).
    max_keys: int = DEFAULT_MAX_KEYS

    def __post_init__(self) -> None:
        for name in ("time_unit", "auth_ban_time", "user_time_unit"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        for name in ("auth_failure_delay", "auth_failure_max_delay"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be zero or more seconds, not {value!r}")
        for name in (
            "connection_rate",
            "message_rate",
            "recipient_rate",
            "auth_rate",
            "user_message_rate",
            "user_recipient_rate",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.auth_ban_threshold < 1:
            raise ValueError("auth_ban_threshold must be at least 1")
        if self.max_keys < 1:
            raise ValueError("max_keys must be at least 1")

    @classmethod
    def from_settings(cls, s: SettingsLike) -> AnvilConfig:
        return cls(
            time_unit=s.seconds("anvil_rate_time_unit"),
            connection_rate=s.integer("smtpd_client_connection_rate_limit"),
            message_rate=s.integer("smtpd_client_message_rate_limit"),
            recipient_rate=s.integer("smtpd_client_recipient_rate_limit"),
            auth_rate=s.integer("smtpd_client_auth_rate_limit"),
            auth_failure_delay=s.seconds("smtpd_auth_failure_delay"),
            auth_failure_max_delay=s.seconds("smtpd_auth_failure_max_delay"),
            auth_ban_threshold=s.integer("smtpd_auth_ban_threshold"),
            auth_ban_time=s.seconds("smtpd_auth_ban_time"),
            user_time_unit=s.seconds("smtpd_sasl_user_rate_time_unit"),
            user_message_rate=s.integer("smtpd_sasl_user_message_rate_limit"),
            user_recipient_rate=s.integer("smtpd_sasl_user_recipient_rate_limit"),
        )
