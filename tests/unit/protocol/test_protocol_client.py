"""The SMTP/LMTP client state machine, driven with byte strings (no sockets)."""

from __future__ import annotations

import pytest

from ironpost.protocol import LocalProtocolError, RemoteProtocolError
from ironpost.protocol.client import (
    CLOSED,
    NEED_DATA,
    Capabilities,
    ClientConnection,
    Command,
    ConnectionLost,
    Phase,
    Replied,
    Transaction,
    TxRecipient,
    dot_stuff,
    xtext,
)

EHLO_FULL = (
    b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n"
)
EHLO_PLAIN = b"250-mx.example\r\n250 ENHANCEDSTATUSCODES\r\n"


def tx(*rcpts: str, **kw: object) -> Transaction:
    params: dict[str, object] = {
        "sender": "a@example.org",
        "recipients": tuple(TxRecipient(r) for r in rcpts),
        "size": 100,
    }
    params.update(kw)
    return Transaction(**params)  # type: ignore[arg-type]


def events(conn: ClientConnection, data: bytes = b"") -> list[Replied | ConnectionLost]:
    if data:
        conn.receive_data(data)
    out: list[Replied | ConnectionLost] = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA or ev is CLOSED:
            return out
        assert isinstance(ev, Replied | ConnectionLost)
        out.append(ev)


def session(ehlo: bytes = EHLO_FULL, *, lmtp: bool = False) -> ClientConnection:
    conn = ClientConnection("client.example", lmtp=lmtp)
    [greet] = events(conn, b"220 mx.example ESMTP\r\n")
    assert greet.command is Command.GREETING and conn.phase is Phase.GREETED
    conn.hello()
    assert conn.data_to_send() == (b"LHLO" if lmtp else b"EHLO") + b" client.example\r\n"
    [hello] = events(conn, ehlo)
    assert isinstance(hello, Replied) and hello.reply.code == 250
    assert conn.phase is Phase.READY
    return conn


def test_capabilities_parsed() -> None:
    conn = session()
    assert conn.capabilities == Capabilities(
        pipelining=True,
        size=10240000,
        eightbitmime=True,
        smtputf8=True,
        dsn=True,
        enhancedstatuscodes=True,
        chunking=True,
    )


def test_pipelined_transaction_is_one_write_and_replies_match_in_order() -> None:
    conn = session()
    conn.begin(tx("b@x.example", "c@x.example"))
    assert conn.data_to_send() == (
        b"MAIL FROM:<a@example.org> SIZE=100\r\nRCPT TO:<b@x.example>\r\n"
        b"RCPT TO:<c@x.example>\r\nDATA\r\n"
    )
    evs = events(
        conn,
        b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <c@x.example>: no such user\r\n"
        b"354 End data\r\n",
    )
    assert [(e.command, e.index, e.reply.code) for e in evs if isinstance(e, Replied)] == [
        (Command.MAIL, None, 250),
        (Command.RCPT, 0, 250),
        (Command.RCPT, 1, 550),
        (Command.DATA, None, 354),
    ]
    assert evs[2].reply.enhanced == "5.1.1"  # type: ignore[union-attr]
    assert conn.accepted == [0]
    assert conn.phase is Phase.CONTENT
    conn.send_content(b"Subject: x\r\n\r\n.hidden\r\nbody\r\n")
    assert conn.data_to_send() == b"Subject: x\r\n\r\n..hidden\r\nbody\r\n.\r\n"
    [done] = events(conn, b"250 2.0.0 Ok: queued as ABC\r\n")
    assert isinstance(done, Replied) and done.command is Command.DOT
    assert conn.phase is Phase.READY
    conn.quit()
    assert conn.data_to_send() == b"QUIT\r\n"
    events(conn, b"221 2.0.0 Bye\r\n")
    assert conn.phase is Phase.CLOSED


def test_without_pipelining_one_command_per_reply() -> None:
    conn = session(EHLO_PLAIN)
    conn.begin(tx("b@x.example", "c@x.example"))
    assert conn.data_to_send() == b"MAIL FROM:<a@example.org>\r\n"
    events(conn, b"250 Ok\r\n")
    assert conn.data_to_send() == b"RCPT TO:<b@x.example>\r\n"
    events(conn, b"250 Ok\r\n")
    assert conn.data_to_send() == b"RCPT TO:<c@x.example>\r\n"
    events(conn, b"250 Ok\r\n")
    assert conn.data_to_send() == b""
    assert conn.phase is Phase.RECIPIENTS_DONE and conn.accepted == [0, 1]
    conn.send_data()
    assert conn.data_to_send() == b"DATA\r\n"
    events(conn, b"354 go\r\n")
    conn.send_content(b"x")
    assert conn.data_to_send() == b"x\r\n.\r\n"


def test_no_recipient_accepted_means_rset_not_data() -> None:
    conn = session(EHLO_PLAIN)
    conn.begin(tx("b@x.example"))
    conn.data_to_send()
    events(conn, b"250 Ok\r\n")
    conn.data_to_send()
    events(conn, b"450 4.2.0 try later\r\n")
    assert conn.phase is Phase.RECIPIENTS_DONE and conn.accepted == []
    with pytest.raises(LocalProtocolError):
        conn.send_data()
    conn.rset()
    assert conn.data_to_send() == b"RSET\r\n"
    events(conn, b"250 Ok\r\n")
    assert conn.phase is Phase.READY


def test_pipelined_354_without_accepted_recipient_is_aborted() -> None:
    conn = session()
    conn.begin(tx("b@x.example"))
    conn.data_to_send()
    events(conn, b"250 Ok\r\n550 no\r\n354 go ahead anyway\r\n")
    assert conn.phase is Phase.CONTENT
    with pytest.raises(LocalProtocolError):
        conn.send_content(b"secret\r\n")
    conn.abort_content()
    assert conn.data_to_send() == b".\r\n"
    events(conn, b"554 no valid recipients\r\n")
    assert conn.phase is Phase.FAILED
    conn.rset()
    assert conn.data_to_send() == b"RSET\r\n"


def test_mail_rejected_without_pipelining_fails_the_transaction() -> None:
    conn = session(EHLO_PLAIN)
    conn.begin(tx("b@x.example"))
    conn.data_to_send()
    [ev] = events(conn, b"553 5.7.1 sender rejected\r\n")
    assert isinstance(ev, Replied) and ev.command is Command.MAIL
    assert conn.phase is Phase.FAILED and conn.data_to_send() == b""


def test_rcpt_after_rejected_mail_is_never_accepted() -> None:
    conn = session()
    conn.begin(tx("b@x.example"))
    conn.data_to_send()
    events(conn, b"550 no\r\n250 ok?\r\n503 need mail\r\n")
    assert conn.accepted == [] and conn.phase is Phase.FAILED


def test_helo_fallback_after_5xx_to_ehlo() -> None:
    conn = ClientConnection("client.example")
    events(conn, b"220 old\r\n")
    conn.hello()
    conn.data_to_send()
    [ev] = events(conn, b"502 5.5.2 what?\r\n")
    assert isinstance(ev, Replied) and ev.command is Command.EHLO
    assert conn.phase is Phase.GREETED
    conn.helo()
    assert conn.data_to_send() == b"HELO client.example\r\n"
    events(conn, b"250 old\r\n")
    assert conn.phase is Phase.READY
    assert conn.capabilities is not None and not conn.capabilities.esmtp
    conn.begin(tx("b@x.example", eight_bit=True))
    assert conn.data_to_send() == b"MAIL FROM:<a@example.org>\r\n"


def test_lmtp_has_no_helo_and_replies_per_accepted_recipient() -> None:
    conn = session(b"250-lmtp\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n", lmtp=True)
    with pytest.raises(LocalProtocolError):
        ClientConnection("c", lmtp=True).helo()
    conn.begin(tx("b@x", "c@x", "d@x"))
    conn.data_to_send()
    events(conn, b"250 ok\r\n250 ok\r\n550 no\r\n250 ok\r\n354 go\r\n")
    assert conn.accepted == [0, 2]
    conn.send_content(b"hi\r\n")
    conn.data_to_send()
    evs = events(conn, b"250 2.0.0 <b@x> Saved\r\n452 4.2.2 <d@x> Mailbox full\r\n")
    assert [(e.index, e.reply.code) for e in evs if isinstance(e, Replied)] == [
        (0, 250),
        (2, 452),
    ]
    assert conn.phase is Phase.READY


def test_starttls_forgets_capabilities_then_pipelining_after_tls() -> None:
    conn = session(b"250-mx\r\n250-SIZE 100\r\n250 STARTTLS\r\n")
    assert conn.capabilities is not None and conn.capabilities.starttls
    conn.starttls()
    assert conn.data_to_send() == b"STARTTLS\r\n"
    events(conn, b"220 2.0.0 Ready to start TLS\r\n")
    assert conn.phase is Phase.TLS
    with pytest.raises(LocalProtocolError):
        conn.begin(tx("b@x"))
    conn.tls_established()
    assert conn.capabilities is None and conn.tls_active
    conn.hello()
    assert conn.data_to_send() == b"EHLO client.example\r\n"
    events(conn, b"250-mx\r\n250 PIPELINING\r\n")
    assert conn.capabilities == Capabilities(pipelining=True)
    with pytest.raises(LocalProtocolError):
        conn.starttls()
    conn.begin(tx("b@x"))
    assert conn.data_to_send().count(b"\r\n") == 3  # MAIL, RCPT, DATA in one write


def test_starttls_response_injection_is_refused() -> None:
    conn = session(b"250-mx\r\n250 STARTTLS\r\n")
    conn.starttls()
    with pytest.raises(RemoteProtocolError):
        events(conn, b"220 go ahead\r\n250 injected\r\n")


def test_starttls_refused_continues_in_clear() -> None:
    conn = session(b"250-mx\r\n250 STARTTLS\r\n")
    conn.starttls()
    events(conn, b"454 4.7.0 TLS not available\r\n")
    assert conn.phase is Phase.READY and not conn.tls_active


def test_dsn_parameters_are_xtext_encoded_when_offered() -> None:
    conn = session()
    t = Transaction(
        sender="a@example.org",
        recipients=(
            TxRecipient("b@x", notify=("SUCCESS", "FAILURE"), orcpt="rfc822;B+1=@x"),
            TxRecipient("c@x", notify=("NEVER",)),
        ),
        size=5,
        eight_bit=True,
        ret="hdrs",
        envid="id with space+",
    )
    conn.begin(t)
    assert conn.data_to_send() == (
        b"MAIL FROM:<a@example.org> SIZE=5 BODY=8BITMIME RET=HDRS ENVID=id+20with+20space+2B\r\n"
        b"RCPT TO:<b@x> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B+2B1+3D@x\r\n"
        b"RCPT TO:<c@x> NOTIFY=NEVER\r\nDATA\r\n"
    )


def test_no_dsn_or_body_params_when_not_offered() -> None:
    conn = session(b"250-mx\r\n250 PIPELINING\r\n")
    t = Transaction(
        sender="",
        recipients=(TxRecipient("b@x", notify=("SUCCESS",), orcpt="rfc822;b@x"),),
        size=5,
        eight_bit=True,
        ret="FULL",
        envid="e",
    )
    conn.begin(t)
    assert conn.data_to_send() == b"MAIL FROM:<>\r\nRCPT TO:<b@x>\r\nDATA\r\n"


def test_smtputf8_refusal_and_parameter() -> None:
    plain = session(b"250-mx\r\n250 8BITMIME\r\n")
    t = tx("ü@x.example", smtputf8=True)
    refusal = plain.refusal(t)
    assert refusal is not None and refusal.enhanced == "5.6.7"
    with pytest.raises(LocalProtocolError):
        plain.begin(t)
    conn = session()
    assert conn.refusal(t) is None
    conn.begin(t)
    assert conn.data_to_send().startswith(b"MAIL FROM:<a@example.org> SIZE=100 SMTPUTF8\r\n")


def test_size_refusal() -> None:
    conn = session(b"250-mx\r\n250 SIZE 50\r\n")
    refusal = conn.refusal(tx("b@x", size=51))
    assert refusal is not None and refusal.code == 552 and refusal.enhanced == "5.3.4"
    assert conn.refusal(tx("b@x", size=50)) is None


def test_reset_first_is_pipelined_with_the_transaction() -> None:
    conn = session()
    conn.begin(tx("b@x"), reset_first=True)
    assert conn.data_to_send().startswith(b"RSET\r\nMAIL FROM:")
    evs = events(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert [e.command for e in evs if isinstance(e, Replied)] == [
        Command.RSET,
        Command.MAIL,
        Command.RCPT,
        Command.DATA,
    ]


def test_421_closes_and_drops_pending_replies() -> None:
    conn = session()
    conn.begin(tx("b@x", "c@x"))
    conn.data_to_send()
    [ev] = events(conn, b"421 4.3.2 shutting down\r\n")
    assert isinstance(ev, Replied) and ev.command is Command.MAIL and ev.reply.code == 421
    assert conn.phase is Phase.CLOSED and conn.next_event() is CLOSED


def test_eof_reports_what_was_awaited() -> None:
    conn = session()
    conn.begin(tx("b@x"))
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n")
    conn.receive_data(b"")
    evs = events(conn)
    assert isinstance(evs[-1], ConnectionLost) and evs[-1].awaiting is Command.RCPT


def test_eof_before_greeting() -> None:
    conn = ClientConnection("c")
    conn.receive_data(b"")
    assert events(conn) == [ConnectionLost(Command.GREETING)]


def test_unsolicited_reply_is_a_remote_error() -> None:
    conn = session()
    with pytest.raises(RemoteProtocolError):
        events(conn, b"250 surprise\r\n")


def test_hostile_replies_are_remote_errors() -> None:
    for bad in (
        b"250-a\r\n251 b\r\n",
        b"250 ok\n",
        b"2500 x\r\n",
        b"250" + b"x" * 5000,
        b"250 \xff\xfe\r\n",
        b"250 a\x00b\r\n",
        b"250-x\r\n" * 200,
    ):
        conn = ClientConnection("c")
        with pytest.raises(RemoteProtocolError):
            events(conn, bad)


def test_api_misuse_is_a_local_error() -> None:
    conn = ClientConnection("c")
    with pytest.raises(LocalProtocolError):
        conn.hello()
    with pytest.raises(LocalProtocolError):
        ClientConnection("bad name")
    conn = session()
    with pytest.raises(LocalProtocolError):
        conn.begin(tx())
    with pytest.raises(LocalProtocolError):
        conn.begin(tx("evil@x>\r\nDATA"))
    with pytest.raises(LocalProtocolError):
        conn.send_data()


def test_awaiting_names_the_command_for_timeouts() -> None:
    conn = ClientConnection("c")
    assert conn.awaiting is Command.GREETING
    events(conn, b"220 hi\r\n")
    assert conn.awaiting is None
    conn.hello()
    assert conn.awaiting is Command.EHLO


@pytest.mark.parametrize(
    ("content", "wire"),
    [
        (b"", b".\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a\r\n.\r\n", b"a\r\n..\r\n.\r\n"),
        (b".a\r\n..b\r\nc.\r\n", b"..a\r\n...b\r\nc.\r\n.\r\n"),
        (b"no final newline", b"no final newline\r\n.\r\n"),
    ],
)
def test_dot_stuffing(content: bytes, wire: bytes) -> None:
    assert dot_stuff(content) == wire


def test_xtext() -> None:
    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext("é") == "+C3+A9"
