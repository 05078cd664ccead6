"""The part of the settings one SMTP listener needs, read once at start.

Each master.cf service has its own Settings (main.cf plus its ``-o`` overrides),
so each listener gets its own :class:`SmtpdOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SmtpdOptions:
    hostname: str
    banner: str
    helo_required: bool
    max_message_size: int
    max_recipients: int
    timeout: float
    session_deadline: float
    hard_error_limit: int
    soft_error_limit: int
    error_sleep: float
    greet_pause: float
    tls_level: str  # none | may | encrypt
    wrappermode: bool
    tls_received_header: bool
    tls_loglevel: int
    hopcount_limit: int
    forbid_bare_newline: bool
    queue_minfree: int
    client_connection_limit: int
    delay_reject: bool
    peername_lookup: bool
    sasl_enabled: bool
    sasl_service: str
    sasl_security_options: frozenset[str]  # smtpd_sasl_security_options (plaintext)
    sasl_tls_security_options: frozenset[str]  # smtpd_sasl_tls_security_options
    tls_auth_only: bool
    sasl_auth_required: bool
    sasl_authenticated_header: bool
    sasl_hide_client: bool
    from_header_check: str  # no | warn | enforce
    auth_failure_limit: int
    always_add_missing_headers: bool

    @classmethod
    def from_settings(cls, s: Any) -> SmtpdOptions:
        level = s.text("smtpd_tls_security_level").strip().lower() or "none"
        if level not in ("none", "may", "encrypt"):
            # dane/verify/secure are client-side levels; on the server they mean "may".
            level = "may"
        return cls(
            hostname=s.text("myhostname"),
            banner=s.text("smtpd_banner"),
            helo_required=s.boolean("smtpd_helo_required"),
            max_message_size=s.integer("message_size_limit"),
            max_recipients=s.integer("smtpd_recipient_limit"),
            timeout=s.seconds("smtpd_timeout"),
            session_deadline=s.seconds("smtpd_session_deadline"),
            hard_error_limit=s.integer("smtpd_hard_error_limit"),
            soft_error_limit=s.integer("smtpd_soft_error_limit"),
            error_sleep=s.seconds("smtpd_error_sleep_time"),
            greet_pause=s.seconds("smtpd_greet_pause"),
            tls_level=level,
            wrappermode=s.boolean("smtpd_tls_wrappermode"),
            tls_received_header=s.boolean("smtpd_tls_received_header"),
            tls_loglevel=s.integer("smtpd_tls_loglevel"),
            hopcount_limit=s.integer("hopcount_limit"),
            forbid_bare_newline=s.boolean("smtpd_forbid_bare_newline"),
            queue_minfree=s.integer("queue_minfree"),
            client_connection_limit=s.integer("smtpd_client_connection_count_limit"),
            delay_reject=s.boolean("smtpd_delay_reject"),
            peername_lookup=s.boolean("smtpd_peername_lookup"),
            sasl_enabled=s.boolean("smtpd_sasl_auth_enable"),
            sasl_service=s.text("smtpd_sasl_service"),
            sasl_security_options=frozenset(
                w.lower() for w in s.words("smtpd_sasl_security_options")
            ),
            sasl_tls_security_options=frozenset(
                w.lower() for w in s.words("smtpd_sasl_tls_security_options")
            ),
            tls_auth_only=s.boolean("smtpd_tls_auth_only"),
            sasl_auth_required=s.boolean("smtpd_sasl_auth_required"),
            sasl_authenticated_header=s.boolean("smtpd_sasl_authenticated_header"),
            sasl_hide_client=s.boolean("smtpd_sasl_hide_client"),
            from_header_check=s.text("smtpd_sasl_from_header_check"),
            auth_failure_limit=s.integer("smtpd_auth_failure_limit"),
            always_add_missing_headers=s.boolean("always_add_missing_headers"),
        )
