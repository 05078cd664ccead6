"""Parameter table, process family: who the daemon runs as, and how it stops.

Owns the rows for the privilege drop (``mail_owner`` and its two ironpost-only
companions), the bounded shutdown and the number of SMTP processes. ``mail_owner`` is
Postfix's name; ironpost's default account is ``ironpost``. See params_smtpd.py for the conventions.
"""

from __future__ import annotations

from ironpost.config.paramdef import Param, b, i, s, t

PROCESS: tuple[Param, ...] = (
    s(
        "mail_owner",
        "ironpost",
        "Account the daemon drops to after binding its ports when started as root.",
        postfix_default="postfix",
    ),
    b(
        "create_mail_owner",
        "no",
        "Started as root and $mail_owner does not exist: create it as a system account"
        " (useradd --system) instead of refusing to start.",
        origin="ironpost",
    ),
    b(
        "ironpost_allow_root",
        "no",
        "Accept mail_owner = root and serve as root (for test harnesses only; logged as a"
        " warning at every start).",
        origin="ironpost",
    ),
    t(
        "shutdown_timeout",
        "30s",
        "On stop: how long transactions in flight and deliveries under way may take to"
        " finish before they are cut (the client then has no 250: nothing is lost).",
        lo=0,
        origin="ironpost",
    ),
    i(
        "ironpost_workers",
        "1",
        "SMTP processes sharing the listeners (SO_REUSEPORT); 1 = one process does"
        " everything; N > 1 = N SMTP-only workers plus the master, the one queue authority,"
        " which delivers; 0 = one worker per CPU; `ironpost run --workers N` overrides it."
        " Anvil limits, AUTH bans and connection limits are counted per worker (each allows"
        " the full limit), and /metrics has no per-session smtpd counters: hence the"
        " default of 1.",
        lo=0,
        hi=64,
        origin="ironpost",
    ),
)
