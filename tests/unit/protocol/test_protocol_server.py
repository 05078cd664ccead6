"""The server state machine: sessions, sequencing, limits, defences. Bytes only."""

from __future__ import annotations

import pytest
from protocol_driver import Driver

from ironpost.protocol import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    ConnectionClosed,
    EarlyTalker,
    Helo,
    LocalProtocolError,
    Mail,
    Noop,
    Phase,
    ProtocolError,
    Rcpt,
    Reply,
    ServerConnection,
    ServerOptions,
    replies,
)

EHLO = b"EHLO client.example\r\n"
ENVELOPE = EHLO + b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"


def test_full_session() -> None:
    d = Driver()
    d.feed(EHLO)
    d.feed(b"MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME\r\n")
    d.feed(b"RCPT TO:<c@d.example> NOTIFY=FAILURE\r\n")
    d.feed(b"DATA\r\n")
    assert d.conn.phase is Phase.DATA
    d.feed(b"Subject: x\r\n\r\nhello\r\n.\r\n")
    d.feed(b"NOOP\r\nRSET\r\nVRFY bob\r\nHELP\r\nQUIT\r\n")
    assert d.kinds() == [
        "Helo", "Mail", "Rcpt", "Data", "MessageEnd", "Noop", "Rset", "Vrfy", "Help", "Quit",
    ]  # fmt: skip
    mail = d.events[1]
    assert isinstance(mail, Mail) and mail.path.address == "a@b.example"
    assert mail.params.size == 100 and mail.params.body == "8BITMIME"
    assert d.body == b"Subject: x\r\n\r\nhello\r\n"
    assert d.codes() == [220, 250, 250, 250, 354, 250, 250, 250, 502, 214, 221]
    assert d.conn.closed and d.conn.next_event() is CLOSED


def test_pipelined_envelope_in_one_packet_and_pausing() -> None:
    conn = ServerConnection()
    out = conn.send_greeting(Reply(220, None, "hi"))
    conn.receive_data(ENVELOPE + b"RCPT TO:<e@f.example>\r\nDATA\r\n")
    seen = []
    while (ev := conn.next_event()) is not NEED_DATA:
        assert conn.next_event() is PAUSED  # nothing more until the reply
        assert not isinstance(ev, type(NEED_DATA))
        seen.append(type(ev).__name__)
        out += conn.send(replies.START_DATA if seen[-1] == "Data" else replies.OK)
    assert seen == ["Helo", "Mail", "Rcpt", "Rcpt", "Data"]
    assert conn.rcpt_count == 2 and conn.phase is Phase.DATA
    assert out.count(b"\r\n") == 6


def test_has_pending_input() -> None:
    conn = ServerConnection()
    conn.send_greeting(Reply(220, None, "hi"))
    conn.receive_data(EHLO + b"MAIL FROM:<a@b.example>\r\n")
    assert isinstance(conn.next_event(), Helo) and conn.has_pending_input()
    conn.send(replies.OK)
    assert isinstance(conn.next_event(), Mail) and not conn.has_pending_input()


def test_send_without_event_is_local_error() -> None:
    conn = ServerConnection()
    with pytest.raises(LocalProtocolError):
        conn.send(replies.OK)
    conn.send_greeting(Reply(220, None, "hi"))
    with pytest.raises(LocalProtocolError):
        conn.send_greeting(Reply(220, None, "hi"))


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (b"MAIL FROM:<a@b.example>\r\n", replies.NEED_HELO),
        (EHLO + b"RCPT TO:<c@d.example>\r\n", replies.NEED_MAIL),
        (EHLO + b"DATA\r\n", replies.NEED_RCPT),
        (EHLO + b"MAIL FROM:<a@b.example>\r\nDATA\r\n", replies.NO_VALID_RECIPIENTS),
        (EHLO + b"MAIL FROM:<a@b.example>\r\nMAIL FROM:<a@b.example>\r\n", replies.NESTED_MAIL),
        (EHLO + b"FOO bar\r\n", replies.UNKNOWN_COMMAND),
        (EHLO + b"\r\n", replies.BAD_SYNTAX),
        (b"HELO\r\n", replies.HELO_SYNTAX),
        (b"EHLO   \r\n", replies.EHLO_SYNTAX),
        (EHLO + b"MAIL TO:<a@b.example>\r\n", replies.MAIL_SYNTAX),
        (EHLO + b"MAIL FROM:<a@b.example>SIZE=1\r\n", replies.MAIL_SYNTAX),
        (EHLO + b"MAIL FROM:<a@b\r\n", replies.MAIL_SYNTAX),
        (EHLO + b"MAIL FROM:<a@>\r\n", replies.BAD_ADDRESS_SYNTAX),
        (EHLO + b"MAIL FROM:<a@b.example> SIZE=99999999999\r\n", replies.SIZE_TOO_BIG),
        (EHLO + b"MAIL FROM:<a@b.example> AUTH=<>\r\n", Reply(555, "5.5.4",
                                                             "Unsupported option: AUTH")),
        (EHLO + b"MAIL FROM:<a@b.example>\r\nRCPT TO:<>\r\n", replies.BAD_ADDRESS_SYNTAX),
        (ENVELOPE + b"RCPT TO:<j\xc3\xb6rg@d.example>\r\n", replies.UTF8_NOT_NEGOTIATED),
        (EHLO + b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<c@d.example>\r\n"
         b"DATA\r\n", replies.BINARYMIME_NEEDS_BDAT),
        (EHLO + b"STARTTLS\r\n", replies.UNKNOWN_COMMAND),  # not offered
        (EHLO + b"AUTH PLAIN\r\n", replies.AUTH_NOT_ENABLED),
        (EHLO + b"DATA x\r\n", replies.DATA_SYNTAX),
        (EHLO + b"VRFY\r\n", replies.VRFY_SYNTAX),
    ],
)  # fmt: skip
def test_protocol_errors(data: bytes, reply: Reply) -> None:
    d = Driver(ServerOptions(helo_required=True))
    d.feed(data)
    errors = d.errors()
    assert [e.reply for e in errors] == [reply] and not errors[0].close
    assert not d.conn.closed
    d.feed(b"NOOP\r\n")  # the conversation goes on
    assert isinstance(d.events[-1], Noop)


def test_mail_space_after_colon_and_bare_address() -> None:
    d = Driver()
    d.feed(EHLO + b"MAIL FROM: <a@b.example>\r\nRCPT TO:c@d.example\r\nRCPT TO:<Postmaster>\r\n")
    mail, rcpt, pm = d.events[1:]
    assert isinstance(mail, Mail) and mail.path.address == "a@b.example"
    assert isinstance(rcpt, Rcpt) and rcpt.path.address == "c@d.example"
    assert isinstance(pm, Rcpt) and pm.path.local == "Postmaster"


def test_quoted_local_part_with_angle_bracket_and_params() -> None:
    d = Driver()
    d.feed(EHLO + b'MAIL FROM:<"a>b"@x.example> SIZE=5\r\n')
    mail = d.events[1]
    assert isinstance(mail, Mail) and mail.path.local == "a>b" and mail.params.size == 5


def test_smtputf8_transaction() -> None:
    d = Driver()
    d.feed(EHLO + "MAIL FROM:<jörg@b.example> SMTPUTF8\r\nRCPT TO:<用户@例子.广告>\r\n".encode())
    assert d.kinds() == ["Helo", "Mail", "Rcpt"]
    d2 = Driver(ServerOptions(smtputf8=False))
    d2.feed(EHLO + b"MAIL FROM:<a@b.example> SMTPUTF8\r\n")
    assert d2.errors()[0].reply.code == 555


def test_too_many_recipients() -> None:
    d = Driver(ServerOptions(max_recipients=2))
    d.feed(ENVELOPE + b"RCPT TO:<x@d.example>\r\nRCPT TO:<y@d.example>\r\n")
    assert [e.reply for e in d.errors()] == [replies.TOO_MANY_RECIPIENTS]
    assert d.conn.rcpt_count == 2


def test_rejected_rcpt_does_not_count() -> None:
    d = Driver(overrides={Rcpt: Reply(550, "5.1.1", "no such user")})
    d.feed(ENVELOPE + b"DATA\r\n")
    assert d.conn.rcpt_count == 0
    assert [e.reply for e in d.errors()] == [replies.NO_VALID_RECIPIENTS]


@pytest.mark.parametrize("total", [505, 511, 512])
def test_command_line_limit_ok(total: int) -> None:
    d = Driver()
    d.feed(b"NOOP " + b"x" * (total - 7) + b"\r\n")
    assert d.kinds() == ["Noop"]


def test_command_line_too_long_then_continues() -> None:
    d = Driver()
    d.feed(b"NOOP " + b"x" * 506 + b"\r\n")  # 513 octets
    d.feed(b"NOOP " + b"x" * 5000)  # no line end yet: not buffered without bound
    assert len(d.conn._buf) == 0
    d.feed(b"x" * 100 + b"\r\nNOOP\r\n")
    assert [e.reply for e in d.errors()] == [replies.LINE_TOO_LONG] * 2
    assert d.kinds()[-1] == "Noop" and not d.conn.closed


def test_mail_line_may_carry_long_parameters() -> None:
    envid = "E" * 100
    orcpt = "rfc822;" + "o" * 60 + "@x.example"
    d = Driver(ServerOptions(auth_mechanisms=("PLAIN",)))
    d.feed(EHLO + f"MAIL FROM:<a@b.example> RET=HDRS ENVID={envid} AUTH=<>\r\n".encode())
    line = f"RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT={orcpt}" + " " * 500
    d.feed(line.encode() + b"\r\n")
    assert len(line) > 512 and d.kinds() == ["Helo", "Mail", "Rcpt"]
    d.feed(b"RCPT TO:<c@d.example> " + b" " * 2600 + b"\r\n")
    assert d.errors()[-1].reply == replies.LINE_TOO_LONG


def test_nul_and_bad_utf8_and_bare_cr() -> None:
    d = Driver(ServerOptions(forbid_bare_newline=False))
    d.feed(b"NOOP\x00\r\nNOOP \xff\xfe\r\nNO\rOP\r\nNOOP\r\n")
    assert [e.reply for e in d.errors()] == [
        replies.NUL_IN_COMMAND,
        replies.BAD_UTF8,
        replies.CR_IN_COMMAND,
    ]
    assert d.kinds()[-1] == "Noop"


@pytest.mark.parametrize(
    "line", [b"GET / HTTP/1.0", b"POST /x HTTP/1.1", b"head / HTTP/1.0", b"CONNECT a:25 HTTP/1.1",
             b"PUT /x HTTP/1.1", b"Host: mx.example", b"User-Agent: curl/8"],
)  # fmt: skip
def test_http_request_closes(line: bytes) -> None:
    d = Driver()
    d.feed(line + b"\r\nNOOP\r\n")
    assert d.kinds() == ["ProtocolError"]
    assert d.errors()[0].reply == replies.HTTP_COMMAND and d.errors()[0].close
    assert d.conn.closed


def test_bare_lf_command_closes_when_forbidden() -> None:
    d = Driver()
    d.feed(b"NOOP\nNOOP\r\n")
    assert d.errors()[0].reply == replies.BARE_NEWLINE and d.conn.closed
    assert d.kinds() == ["ProtocolError"]
    lenient = Driver(ServerOptions(forbid_bare_newline=False))
    lenient.feed(b"EHLO c.example\nNOOP\n")
    assert lenient.kinds() == ["Helo", "Noop"]


def test_early_talker() -> None:
    conn = ServerConnection()
    conn.receive_data(b"EHLO x\r\n")
    ev = conn.next_event()
    assert isinstance(ev, EarlyTalker) and conn.next_event() is PAUSED
    assert conn.send(replies.EARLY_TALKER).startswith(b"554 ")
    assert conn.closed and conn.next_event() is CLOSED


def test_early_talker_forgiven_by_greeting() -> None:
    conn = ServerConnection()
    conn.receive_data(b"EHLO x\r\n")
    assert isinstance(conn.next_event(), EarlyTalker)
    conn.send_greeting(Reply(220, None, "hi"))
    assert isinstance(conn.next_event(), Helo)


def test_refused_greeting_serves_only_quit() -> None:
    d = Driver(greet=False)
    d.out += d.conn.send_greeting(Reply(554, "5.7.1", "go away"))
    d.feed(EHLO + b"QUIT\r\n")
    assert d.kinds() == ["ProtocolError", "Quit"] and d.errors()[0].reply == replies.NO_SERVICE


def test_421_closes_and_eof() -> None:
    d = Driver(overrides={Helo: replies.SHUTTING_DOWN})
    d.feed(EHLO + b"NOOP\r\n")
    assert d.kinds() == ["Helo"] and d.conn.closed
    e = Driver()
    e.feed(b"NOOP\r\nNOO")
    e.feed(b"")
    assert e.kinds() == ["Noop", "ConnectionClosed"] and e.conn.closed
    assert isinstance(e.events[-1], ConnectionClosed)


TLS = ServerOptions(tls_available=True)


def test_starttls_injection_defence() -> None:
    d = Driver(TLS)
    d.feed(EHLO)
    assert "STARTTLS" in d.conn.ehlo_keywords()
    d.feed(b"STARTTLS\r\nMAIL FROM:<a@b.example>\r\n")
    assert d.kinds() == ["Helo", "StartTls"] and d.conn.phase is Phase.TLS
    d.feed(b"RCPT TO:<x@y.example>\r\n")  # plaintext before the handshake: dropped too
    d.conn.tls_established()
    assert d.conn.tls_active and d.conn.helo is None
    assert "STARTTLS" not in d.conn.ehlo_keywords()
    d.feed(b"MAIL FROM:<a@b.example>\r\n")
    assert d.kinds()[-1] == "Mail"  # helo not required by default: a fresh transaction
    strict = Driver(ServerOptions(tls_available=True, helo_required=True))
    strict.feed(EHLO + b"STARTTLS\r\n")
    strict.conn.tls_established()
    strict.feed(b"MAIL FROM:<a@b.example>\r\nSTARTTLS\r\nEHLO c.example\r\n")
    assert [e.reply for e in strict.errors()] == [replies.NEED_HELO, replies.TLS_ALREADY]
    assert strict.kinds()[-1] == "Helo"


def test_starttls_refused_keeps_buffer_and_in_transaction() -> None:
    d = Driver(TLS, overrides={type(None): replies.OK})
    d.feed(ENVELOPE + b"STARTTLS\r\n")
    assert d.errors()[0].reply == replies.TRANSACTION_IN_PROGRESS
    with pytest.raises(LocalProtocolError):
        d.conn.tls_established()


def test_auth_exchange() -> None:
    opts = ServerOptions(auth_mechanisms=("PLAIN", "LOGIN"))
    d = Driver(opts)
    d.feed(EHLO)
    assert "AUTH PLAIN LOGIN" in d.conn.ehlo_keywords()
    d.feed(b"AUTH plain\r\ndGVzdAB0ZXN0AHRlc3Q=\r\nAUTH PLAIN\r\n")
    auth, resp = d.events[1], d.events[2]
    assert isinstance(auth, Auth) and auth == Auth("PLAIN", None)
    assert isinstance(resp, AuthResponse) and resp.line == "dGVzdAB0ZXN0AHRlc3Q="
    assert d.conn.authenticated
    assert d.errors()[0].reply == replies.ALREADY_AUTHENTICATED
    d.feed(b"AUTH CRAM-MD5\r\n")
    e = Driver(opts)
    e.feed(EHLO + b"AUTH GSSAPI\r\nAUTH PLAIN AGZvbwBiYXI=\r\n")
    assert e.errors()[0].reply == replies.AUTH_MECHANISM_UNSUPPORTED
    tls_only = Driver(ServerOptions(auth_mechanisms=("PLAIN",), auth_tls_only=True))
    tls_only.feed(EHLO + b"AUTH PLAIN\r\n")
    assert not any(k.startswith("AUTH") for k in tls_only.conn.ehlo_keywords())
    assert tls_only.errors()[0].reply == replies.AUTH_NEEDS_TLS


def test_auth_failure_returns_to_commands() -> None:
    d = Driver(
        ServerOptions(auth_mechanisms=("PLAIN",)),
        overrides={AuthResponse: Reply(535, "5.7.8", "Authentication failed")},
    )
    d.feed(EHLO + b"AUTH PLAIN\r\nxxxx\r\nNOOP\r\n")
    assert d.kinds() == ["Helo", "Auth", "AuthResponse", "Noop"] and not d.conn.authenticated


def test_bad_line_aborts_auth_exchange() -> None:
    d = Driver(ServerOptions(auth_mechanisms=("PLAIN",)))
    d.feed(EHLO + b"AUTH PLAIN\r\nab\x00\r\nNOOP\r\n")
    assert d.kinds() == ["Helo", "Auth", "ProtocolError", "Noop"] and not d.conn.authenticated


def test_ehlo_keywords() -> None:
    conn = ServerConnection(ServerOptions(max_message_size=0, chunking=False, smtputf8=False))
    assert conn.ehlo_keywords() == ["PIPELINING", "SIZE", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]


def test_protocol_error_event_is_frozen() -> None:
    ev = ProtocolError(replies.BAD_SYNTAX)
    with pytest.raises(AttributeError):
        ev.close = True  # type: ignore[misc]
