"""SMTP replies as values, and the named replies the protocol layer sends.

Handlers return a :class:`Reply`; exactly one place (``Reply.to_bytes``) turns it
into wire format. Texts sent to clients are generic: they never name a
configuration file, a table or an internal error.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: a code, an optional RFC 3463 enhanced code, and text lines."""

    code: int
    enhanced: str | None
    text: str | tuple[str, ...]

    @property
    def lines(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else self.text

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def to_bytes(self) -> bytes:
        """Wire form. Every line carries the enhanced code when there is one (RFC 2034)."""
        lines = self.lines or ("",)
        prefix = f"{self.enhanced} " if self.enhanced else ""
        last = len(lines) - 1
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == last else "-"
            out.append(f"{self.code}{sep}{prefix}{line}\r\n")
        # Replies are ASCII except where SMTPUTF8 echoes a UTF-8 address.
        return "".join(out).encode("utf-8", "replace")

    def __str__(self) -> str:
        prefix = f"{self.enhanced} " if self.enhanced else ""
        return f"{self.code} {prefix}{' / '.join(self.lines)}"


# -- replies the protocol layer itself produces (grammar and sequencing) --------

OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Ok")
RESET_OK = Reply(250, "2.0.0", "Ok")
NOOP_OK = Reply(250, "2.0.0", "Ok")
START_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
BYE = Reply(221, "2.0.0", "Bye")
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
VRFY_DISABLED = Reply(502, "5.5.1", "VRFY command is disabled")
HELP = Reply(214, "2.0.0", "See RFC 5321")

LINE_TOO_LONG = Reply(500, "5.5.2", "Error: line too long")
NUL_IN_COMMAND = Reply(500, "5.5.2", "Error: NUL character in command")
BAD_UTF8 = Reply(500, "5.5.2", "Error: invalid UTF-8 in command")
UNKNOWN_COMMAND = Reply(502, "5.5.2", "Error: command not recognized")
HTTP_COMMAND = Reply(502, "5.5.2", "Error: this is an SMTP server, not a web server")
EARLY_TALKER = Reply(554, "5.5.1", "Error: talking before the greeting")
BARE_NEWLINE = Reply(521, "5.5.2", "Error: bare <CR> or <LF> received")
DATA_LINE_TOO_LONG = Reply(500, "5.5.2", "Error: message line longer than 1000 octets")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Error: message file too big")
SIZE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Error: too many recipients")
NEED_HELO = Reply(503, "5.5.1", "Error: send HELO/EHLO first")
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
TLS_ALREADY = Reply(503, "5.5.1", "Error: TLS already active")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available due to local problem")
TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
UTF8_NOT_NEGOTIATED = Reply(553, "5.6.7", "Error: SMTPUTF8 is required for UTF-8 addresses")
TIMEOUT = Reply(421, "4.4.2", "Error: timeout exceeded")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Error: too many errors")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Error: too many connections")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down")
LOCAL_ERROR = Reply(451, "4.3.0", "Error: queue file write error")
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage")
HOPS_EXCEEDED = Reply(554, "5.4.6", "Error: too many hops")

# -- added by the protocol package: grammar, ESMTP parameters, sequencing ---------
# Address syntax errors all use 501 5.1.3 (as Postfix does for syntax), including a path
# over 256 octets; only an over-long local part is 553 5.1.3 (RFC 5321 4.5.3.1.1).

BAD_SYNTAX = Reply(500, "5.5.2", "Error: bad syntax")
CR_IN_COMMAND = Reply(500, "5.5.2", "Error: bare <CR> in command")
BAD_ADDRESS_SYNTAX = Reply(501, "5.1.3", "Error: bad address syntax")
ADDRESS_TOO_LONG = Reply(501, "5.1.3", "Error: address too long")
LOCAL_PART_TOO_LONG = Reply(553, "5.1.3", "Error: local part of address too long")
BAD_PARAMETER = Reply(501, "5.5.4", "Error: bad parameter syntax or value")
DUPLICATE_PARAMETER = Reply(501, "5.5.4", "Error: duplicate parameter")
HELO_SYNTAX = Reply(501, "5.5.4", "Syntax: HELO hostname")
EHLO_SYNTAX = Reply(501, "5.5.4", "Syntax: EHLO hostname")
MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
DATA_SYNTAX = Reply(501, "5.5.4", "Syntax: DATA")
RSET_SYNTAX = Reply(501, "5.5.4", "Syntax: RSET")
STARTTLS_SYNTAX = Reply(501, "5.5.4", "Syntax: STARTTLS")
VRFY_SYNTAX = Reply(501, "5.5.4", "Syntax: VRFY address")
EXPN_SYNTAX = Reply(501, "5.5.4", "Syntax: EXPN address")
BDAT_SYNTAX = Reply(501, "5.5.4", "Syntax: BDAT count [LAST]")
AUTH_SYNTAX = Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "Error: no valid recipients")
BAD_SEQUENCE = Reply(503, "5.5.1", "Error: bad sequence of commands")
TRANSACTION_IN_PROGRESS = Reply(503, "5.5.1", "Error: MAIL transaction in progress")
BINARYMIME_NEEDS_BDAT = Reply(503, "5.5.1", "Error: BODY=BINARYMIME requires BDAT")
NO_SERVICE = Reply(503, "5.5.1", "Error: no SMTP service here")
AUTH_NOT_ENABLED = Reply(503, "5.5.1", "Error: authentication not enabled")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Error: already authenticated")
AUTH_MECHANISM_UNSUPPORTED = Reply(504, "5.5.4", "Unsupported authentication mechanism")
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication")
ALIAS_EXPANSION_FAILED = Reply(451, "4.3.0", "Error: alias expansion failed")
