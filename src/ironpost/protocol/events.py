"""Events the SMTP server state machine emits, and the sentinels of ``next_event()``.

Every event is a frozen, slotted dataclass. An event that asks for a reply (all of them
except :class:`MessageData` and :class:`ConnectionClosed`) pauses the connection until the
application answers it with ``ServerConnection.send(reply)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from ironpost.protocol.grammar import MailParams, Path, RcptParams
from ironpost.protocol.replies import Reply


class Sentinel(enum.Enum):
    """What ``next_event()`` returns when it has no event."""

    NEED_DATA = "NEED_DATA"  # feed more bytes (and flush collected replies now)
    PAUSED = "PAUSED"  # an event waits for its reply
    CLOSED = "CLOSED"  # the session is over; stop reading


NEED_DATA: Final = Sentinel.NEED_DATA
PAUSED: Final = Sentinel.PAUSED
CLOSED: Final = Sentinel.CLOSED


class Event:
    """Base of all events (no state of its own)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class EarlyTalker(Event):
    """Bytes arrived before the greeting was sent. Reply EARLY_TALKER (closes the session),
    or call ``send_greeting()`` to carry on with the buffered input."""


@dataclass(frozen=True, slots=True)
class Helo(Event):
    hostname: str
    extended: bool


@dataclass(frozen=True, slots=True)
class Mail(Event):
    path: Path
    params: MailParams


@dataclass(frozen=True, slots=True)
class Rcpt(Event):
    path: Path
    params: RcptParams


@dataclass(frozen=True, slots=True)
class Data(Event):
    """The DATA command. Reply START_DATA (354) to receive the body, or an error."""


@dataclass(frozen=True, slots=True)
class MessageData(Event):
    """Body bytes (dot-unstuffed, CRLF line ends), in arrival order. Needs no reply."""

    chunk: bytes


@dataclass(frozen=True, slots=True)
class MessageEnd(Event):
    """End of the DATA body or of the LAST BDAT chunk. ``error`` is set when the protocol
    layer itself rejects the message (too big, line too long): reply with it."""

    error: Reply | None


@dataclass(frozen=True, slots=True)
class BdatChunk(Event):
    """A non-LAST BDAT chunk was delivered in full as MessageData; reply 250."""

    size: int
    last: bool


@dataclass(frozen=True, slots=True)
class StartTls(Event):
    """Reply READY_TLS, do the handshake, then call ``tls_established()``."""


@dataclass(frozen=True, slots=True)
class Rset(Event):
    pass


@dataclass(frozen=True, slots=True)
class Noop(Event):
    pass


@dataclass(frozen=True, slots=True)
class Quit(Event):
    pass


@dataclass(frozen=True, slots=True)
class Vrfy(Event):
    arg: str


@dataclass(frozen=True, slots=True)
class Expn(Event):
    arg: str


@dataclass(frozen=True, slots=True)
class Help(Event):
    pass


@dataclass(frozen=True, slots=True)
class Auth(Event):
    """AUTH command. ``initial`` is the raw initial response (``=`` means empty), not
    decoded: SASL is the application's business. Reply 334 to start an exchange."""

    mechanism: str
    initial: str | None


@dataclass(frozen=True, slots=True)
class AuthResponse(Event):
    """One client line during a SASL exchange (``*`` cancels, RFC 4954)."""

    line: str


@dataclass(frozen=True, slots=True)
class ProtocolError(Event):
    """The protocol decided the reply itself. Send ``reply`` (or a 421 of your own);
    when ``close`` is true the session ends after the reply."""

    reply: Reply
    close: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The peer closed its side (EOF). Emitted once; any partial input is dropped."""
