"""Session vocabulary shared by the server state machine: options, phases, EHLO keywords.

Owns :class:`ServerOptions` (one frozen object per connection, built by the application
from main.cf and the client) and :class:`Phase` (where a session stands).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Per-connection protocol settings; the application derives them from main.cf and
    the client (e.g. ``forbid_bare_newline`` off for trusted networks)."""

    max_message_size: int = 10_240_000  # octets; 0 = unlimited (message_size_limit)
    max_recipients: int = 1000  # per transaction; 0 = unlimited (smtpd_recipient_limit)
    helo_required: bool = False
    tls_available: bool = False  # offer STARTTLS
    tls_active: bool = False  # implicit TLS (submissions)
    forbid_bare_newline: bool = True
    smtputf8: bool = True
    chunking: bool = True  # CHUNKING and BINARYMIME
    auth_mechanisms: tuple[str, ...] = ()  # empty: AUTH not offered
    auth_tls_only: bool = False  # smtpd_tls_auth_only: offer/accept AUTH only under TLS


class Phase(enum.Enum):
    GREETING = "GREETING"  # the greeting has not been sent yet
    FRESH = "FRESH"  # no HELO/EHLO yet (again so after STARTTLS)
    READY = "READY"  # HELO/EHLO accepted, no transaction
    MAIL = "MAIL"  # sender accepted, no recipient yet
    RCPT = "RCPT"  # one or more recipients accepted
    CHUNKING = "CHUNKING"  # one or more non-LAST BDAT chunks accepted
    DATA = "DATA"  # reading a DATA body
    BDAT = "BDAT"  # reading BDAT chunk octets
    TLS = "TLS"  # 220 sent to STARTTLS; waiting for tls_established()
    AUTH = "AUTH"  # SASL exchange: each line is an AuthResponse
    CLOSED = "CLOSED"


def ehlo_keywords(options: ServerOptions, *, tls_active: bool) -> list[str]:
    """The EHLO extension lines, in Postfix's order."""
    o = options
    words = ["PIPELINING", f"SIZE {o.max_message_size}" if o.max_message_size else "SIZE"]
    if o.tls_available and not tls_active:
        words.append("STARTTLS")
    if o.auth_mechanisms and (tls_active or not o.auth_tls_only):
        words.append("AUTH " + " ".join(o.auth_mechanisms))
    words += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
    if o.smtputf8:
        words.append("SMTPUTF8")
    if o.chunking:
        words += ["CHUNKING", "BINARYMIME"]
    return words
