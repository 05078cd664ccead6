"""The client state machine's AUTH step (RFC 4954), driven with byte strings."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.delivery.smtp_auth import Credentials, Login, Plain, ScramSha256
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
)
from ironpost.protocol.client_sasl import AUTH_STEP_LIMIT, SaslError
from ironpost.protocol.replies import Reply

EHLO_AUTH = b"250-relay.example\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
CREDS = Credentials("alice", "s3cret")


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


def session(ehlo: bytes = EHLO_AUTH) -> ClientConnection:
    conn = ClientConnection("client.example")
    events(conn, b"220 relay.example ESMTP\r\n")
    conn.hello()
    conn.data_to_send()
    events(conn, ehlo)
    assert conn.phase is Phase.READY
    return conn


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class Scripted:
    """A mechanism that answers from a list (and fails with SaslError when told to)."""

    name = "X-TEST"

    def __init__(self, answers: list[bytes | Exception], initial: bytes | None = None) -> None:
        self._answers = answers
        self._initial = initial
        self.challenges: list[bytes] = []

    def initial(self) -> bytes | None:
        return self._initial

    def step(self, challenge: bytes) -> bytes:
        self.challenges.append(challenge)
        answer = self._answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_auth_keywords_parsed_including_the_old_auth_equals_form() -> None:
    caps = Capabilities.parse(
        Reply(250, None, ("relay", "AUTH=LOGIN PLAIN", "AUTH plain cram-md5", "SIZE 10"))
    )
    assert caps.auth == ("LOGIN", "PLAIN", "CRAM-MD5")
    assert Capabilities.parse(Reply(250, None, ("relay", "SIZE 10"))).auth == ()


def test_plain_with_initial_response_then_mail() -> None:
    conn = session()
    conn.authenticate(Plain(CREDS))
    assert conn.phase is Phase.AUTH and conn.awaiting is Command.AUTH
    assert conn.data_to_send() == b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n"
    with pytest.raises(LocalProtocolError):  # nothing is pipelined behind AUTH
        conn.begin(Transaction("a@x", (TxRecipient("b@y"),), 10))
    [ev] = events(conn, b"235 2.7.0 Authentication successful\r\n")
    assert ev.command is Command.AUTH and ev.reply.code == 235
    assert conn.authenticated and conn.phase is Phase.READY and conn.auth_error is None
    conn.begin(Transaction("a@x", (TxRecipient("b@y"),), 10))
    assert conn.data_to_send().startswith(b"MAIL FROM:<a@x>")
    with pytest.raises(LocalProtocolError):  # not READY any more
        conn.authenticate(Plain(CREDS))


def test_login_answers_each_334_itself() -> None:
    conn = session()
    conn.authenticate(Login(CREDS))
    assert conn.data_to_send() == b"AUTH LOGIN\r\n"
    [ev] = events(conn, b"334 VXNlcm5hbWU6\r\n")
    assert ev.reply.code == 334 and conn.phase is Phase.AUTH
    assert conn.data_to_send() == b64(b"alice") + b"\r\n"
    events(conn, b"334 UGFzc3dvcmQ6\r\n")
    assert conn.data_to_send() == b64(b"s3cret") + b"\r\n"
    [ev] = events(conn, b"235 2.7.0 ok\r\n")
    assert conn.authenticated and conn.phase is Phase.READY


def test_535_leaves_the_session_ready_and_unauthenticated() -> None:
    conn = session()
    conn.authenticate(Plain(CREDS))
    conn.data_to_send()
    [ev] = events(conn, b"535 5.7.8 Error: authentication failed\r\n")
    assert (ev.command, ev.reply.code, ev.reply.enhanced) == (Command.AUTH, 535, "5.7.8")
    assert not conn.authenticated and conn.auth_error is None and conn.phase is Phase.READY
    conn.quit()
    assert conn.data_to_send() == b"QUIT\r\n"


def test_empty_initial_response_is_sent_as_equals() -> None:
    conn = session()
    conn.authenticate(Scripted([], initial=b""))
    assert conn.data_to_send() == b"AUTH X-TEST =\r\n"


def test_initial_response_too_long_for_the_line_waits_for_the_empty_challenge() -> None:
    conn = session()
    long = Credentials("u" * 400, "p" * 400)
    conn.authenticate(Plain(long))
    assert conn.data_to_send() == b"AUTH PLAIN\r\n"
    events(conn, b"334 \r\n")
    assert conn.data_to_send() == b64(b"\0" + b"u" * 400 + b"\0" + b"p" * 400) + b"\r\n"


def test_malformed_challenge_cancels_with_star() -> None:
    conn = session()
    mech = Scripted([b"never"])
    conn.authenticate(mech)
    conn.data_to_send()
    events(conn, b"334 not*base64!\r\n")
    assert conn.data_to_send() == b"*\r\n" and mech.challenges == []
    assert conn.auth_error == "malformed SASL challenge"
    events(conn, b"501 5.7.0 Authentication aborted\r\n")
    assert not conn.authenticated and conn.phase is Phase.READY


def test_mechanism_error_cancels_and_a_late_235_does_not_authenticate() -> None:
    conn = session()
    conn.authenticate(Scripted([SaslError("bad nonce")]))
    conn.data_to_send()
    events(conn, b"334 " + b64(b"r=x") + b"\r\n")
    assert conn.data_to_send() == b"*\r\n" and conn.auth_error == "bad nonce"
    events(conn, b"235 2.7.0 ok\r\n")  # a server that ignores the cancel
    assert not conn.authenticated


def test_challenge_after_cancel_is_a_protocol_error() -> None:
    conn = session()
    conn.authenticate(Scripted([SaslError("no")]))
    events(conn, b"334 " + b64(b"a") + b"\r\n")
    with pytest.raises(RemoteProtocolError):
        events(conn, b"334 " + b64(b"b") + b"\r\n")


def test_endless_challenges_are_cut_off() -> None:
    conn = session()
    conn.authenticate(Scripted([b"more"] * AUTH_STEP_LIMIT))
    assert conn.data_to_send() == b"AUTH X-TEST\r\n"
    for _ in range(AUTH_STEP_LIMIT):
        events(conn, b"334 " + b64(b"again") + b"\r\n")
        assert conn.data_to_send() == b64(b"more") + b"\r\n"
    events(conn, b"334 " + b64(b"again") + b"\r\n")
    assert conn.data_to_send() == b"*\r\n"
    assert conn.auth_error == "authentication protocol loop"


def test_auth_needs_an_idle_esmtp_session() -> None:
    conn = ClientConnection("client.example")
    with pytest.raises(LocalProtocolError):
        conn.authenticate(Plain(CREDS))
    events(conn, b"220 hi\r\n")
    conn.helo()
    events(conn, b"250 hi\r\n")
    with pytest.raises(LocalProtocolError):  # HELO fallback: no ESMTP, no AUTH
        conn.authenticate(Plain(CREDS))


def test_starttls_forgets_authentication() -> None:
    conn = session(b"250-relay\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n")
    conn.authenticate(Plain(CREDS))
    events(conn, b"235 ok\r\n")
    assert conn.authenticated
    conn.data_to_send()
    conn.starttls()
    events(conn, b"220 go\r\n")
    conn.tls_established()
    assert not conn.authenticated and conn.capabilities is None


def test_scram_sha_256_rfc7677_vector() -> None:
    conn = session(b"250-relay\r\n250 AUTH SCRAM-SHA-256 PLAIN\r\n")
    mech = ScramSha256(Credentials("user", "pencil"), nonce="rOprNGfwEbeRWgbNEkqO")
    conn.authenticate(mech)
    assert (
        conn.data_to_send()
        == b"AUTH SCRAM-SHA-256 " + b64(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO") + b"\r\n"
    )
    server_first = (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    events(conn, b"334 " + b64(server_first) + b"\r\n")
    assert base64.b64decode(conn.data_to_send()) == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    events(conn, b"334 " + b64(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=") + b"\r\n")
    assert conn.data_to_send() == b"\r\n"  # the empty answer to the server-final message
    events(conn, b"235 2.7.0 ok\r\n")
    assert conn.authenticated


def test_scram_wrong_server_signature_cancels() -> None:
    conn = session()
    conn.authenticate(ScramSha256(Credentials("user", "pencil"), nonce="abc"))
    events(conn, b"334 " + b64(b"r=abcdef,s=QUJD,i=4096") + b"\r\n")
    conn.data_to_send()
    events(conn, b"334 " + b64(b"v=" + b64(b"x" * 32)) + b"\r\n")
    assert conn.data_to_send() == b"*\r\n"
    assert conn.auth_error == "SCRAM server signature mismatch"


@pytest.mark.parametrize(
    ("server_first", "why"),
    [
        (b"r=other,s=QUJD,i=4096", "bad SCRAM nonce"),
        (b"r=abc,s=QUJD,i=4096", "bad SCRAM nonce"),  # the server added nothing
        (b"r=abcd,s=QUJD,i=999999999", "bad SCRAM iteration count"),
        (b"m=ext,r=abcd,s=QUJD,i=4096", "unsupported SCRAM extension"),
    ],
)
def test_scram_refuses_bad_server_first(server_first: bytes, why: str) -> None:
    conn = session()
    conn.authenticate(ScramSha256(Credentials("user", "pencil"), nonce="abc"))
    events(conn, b"334 " + b64(server_first) + b"\r\n")
    assert conn.data_to_send().endswith(b"*\r\n") and conn.auth_error == why


@given(st.text(max_size=50), st.text(max_size=50))
def test_plain_carries_any_credentials_on_one_line(user: str, password: str) -> None:
    conn = session()
    conn.authenticate(Plain(Credentials(user, password)))
    line = conn.data_to_send()
    assert line.startswith(b"AUTH PLAIN ") and line.endswith(b"\r\n")
    assert line.count(b"\r") == 1 and line.count(b"\n") == 1
    assert base64.b64decode(line[11:-2]) == b"\0" + user.encode() + b"\0" + password.encode()


@given(st.binary(max_size=300))
def test_any_challenge_line_is_answered_or_cancelled_never_crashes(junk: bytes) -> None:
    conn = session()
    conn.authenticate(Login(CREDS))
    conn.data_to_send()
    line = b"334 " + junk.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n"
    try:
        events(conn, line)
    except RemoteProtocolError:
        return  # a reply that breaks the grammar (control characters, not UTF-8)
    out = conn.data_to_send()
    assert out in (b"*\r\n", b64(b"alice") + b"\r\n")
    assert b"s3cret" not in out
