"""Parameter table, maillog family: where log lines go, their format, privacy, retention.

Owns the rows that :meth:`ironpost.maillog.MailLog.from_settings` reads
(``maillog_file`` itself is a core row). See docs/logging.md.
"""

from __future__ import annotations

from ironpost.config.paramdef import Param, b, i, s, t

MAILLOG: tuple[Param, ...] = (
    s(
        "maillog_format",
        "text",
        "Log line format: text (Postfix's syslog layout) or json (one object per line).",
        choices=("text", "json"),
        origin="ironpost",
    ),
    s(
        "maillog_privacy",
        "pseudonymize",
        "Personal data in log lines: off, pseudonymize (keyed HMAC tokens for addresses,"
        " client IPs and names) or redact (local parts and the last IP octets removed).",
        choices=("off", "pseudonymize", "redact"),
        origin="ironpost",
    ),
    t(
        "maillog_privacy_key_rotation",
        "30d",
        "Age at which the pseudonymisation key ($data_directory/maillog.key) is replaced.",
        lo=3600,
        origin="ironpost",
    ),
    i(
        "maillog_retention_days",
        "30",
        "Days of log kept: maillog_file rotates daily and older files (and retired keys)"
        " are deleted; 0 keeps everything and never rotates.",
        lo=0,
        hi=3650,
        origin="ironpost",
    ),
    s(
        "maillog_file_mode",
        "0600",
        "Mode of maillog_file and its rotated copies: 0600, or 0640 for a log group.",
        choices=("0600", "0640"),
        origin="ironpost",
    ),
    b(
        "maillog_syslog",
        "no",
        "Also send each line to the local syslog socket (/dev/log) with $syslog_facility.",
        origin="ironpost",
    ),
    s(
        "syslog_facility",
        "mail",
        "Syslog facility for maillog_syslog.",
        choices=(
            "mail",
            "daemon",
            "user",
            "local0",
            "local1",
            "local2",
            "local3",
            "local4",
            "local5",
            "local6",
            "local7",
        ),
    ),
)
