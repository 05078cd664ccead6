"""The server side of SMTP as a sans-I/O state machine (RFC 5321, 2920, 3030, 3207, 4954).

Owns :class:`ServerConnection` and its transition tables. Bytes go in with
``receive_data()`` (``b""`` = EOF), events come out of ``next_event()``, and replies go
out as bytes from ``send(reply)``. No sockets, no TLS, no clock.

Invariants:

* every event that wants a reply pauses the connection (``PAUSED``) until ``send()``;
  the reply's code then moves the session along ``_TRANSITIONS`` (the only place the
  phase changes in answer to a reply); ``_REFUSALS`` says which commands each phase
  refuses. A 421 reply always ends the session;
* pipelining is natural: keep calling ``next_event()``, collect the reply bytes, and
  write them all when it returns ``NEED_DATA`` (one write per batch, RFC 2920);
* bad network input never raises: it becomes a :class:`ProtocolError` event with the
  precise reply; API misuse raises :class:`LocalProtocolError`;
* STARTTLS injection defence: input buffered behind STARTTLS is dropped when the 220 is
  sent, and ``tls_established()`` forgets HELO, the transaction and authentication;
* bare-newline smuggling defence: see ``data.py``; in command mode a line ended by a bare
  LF (or holding a bare CR) closes the session when ``forbid_bare_newline`` is set.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from ironpost.protocol import replies
from ironpost.protocol.commands import (
    AUTH_LINE_LIMIT,
    MAX_LINE_LIMIT,
    is_http,
    line_limit,
    parse_auth_args,
    parse_bdat_args,
    split_path_args,
    split_verb,
)
from ironpost.protocol.data import DataFramer, take
from ironpost.protocol.errors import LocalProtocolError, ParamError, RemoteProtocolError
from ironpost.protocol.events import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    BdatChunk,
    ConnectionClosed,
    Data,
    EarlyTalker,
    Event,
    Expn,
    Helo,
    Help,
    Mail,
    MessageData,
    MessageEnd,
    Noop,
    ProtocolError,
    Quit,
    Rcpt,
    Rset,
    Sentinel,
    StartTls,
    Vrfy,
)
from ironpost.protocol.grammar import (
    MailParams,
    parse_mail_params,
    parse_path,
    parse_rcpt_params,
    unsupported_option,
)
from ironpost.protocol.replies import Reply
from ironpost.protocol.session import Phase, ServerOptions, ehlo_keywords


class _To(enum.Enum):
    """What a reply does to the session (targets of ``_TRANSITIONS``)."""

    KEEP = enum.auto()
    RESET = enum.auto()  # end the transaction (READY, or FRESH without HELO)
    HELLO = enum.auto()  # HELO/EHLO accepted: new session state, no transaction
    MAIL = enum.auto()
    RCPT = enum.auto()
    DATA = enum.auto()
    CHUNKING = enum.auto()
    TLS = enum.auto()
    AUTH = enum.auto()  # 334: the SASL exchange continues
    AUTHENTICATED = enum.auto()  # 235
    END_AUTH = enum.auto()  # leave a SASL exchange, if in one
    CLOSE = enum.auto()


def _ok(on_accept: _To, on_refuse: _To = _To.KEEP) -> Callable[[int], _To]:
    return lambda code: on_accept if code < 400 else on_refuse


def _sasl(code: int) -> _To:
    return _To.AUTH if code == 334 else _To.AUTHENTICATED if code == 235 else _To.END_AUTH


# The transition table: event answered -> (reply code -> effect). Any 421 closes first.
_TRANSITIONS: dict[type[Event], Callable[[int], _To]] = {
    EarlyTalker: lambda code: _To.CLOSE,  # carrying on is send_greeting()'s job
    Helo: _ok(_To.HELLO),
    Mail: _ok(_To.MAIL),
    Rcpt: _ok(_To.RCPT),
    Data: lambda code: _To.DATA if code == 354 else _To.KEEP,
    MessageEnd: lambda code: _To.RESET,
    BdatChunk: _ok(_To.CHUNKING, _To.RESET),  # RFC 3030: a failed chunk ends the transaction
    Rset: _ok(_To.RESET),
    Noop: _ok(_To.KEEP),
    Vrfy: _ok(_To.KEEP),
    Expn: _ok(_To.KEEP),
    Help: _ok(_To.KEEP),
    Quit: lambda code: _To.CLOSE,
    StartTls: lambda code: _To.TLS if code == 220 else _To.KEEP,
    Auth: _sasl,
    AuthResponse: _sasl,
    ProtocolError: lambda code: _To.END_AUTH,  # a bad line aborts SASL; close: as 421
}

_IN_TRANSACTION = (Phase.MAIL, Phase.RCPT, Phase.CHUNKING)
# Sequencing: which phases refuse a command, and with what. (MAIL before HELO depends on
# helo_required and is checked in _mail.)
_REFUSALS: dict[str, dict[Phase, Reply]] = {
    "MAIL": dict.fromkeys(_IN_TRANSACTION, replies.NESTED_MAIL),
    "RCPT": {
        Phase.FRESH: replies.NEED_MAIL,
        Phase.READY: replies.NEED_MAIL,
        Phase.CHUNKING: replies.BAD_SEQUENCE,
    },
    "DATA": {
        Phase.FRESH: replies.NEED_RCPT,
        Phase.READY: replies.NEED_RCPT,
        Phase.MAIL: replies.NO_VALID_RECIPIENTS,
        Phase.CHUNKING: replies.BAD_SEQUENCE,
    },
    "BDAT": {
        Phase.FRESH: replies.NEED_RCPT,
        Phase.READY: replies.NEED_RCPT,
        Phase.MAIL: replies.NO_VALID_RECIPIENTS,
    },
    "STARTTLS": dict.fromkeys(_IN_TRANSACTION, replies.TRANSACTION_IN_PROGRESS),
    "AUTH": {
        Phase.FRESH: replies.NEED_HELO,
        **dict.fromkeys(_IN_TRANSACTION, replies.TRANSACTION_IN_PROGRESS),
    },
}

_NO_REPLY = (MessageData, ConnectionClosed)


class ServerConnection:
    """One SMTP server session, from greeting to close."""

    def __init__(self, options: ServerOptions | None = None) -> None:
        self.options = options if options is not None else ServerOptions()
        self._buf = bytearray()
        self._eof = False
        self._phase = Phase.GREETING
        self._awaiting: Event | None = None  # the event the next send() answers
        self._then: Event | None = None  # an end event due right after a MessageData
        self._early_reported = False
        self._greeting_refused = False  # 554 greeting: only QUIT is served (RFC 5321 3.1)
        self._skipping = False  # discarding the rest of an over-long command line
        self._tls_active = self.options.tls_active
        self._authenticated = False
        self._helo: Helo | None = None
        self._mail_params: MailParams | None = None
        self._rcpts = 0
        self._framer: DataFramer | None = None
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat_size = 0
        self._bdat_refusal: Reply | None = None
        self._bdat_prev = Phase.READY
        self._bdat_total = 0

    # -- state the application may read ------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def closed(self) -> bool:
        return self._phase is Phase.CLOSED

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @property
    def helo(self) -> Helo | None:
        return self._helo

    @property
    def rcpt_count(self) -> int:
        return self._rcpts

    def has_pending_input(self) -> bool:
        """Unread client input is buffered (for reject_unauth_pipelining)."""
        return bool(self._buf)

    def ehlo_keywords(self) -> list[str]:
        """The EHLO extension lines, in Postfix's order."""
        return ehlo_keywords(self.options, tls_active=self._tls_active)

    # -- input ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client; ``b""`` means the client closed its side."""
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data() after EOF")
            return
        if not data:
            self._eof = True
        elif self._phase is not Phase.CLOSED and self._phase is not Phase.TLS:
            # In TLS phase, plaintext sent before the handshake is dropped (injection).
            self._buf += data

    def next_event(self) -> Event | Sentinel:
        if self._phase is Phase.CLOSED:
            return CLOSED
        if self._awaiting is not None:
            return PAUSED
        if self._then is not None:
            event, self._then = self._then, None
            return self._emit(event)
        phase = self._phase
        if phase is Phase.DATA:
            return self._next_data()
        if phase is Phase.BDAT:
            return self._next_bdat()
        if phase is Phase.GREETING:
            if self._buf and not self._early_reported:
                self._early_reported = True
                return self._emit(EarlyTalker())
            return self._lost() if self._eof else NEED_DATA
        if phase is Phase.TLS:
            return self._lost() if self._eof else NEED_DATA
        return self._next_line()

    # -- output --------------------------------------------------------------------

    def send_greeting(self, reply: Reply) -> bytes:
        """The 220 banner (or 554/421 to refuse the session). Once, before anything else."""
        if self._phase is not Phase.GREETING:
            raise LocalProtocolError("the greeting was already sent")
        self._awaiting = None  # an EarlyTalker the application chose to forgive
        self._phase = Phase.FRESH
        if reply.code == 421:
            self._close()
        elif reply.code >= 500:
            self._greeting_refused = True
        return reply.to_bytes()

    def send(self, reply: Reply) -> bytes:
        """Answer the event that paused the connection; returns the wire bytes."""
        event = self._awaiting
        if event is None:
            raise LocalProtocolError("no event is waiting for a reply")
        self._awaiting = None
        if reply.code == 421 or (isinstance(event, ProtocolError) and event.close):
            self._close()
        else:
            self._apply(_TRANSITIONS[type(event)](reply.code), event)
        return reply.to_bytes()

    def tls_established(self) -> None:
        """The handshake after our 220 succeeded: start a new, encrypted session."""
        if self._phase is not Phase.TLS:
            raise LocalProtocolError("tls_established() without an accepted STARTTLS")
        self._buf.clear()
        self._tls_active = True
        self._authenticated = False
        self._helo = None
        self._reset()

    def begin_auth_exchange(self) -> None:
        """Treat the following lines as SASL responses (a 334 reply does this too)."""
        if self._phase not in (Phase.FRESH, Phase.READY, Phase.AUTH):
            raise LocalProtocolError("AUTH exchange outside the command phase")
        self._phase = Phase.AUTH

    def end_auth_exchange(self) -> None:
        """Back to commands (any reply to AUTH other than 334 does this too)."""
        if self._phase is Phase.AUTH:
            self._reset()

    # -- transitions -------------------------------------------------------------------

    def _apply(self, to: _To, event: Event) -> None:
        if to is _To.KEEP:
            return
        if to is _To.RESET or (to is _To.END_AUTH and self._phase is Phase.AUTH):
            self._reset()
        elif to is _To.HELLO:
            assert isinstance(event, Helo)
            self._helo = event
            self._reset()
        elif to is _To.MAIL:
            assert isinstance(event, Mail)
            self._mail_params = event.params
            self._rcpts = 0
            self._bdat_total = 0
            self._phase = Phase.MAIL
        elif to is _To.RCPT:
            self._rcpts += 1
            self._phase = Phase.RCPT
        elif to is _To.DATA:
            o = self.options
            self._framer = DataFramer(
                max_size=o.max_message_size, forbid_bare_newline=o.forbid_bare_newline
            )
            self._phase = Phase.DATA
        elif to is _To.CHUNKING:
            self._phase = Phase.CHUNKING
        elif to is _To.TLS:
            self._buf.clear()  # pipelined plaintext behind STARTTLS is never obeyed
            self._phase = Phase.TLS
        elif to is _To.AUTH:
            self._phase = Phase.AUTH
        elif to is _To.AUTHENTICATED:
            self._authenticated = True
            self._reset()
        elif to is _To.CLOSE:
            self._close()

    def _reset(self) -> None:
        self._mail_params = None
        self._rcpts = 0
        self._bdat_total = 0
        self._framer = None
        self._phase = Phase.READY if self._helo is not None else Phase.FRESH

    def _close(self) -> None:
        self._phase = Phase.CLOSED
        self._buf.clear()
        self._then = None

    def _emit(self, event: Event) -> Event:
        if not isinstance(event, _NO_REPLY):
            self._awaiting = event
        return event

    def _error(self, reply: Reply) -> Event:
        return self._emit(ProtocolError(reply))

    def _fatal(self, reply: Reply) -> Event:
        self._buf.clear()
        return self._emit(ProtocolError(reply, close=True))

    def _lost(self) -> Event:
        self._close()
        return ConnectionClosed()

    # -- command mode ------------------------------------------------------------------

    def _next_line(self) -> Event | Sentinel:
        buf = self._buf
        nl = buf.find(b"\n")
        if nl < 0:
            if self._skipping:
                buf.clear()
            elif len(buf) > self._limit(buf):
                self._skipping = True
                buf.clear()
            return self._lost() if self._eof else NEED_DATA
        line = bytes(buf[: nl + 1])
        del buf[: nl + 1]
        if self._skipping:
            self._skipping = False
            return self._error(replies.LINE_TOO_LONG)
        if len(line) > self._limit(line):
            return self._error(replies.LINE_TOO_LONG)
        crlf = line.endswith(b"\r\n")
        if not crlf and self.options.forbid_bare_newline:
            return self._fatal(replies.BARE_NEWLINE)
        raw = line[:-2] if crlf else line[:-1]
        if b"\0" in raw:
            return self._error(replies.NUL_IN_COMMAND)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(replies.BAD_UTF8)
        if "\r" in text:
            if self.options.forbid_bare_newline:
                return self._fatal(replies.BARE_NEWLINE)
            return self._error(replies.CR_IN_COMMAND)
        if self._phase is Phase.AUTH:
            return self._emit(AuthResponse(text))
        return self._command(text)

    def _limit(self, head: bytes | bytearray) -> int:
        if self._phase is Phase.AUTH:
            return AUTH_LINE_LIMIT
        return line_limit(head) if len(head) >= 5 else MAX_LINE_LIMIT

    def _command(self, text: str) -> Event | Sentinel:
        verb, arg, has_arg = split_verb(text)
        handler = _COMMANDS.get(verb)
        if handler is None:
            if is_http(verb, has_arg):
                return self._fatal(replies.HTTP_COMMAND)
            return self._error(replies.BAD_SYNTAX if not text else replies.UNKNOWN_COMMAND)
        if self._greeting_refused and verb != "QUIT":
            return self._error(replies.NO_SERVICE)
        return handler(self, verb, arg)

    def _refusal(self, verb: str) -> Reply | None:
        return _REFUSALS[verb].get(self._phase)

    def _helo_cmd(self, verb: str, arg: str) -> Event:
        host = arg.strip()
        if not host:
            return self._error(replies.EHLO_SYNTAX if verb == "EHLO" else replies.HELO_SYNTAX)
        return self._emit(Helo(host, verb == "EHLO"))

    def _mail(self, verb: str, arg: str) -> Event:
        if self._phase is Phase.FRESH and self.options.helo_required:
            return self._error(replies.NEED_HELO)
        refusal = self._refusal(verb)
        if refusal is not None:
            return self._error(refusal)
        split = split_path_args(arg, "FROM:")
        if split is None:
            return self._error(replies.MAIL_SYNTAX)
        o = self.options
        try:
            params = parse_mail_params(split[1])
            if params.smtputf8 and not o.smtputf8:
                raise ParamError(unsupported_option("SMTPUTF8"))
            if params.body == "BINARYMIME" and not o.chunking:
                raise ParamError(unsupported_option("BODY"))
            if params.auth is not None and not o.auth_mechanisms:
                raise ParamError(unsupported_option("AUTH"))
            path = parse_path(split[0], smtputf8=params.smtputf8)
        except RemoteProtocolError as e:
            return self._error(e.reply)
        if o.max_message_size and params.size is not None and params.size > o.max_message_size:
            return self._error(replies.SIZE_TOO_BIG)
        return self._emit(Mail(path, params))

    def _rcpt(self, verb: str, arg: str) -> Event:
        refusal = self._refusal(verb)
        if refusal is not None:
            return self._error(refusal)
        split = split_path_args(arg, "TO:")
        if split is None:
            return self._error(replies.RCPT_SYNTAX)
        if self.options.max_recipients and self._rcpts >= self.options.max_recipients:
            return self._error(replies.TOO_MANY_RECIPIENTS)
        smtputf8 = self._mail_params is not None and self._mail_params.smtputf8
        try:
            params = parse_rcpt_params(split[1])
            path = parse_path(split[0], smtputf8=smtputf8, allow_postmaster=True)
        except RemoteProtocolError as e:
            return self._error(e.reply)
        if path.null:
            return self._error(replies.BAD_ADDRESS_SYNTAX)
        return self._emit(Rcpt(path, params))

    def _data(self, verb: str, arg: str) -> Event:
        if arg.strip():
            return self._error(replies.DATA_SYNTAX)
        refusal = self._refusal(verb)
        if refusal is not None:
            return self._error(refusal)
        if self._mail_params is not None and self._mail_params.body == "BINARYMIME":
            return self._error(replies.BINARYMIME_NEEDS_BDAT)
        return self._emit(Data())

    def _bdat(self, verb: str, arg: str) -> Event | Sentinel:
        if not self.options.chunking:
            return self._error(replies.UNKNOWN_COMMAND)
        parsed = parse_bdat_args(arg)
        if parsed is None:
            # Without a size the chunk's end is unknowable: its octets would be read as
            # commands. Hang up rather than guess.
            return self._fatal(replies.BDAT_SYNTAX)
        self._bdat_left, self._bdat_last = parsed
        self._bdat_size = self._bdat_left
        self._bdat_refusal = self._refusal(verb)  # the chunk is consumed all the same
        self._bdat_prev = self._phase
        self._phase = Phase.BDAT
        return self._next_bdat()

    def _simple(self, verb: str, arg: str) -> Event:
        if verb == "RSET":
            return self._error(replies.RSET_SYNTAX) if arg.strip() else self._emit(Rset())
        if verb == "NOOP":
            return self._emit(Noop())
        if verb == "QUIT":
            return self._emit(Quit())
        if verb == "HELP":
            return self._emit(Help())
        target = arg.strip()
        if verb == "VRFY":
            return self._emit(Vrfy(target)) if target else self._error(replies.VRFY_SYNTAX)
        return self._emit(Expn(target)) if target else self._error(replies.EXPN_SYNTAX)

    def _starttls(self, verb: str, arg: str) -> Event:
        if arg.strip():
            return self._error(replies.STARTTLS_SYNTAX)
        if self._tls_active:
            return self._error(replies.TLS_ALREADY)
        if not self.options.tls_available:
            return self._error(replies.UNKNOWN_COMMAND)
        refusal = self._refusal(verb)
        return self._error(refusal) if refusal is not None else self._emit(StartTls())

    def _auth(self, verb: str, arg: str) -> Event:
        o = self.options
        if not o.auth_mechanisms:
            return self._error(replies.AUTH_NOT_ENABLED)
        if self._authenticated:
            return self._error(replies.ALREADY_AUTHENTICATED)
        refusal = self._refusal(verb)
        if refusal is not None:
            return self._error(refusal)
        if o.auth_tls_only and not self._tls_active:
            return self._error(replies.AUTH_NEEDS_TLS)
        parsed = parse_auth_args(arg)
        if parsed is None:
            return self._error(replies.AUTH_SYNTAX)
        if parsed[0] not in {m.upper() for m in o.auth_mechanisms}:
            return self._error(replies.AUTH_MECHANISM_UNSUPPORTED)
        return self._emit(Auth(*parsed))

    # -- body modes ----------------------------------------------------------------------

    def _next_data(self) -> Event | Sentinel:
        framer = self._framer
        assert framer is not None
        while True:
            framed = framer.feed(self._buf)
            if framed is None:
                return self._lost() if self._eof else NEED_DATA
            if framed.bare_newline:
                return self._fatal(replies.BARE_NEWLINE)
            if framed.done:
                end = MessageEnd(framer.error)
                if framed.chunk:
                    self._then = end
                    return MessageData(framed.chunk)
                return self._emit(end)
            if framed.chunk:
                return MessageData(framed.chunk)

    def _next_bdat(self) -> Event | Sentinel:
        limit = self.options.max_message_size
        while self._bdat_left:
            if not self._buf:
                return self._lost() if self._eof else NEED_DATA
            chunk = take(self._buf, self._bdat_left)
            self._bdat_left -= len(chunk)
            if self._bdat_refusal is not None or (limit and self._bdat_total > limit):
                continue  # discarded: refused chunk, or the message is already too big
            self._bdat_total += len(chunk)
            if limit and self._bdat_total > limit:
                continue
            if not self._bdat_left:
                self._then = self._bdat_end()
            return MessageData(chunk)
        return self._emit(self._bdat_end())

    def _bdat_end(self) -> Event:
        if self._bdat_refusal is not None:
            self._phase = self._bdat_prev
            return ProtocolError(self._bdat_refusal)
        limit = self.options.max_message_size
        if limit and self._bdat_total > limit:
            # Rejected at the chunk that overflowed, LAST or not: the transaction ends.
            return MessageEnd(replies.MESSAGE_TOO_BIG)
        if self._bdat_last:
            return MessageEnd(None)
        return BdatChunk(self._bdat_size, False)


_Handler = Callable[[ServerConnection, str, str], Event | Sentinel]
_COMMANDS: dict[str, _Handler] = {
    "HELO": ServerConnection._helo_cmd,
    "EHLO": ServerConnection._helo_cmd,
    "MAIL": ServerConnection._mail,
    "RCPT": ServerConnection._rcpt,
    "DATA": ServerConnection._data,
    "BDAT": ServerConnection._bdat,
    "RSET": ServerConnection._simple,
    "NOOP": ServerConnection._simple,
    "QUIT": ServerConnection._simple,
    "HELP": ServerConnection._simple,
    "VRFY": ServerConnection._simple,
    "EXPN": ServerConnection._simple,
    "STARTTLS": ServerConnection._starttls,
    "AUTH": ServerConnection._auth,
}
