"""The client side of SMTP and LMTP as a sans-I/O state machine (RFC 5321, 2033, 2920, 3207,
3461, 4954, 6152, 6531).

Owns :class:`ClientConnection`: the caller feeds what the socket read to
``receive_data()`` (``b""`` = EOF), takes events from ``next_event()`` and writes
``data_to_send()`` to the socket. Commands are queued by the caller's decisions
(``hello()``, ``starttls()``, ``authenticate()``, ``begin()``, ``send_content()``, ``rset()``,
``quit()``) and by the machine itself: without PIPELINING the next RCPT after a RCPT reply,
and during AUTH the answer to each ``334`` challenge (from the :class:`SaslMechanism`).
No sockets, no TLS, no clock: the caller picks the timeout for ``awaiting``.

Invariants:

* every server reply is matched, in order, with the command it answers (``_expect``);
  an unsolicited reply, a reply that breaks the grammar (see ``reply_parser``) or data
  after the 220 to STARTTLS (response injection) raise :class:`RemoteProtocolError`;
  calling a method in the wrong phase raises :class:`LocalProtocolError`;
* one :class:`Replied` event per reply; RCPT replies and LMTP end-of-data replies carry
  the recipient's index in the transaction;
* a 421 reply, or EOF, ends the session: the next event is :class:`ConnectionLost` (EOF)
  or ``CLOSED``, and no reply to a still pending command will be reported;
* decisions stay with the caller: ``refusal()`` says a transaction cannot go to this peer
  (SMTPUTF8, SIZE); after the last RCPT reply the caller chooses ``send_data()`` or
  ``rset()``; after a 354 with no recipient accepted, ``abort_content()``;
* after ``tls_established()`` the capabilities are forgotten and EHLO must be sent again;
* AUTH is never pipelined: it is sent alone from READY and nothing else may be queued until
  its final reply; the credentials it carries are only ever in ``data_to_send()``, never in
  an exception or event; a challenge that is not base64, or that the mechanism refuses,
  is answered with ``*`` (cancel) and ``auth_error`` says why.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections import deque
from dataclasses import dataclass

from ironpost.protocol.client_sasl import AUTH_STEP_LIMIT, SaslError, SaslMechanism
from ironpost.protocol.data import dot_stuff
from ironpost.protocol.errors import LocalProtocolError
from ironpost.protocol.events import CLOSED, NEED_DATA, Sentinel
from ironpost.protocol.grammar import xtext
from ironpost.protocol.replies import Reply
from ironpost.protocol.reply_parser import ReplyParser, protocol_error


class Command(enum.Enum):
    """What a reply answers. Values are the names Postfix uses in "in reply to X command"."""

    GREETING = "initial greeting"
    EHLO = "EHLO"
    HELO = "HELO"
    LHLO = "LHLO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    RSET = "RSET"
    MAIL = "MAIL FROM"
    RCPT = "RCPT TO"
    DATA = "DATA"
    DOT = "end of DATA"
    QUIT = "QUIT"


class Phase(enum.Enum):
    """What the caller may do next (replies pending are in ``awaiting``)."""

    GREETING = enum.auto()  # wait for the greeting
    GREETED = enum.auto()  # hello() / helo() / quit()
    HELLO = enum.auto()  # EHLO/HELO/LHLO sent
    READY = enum.auto()  # session up: starttls() / begin() / rset() / quit()
    STARTTLS = enum.auto()  # STARTTLS sent
    TLS = enum.auto()  # 220 received: do the handshake, then tls_established()
    AUTH = enum.auto()  # AUTH exchange in progress (the machine answers 334 challenges)
    TRANSACTION = enum.auto()  # MAIL/RCPT in flight
    RECIPIENTS_DONE = enum.auto()  # every RCPT answered: send_data() or rset()
    DATA = enum.auto()  # DATA sent
    CONTENT = enum.auto()  # 354 received: send_content() or abort_content()
    DOT = enum.auto()  # end of data sent
    FAILED = enum.auto()  # the transaction failed: rset() or quit()
    QUIT = enum.auto()  # QUIT sent
    CLOSED = enum.auto()


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The EHLO/LHLO keywords we use. ``size`` is the announced limit (0: none given)."""

    pipelining: bool = False
    size: int | None = None  # None: SIZE not offered
    eightbitmime: bool = False
    smtputf8: bool = False
    starttls: bool = False
    dsn: bool = False
    enhancedstatuscodes: bool = False
    chunking: bool = False
    auth: tuple[str, ...] = ()
    esmtp: bool = True  # False after a HELO fallback

    @classmethod
    def parse(cls, reply: Reply) -> Capabilities:
        """From a 250 EHLO reply; the first line is the greeting name, the rest keywords."""
        found: dict[str, str] = {}
        auth: list[str] = []
        for line in reply.lines[1:]:
            keyword, _, params = line.strip().partition(" ")
            keyword = keyword.upper()
            if keyword.startswith("AUTH="):
                # The pre-RFC 2554 form some servers still send next to "AUTH ...".
                params, keyword = f"{keyword[5:]} {params}", "AUTH"
            if keyword == "AUTH":
                auth.extend(m for m in params.upper().split() if m not in auth)
            found.setdefault(keyword, params.strip())
        size: int | None = None
        if "SIZE" in found:
            value = found["SIZE"]
            size = int(value) if value.isdigit() and len(value) < 19 else 0
        return cls(
            pipelining="PIPELINING" in found,
            size=size,
            eightbitmime="8BITMIME" in found,
            smtputf8="SMTPUTF8" in found,
            starttls="STARTTLS" in found,
            dsn="DSN" in found,
            enhancedstatuscodes="ENHANCEDSTATUSCODES" in found,
            chunking="CHUNKING" in found,
            auth=tuple(auth),
        )


NO_CAPABILITIES = Capabilities(esmtp=False)


@dataclass(frozen=True, slots=True)
class TxRecipient:
    address: str
    notify: tuple[str, ...] | None = None  # DSN NOTIFY=; None: not given
    orcpt: str | None = None  # "rfc822;user@example" (decoded); None: not given


@dataclass(frozen=True, slots=True)
class Transaction:
    """One message to send: the envelope as this connection needs it."""

    sender: str  # "" is the null sender
    recipients: tuple[TxRecipient, ...]
    size: int
    eight_bit: bool = False  # BODY=8BITMIME at reception (or 8-bit content)
    smtputf8: bool = False  # needs SMTPUTF8 (UTF-8 address or header)
    ret: str | None = None  # DSN RET=FULL|HDRS
    envid: str | None = None  # DSN ENVID (decoded)


@dataclass(frozen=True, slots=True)
class Replied:
    """The server answered ``command``. ``index``: the recipient (RCPT; LMTP end of data)."""

    command: Command
    reply: Reply
    index: int | None = None


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """EOF from the server. ``awaiting``: the command whose reply never came, if any."""

    awaiting: Command | None


ClientEvent = Replied | ConnectionLost


# RFC 4954 §4: an AUTH line with its initial response must fit the command line limit.
_AUTH_LINE_LIMIT = 998


def _ascii(text: str) -> bool:
    return text.isascii()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class ClientConnection:
    """One SMTP or LMTP client session. See the module docstring for the contract."""

    def __init__(self, helo_name: str, *, lmtp: bool = False) -> None:
        if not helo_name or any(c in helo_name for c in " \r\n"):
            raise LocalProtocolError("bad HELO name")
        self.helo_name = helo_name
        self.lmtp = lmtp
        self.phase = Phase.GREETING
        self.capabilities: Capabilities | None = None
        self.tls_active = False
        self._parser = ReplyParser()
        self._out = bytearray()
        self._expect: deque[tuple[Command, int | None]] = deque([(Command.GREETING, None)])
        self._eof = False
        self._tx: Transaction | None = None
        self._next_rcpt = 0  # without PIPELINING: the next RCPT to send
        self._rcpt_replies = 0
        self._mail_ok = False
        self._aborted = False
        self._mech: SaslMechanism | None = None
        self._auth_pending: bytes | None = None  # an initial response too long for the line
        self._auth_steps = 0
        self._auth_cancelled = False
        #: AUTH succeeded (235) in this session.
        self.authenticated = False
        #: Why we cancelled the last AUTH exchange ourselves (never holds a secret), or None.
        self.auth_error: str | None = None
        #: Indexes of the recipients the server accepted, in RCPT order.
        self.accepted: list[int] = []

    # --- I/O ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self._eof:
            raise LocalProtocolError("receive_data() after EOF")
        if data:
            self._parser.feed(data)
        else:
            self._eof = True

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def awaiting(self) -> Command | None:
        """The command whose reply comes next (to choose a timeout), or None."""
        return self._expect[0][0] if self._expect else None

    @property
    def pipelining(self) -> bool:
        return bool(self.capabilities and self.capabilities.pipelining)

    def next_event(self) -> ClientEvent | Sentinel:
        if self.phase is Phase.CLOSED:
            return CLOSED
        reply = self._parser.next_reply()
        if reply is None:
            if not self._eof:
                return NEED_DATA
            awaiting = self.awaiting
            self._close()
            return ConnectionLost(awaiting)
        if not self._expect:
            raise protocol_error("unexpected reply from server")
        command, index = self._expect.popleft()
        if reply.code == 421:
            self._close()
            return Replied(command, reply, index)
        if self.phase is not Phase.QUIT or command is Command.QUIT:
            _ON_REPLY[command](self, reply, index)
        return Replied(command, reply, index)

    def _close(self) -> None:
        self.phase = Phase.CLOSED
        self._expect.clear()

    def _send(self, line: str, command: Command, index: int | None = None) -> None:
        if "\r" in line or "\n" in line:
            raise LocalProtocolError("CR or LF in a command argument")
        self._out += line.encode("utf-8") + b"\r\n"
        self._expect.append((command, index))

    def _require(self, *phases: Phase) -> None:
        if self.phase not in phases:
            raise LocalProtocolError(f"not allowed in phase {self.phase.name}")

    # --- session ------------------------------------------------------------------

    def hello(self) -> None:
        """EHLO (LHLO in LMTP mode)."""
        self._require(Phase.GREETED)
        verb = Command.LHLO if self.lmtp else Command.EHLO
        self._send(f"{verb.value} {self.helo_name}", verb)
        self.phase = Phase.HELLO

    def helo(self) -> None:
        """HELO, the fallback after a 5xx reply to EHLO (SMTP only)."""
        self._require(Phase.GREETED)
        if self.lmtp:
            raise LocalProtocolError("LMTP has no HELO")
        self._send(f"HELO {self.helo_name}", Command.HELO)
        self.phase = Phase.HELLO

    def starttls(self) -> None:
        self._require(Phase.READY)
        if self.tls_active:
            raise LocalProtocolError("TLS is already active")
        self._send("STARTTLS", Command.STARTTLS)
        self.phase = Phase.STARTTLS

    def tls_established(self) -> None:
        """The handshake succeeded: forget what was said in the clear; EHLO again."""
        self._require(Phase.TLS)
        self.tls_active = True
        self.capabilities = None
        self.authenticated = False  # RFC 3207 §4.2: forget all that came before TLS
        self.phase = Phase.GREETED

    def authenticate(self, mechanism: SaslMechanism) -> None:
        """AUTH with ``mechanism`` (RFC 4954), alone: the machine answers the challenges.

        Read events until ``Replied(Command.AUTH, reply)`` with a reply that is not 334:
        2xx sets ``authenticated``; otherwise ``auth_error`` tells whether we cancelled.
        The phase is READY again either way (unless the server closed).
        """
        self._require(Phase.READY)
        caps = self._caps()
        if not caps.esmtp or self._expect:
            raise LocalProtocolError("AUTH needs an idle ESMTP session")
        if self.authenticated:
            raise LocalProtocolError("already authenticated")  # RFC 4954 §4: 503
        name = mechanism.name.upper()
        if not name or any(c in name for c in " \r\n"):
            raise LocalProtocolError("bad mechanism name")
        self._mech = mechanism
        self._auth_steps = 0
        self._auth_cancelled = False
        self._auth_pending = None
        self.auth_error = None
        initial = mechanism.initial()
        line = f"AUTH {name}"
        if initial is not None:
            encoded = _b64(initial) or "="
            if len(line) + 1 + len(encoded) <= _AUTH_LINE_LIMIT:
                line += " " + encoded
            else:
                self._auth_pending = initial  # sent after the server's empty 334
        self._send(line, Command.AUTH)
        self.phase = Phase.AUTH

    def rset(self) -> None:
        self._require(Phase.READY, Phase.RECIPIENTS_DONE, Phase.FAILED)
        self._send("RSET", Command.RSET)
        self._end_transaction()
        self.phase = Phase.TRANSACTION  # until the RSET reply

    def quit(self) -> None:
        """QUIT, in any phase but TLS (a session being torn down needs no reply checks)."""
        if self.phase in (Phase.CLOSED, Phase.QUIT):
            return
        if self.phase is Phase.TLS:
            raise LocalProtocolError("QUIT during the TLS handshake")
        self._send("QUIT", Command.QUIT)
        self._end_transaction()
        self.phase = Phase.QUIT

    # --- transaction --------------------------------------------------------------

    def refusal(self, tx: Transaction) -> Reply | None:
        """Why ``tx`` cannot be sent over this session (the caller bounces), or None."""
        caps = self._caps()
        if tx.smtputf8 and not caps.smtputf8:
            return Reply(550, "5.6.7", "SMTPUTF8 is required, but was not offered")
        if caps.size and tx.size > caps.size:
            return Reply(
                552, "5.3.4", f"message size {tx.size} exceeds size limit {caps.size} of server"
            )
        return None

    def begin(self, tx: Transaction, *, reset_first: bool = False) -> None:
        """MAIL FROM and the RCPTs; with PIPELINING also DATA, in one write (RFC 2920).

        ``reset_first`` prepends RSET (a reused connection): it goes in the same write when
        the server pipelines.
        """
        self._require(Phase.READY)
        if not tx.recipients:
            raise LocalProtocolError("a transaction needs recipients")
        if self.refusal(tx) is not None:
            raise LocalProtocolError("transaction refused for this server: see refusal()")
        caps = self._caps()
        self._tx = tx
        self._next_rcpt = 0
        self._rcpt_replies = 0
        self._mail_ok = False
        self._aborted = False
        self.accepted = []
        if reset_first:
            self._send("RSET", Command.RSET)
        self._send(self._mail_line(tx, caps), Command.MAIL)
        self.phase = Phase.TRANSACTION
        if caps.pipelining:
            for i in range(len(tx.recipients)):
                self._send_rcpt(i)
            self._send("DATA", Command.DATA)

    def send_data(self) -> None:
        """DATA after every RCPT reply (without PIPELINING) when one was accepted."""
        self._require(Phase.RECIPIENTS_DONE)
        if not self.accepted:
            raise LocalProtocolError("no recipient was accepted: send RSET, not DATA")
        self._send("DATA", Command.DATA)
        self.phase = Phase.DATA

    def send_content(self, content: bytes) -> None:
        """The message (CRLF line endings, not stuffed) after a 354."""
        self._require(Phase.CONTENT)
        if not self.accepted:
            raise LocalProtocolError("no recipient was accepted: abort_content()")
        self._out += dot_stuff(content)
        self._expect_dot()

    def abort_content(self) -> None:
        """A lone ``.`` after a 354 that came although no recipient was accepted (RFC 2920)."""
        self._require(Phase.CONTENT)
        self._aborted = True
        self._out += b".\r\n"
        self._expect_dot()

    def _expect_dot(self) -> None:
        if self.lmtp and not self._aborted:
            self._expect.extend((Command.DOT, i) for i in self.accepted)
        elif not self.lmtp:
            self._expect.append((Command.DOT, None))
        self.phase = Phase.DOT if self._expect else Phase.FAILED

    def _caps(self) -> Capabilities:
        if self.capabilities is None:
            raise LocalProtocolError("no session yet")
        return self.capabilities

    def _mail_line(self, tx: Transaction, caps: Capabilities) -> str:
        parts = [f"MAIL FROM:<{tx.sender}>"]
        if caps.size is not None:
            parts.append(f"SIZE={tx.size}")
        if tx.eight_bit and caps.eightbitmime:
            parts.append("BODY=8BITMIME")
        if tx.smtputf8 and caps.smtputf8:
            parts.append("SMTPUTF8")
        if caps.dsn:
            if tx.ret:
                parts.append(f"RET={tx.ret.upper()}")
            if tx.envid:
                parts.append(f"ENVID={xtext(tx.envid)}")
        return " ".join(parts)

    def _send_rcpt(self, i: int) -> None:
        assert self._tx is not None
        rcpt = self._tx.recipients[i]
        parts = [f"RCPT TO:<{rcpt.address}>"]
        if self._caps().dsn:
            if rcpt.notify:
                parts.append("NOTIFY=" + ",".join(n.upper() for n in rcpt.notify))
            if rcpt.orcpt:
                kind, _, addr = rcpt.orcpt.partition(";")
                if addr and (kind.lower() != "rfc822" or _ascii(addr) or self._tx.smtputf8):
                    parts.append(f"ORCPT={kind};{xtext(addr)}")
        self._send(" ".join(parts), Command.RCPT, i)
        self._next_rcpt = i + 1

    def _end_transaction(self) -> None:
        self._tx = None

    # --- reply handlers (the transition table is _ON_REPLY below) --------------------

    def _on_greeting(self, reply: Reply, index: int | None) -> None:
        # A non-2xx greeting leaves us in GREETED: the caller decides (QUIT, next MX).
        self.phase = Phase.GREETED

    def _on_starttls(self, reply: Reply, index: int | None) -> None:
        if reply.code == 220:
            if self._parser.buffered or self._expect:
                # Anything after the 220 was sent in the clear by someone: refuse it.
                raise protocol_error("data after the STARTTLS reply")
            self.phase = Phase.TLS
        else:
            self.phase = Phase.READY

    def _on_auth(self, reply: Reply, index: int | None) -> None:
        mech = self._mech
        if reply.code != 334:
            self.authenticated = reply.code // 100 == 2 and not self._auth_cancelled
            self._mech = None
            self._auth_pending = None
            self.phase = Phase.READY
            return
        if mech is None or self._auth_cancelled:
            raise protocol_error("334 challenge after the AUTH exchange was cancelled")
        self._auth_steps += 1
        if self._auth_steps > AUTH_STEP_LIMIT:
            return self._auth_cancel("authentication protocol loop")
        if self._auth_pending is not None:
            response, self._auth_pending = self._auth_pending, None
        else:
            text = "".join(reply.lines).strip()
            try:
                challenge = base64.b64decode(text.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                return self._auth_cancel("malformed SASL challenge")
            try:
                response = mech.step(challenge)
            except SaslError as exc:
                return self._auth_cancel(str(exc) or "SASL mechanism failure")
        self._send(_b64(response), Command.AUTH)

    def _auth_cancel(self, why: str) -> None:
        self._auth_cancelled = True
        self.auth_error = why
        self._send("*", Command.AUTH)

    def _on_rset(self, reply: Reply, index: int | None) -> None:
        if self.phase is Phase.TRANSACTION and self._tx is None:
            self.phase = Phase.READY if reply.code // 100 == 2 else Phase.FAILED

    def _on_mail(self, reply: Reply, index: int | None) -> None:
        self._mail_ok = reply.code // 100 == 2
        if self._mail_ok:
            if not self.pipelining:
                self._send_rcpt(0)
        elif not self.pipelining:
            self.phase = Phase.FAILED

    def _on_rcpt(self, reply: Reply, index: int | None) -> None:
        assert self._tx is not None and index is not None
        if reply.code // 100 == 2 and self._mail_ok:
            self.accepted.append(index)
        self._rcpt_replies += 1
        if self.pipelining:
            return
        if self._next_rcpt < len(self._tx.recipients):
            self._send_rcpt(self._next_rcpt)
        else:
            self.phase = Phase.RECIPIENTS_DONE

    def _on_data(self, reply: Reply, index: int | None) -> None:
        self.phase = Phase.CONTENT if reply.code == 354 else Phase.FAILED

    def _on_dot(self, reply: Reply, index: int | None) -> None:
        if self._expect and self._expect[0][0] is Command.DOT:
            return  # LMTP: more per-recipient replies to come
        self._end_transaction()
        self.phase = Phase.FAILED if self._aborted else Phase.READY

    def _on_quit(self, reply: Reply, index: int | None) -> None:
        self._close()


def _helo(conn: ClientConnection, reply: Reply, index: int | None) -> None:
    if reply.code // 100 == 2:
        conn.capabilities = NO_CAPABILITIES
        conn.phase = Phase.READY
    else:
        conn.phase = Phase.GREETED


def _ehlo(conn: ClientConnection, reply: Reply, index: int | None) -> None:
    if reply.code // 100 == 2:
        conn.capabilities = Capabilities.parse(reply)
        conn.phase = Phase.READY
    else:
        conn.phase = Phase.GREETED  # the caller may fall back to HELO, or QUIT


# The transition table: the command a reply answers -> what the reply does to the session.
_ON_REPLY = {
    Command.GREETING: ClientConnection._on_greeting,
    Command.EHLO: _ehlo,
    Command.LHLO: _ehlo,
    Command.HELO: _helo,
    Command.STARTTLS: ClientConnection._on_starttls,
    Command.AUTH: ClientConnection._on_auth,
    Command.RSET: ClientConnection._on_rset,
    Command.MAIL: ClientConnection._on_mail,
    Command.RCPT: ClientConnection._on_rcpt,
    Command.DATA: ClientConnection._on_data,
    Command.DOT: ClientConnection._on_dot,
    Command.QUIT: ClientConnection._on_quit,
}
