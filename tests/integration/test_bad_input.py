"""Bad input through a real socket: each defence has a test that fails without it."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
from mta_harness import HOST, STRANGER, Mta, MtaFactory, RawClient

SMUGGLED = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
]
BARE = [b"bare LF\n", b"bare CR\r", b"double CR\r\r\n"]


def _open_data(client: RawClient) -> None:
    assert client.cmd(b"EHLO client.sender.test").startswith(b"250")
    assert client.cmd(b"MAIL FROM:<c@sender.test>").startswith(b"250")
    assert client.cmd(b"RCPT TO:<alice@example.test>").startswith(b"250")
    assert client.cmd(b"DATA").startswith(b"354")


@pytest.mark.parametrize("ending", SMUGGLED + BARE, ids=repr)
def test_smuggling_is_rejected_and_never_a_second_message(mta: Mta, ending: bytes) -> None:
    client = RawClient(mta.port, source=STRANGER)
    _open_data(client)
    smuggled = (
        b"Subject: first\r\n\r\nbody"
        + ending
        + b"MAIL FROM:<evil@sender.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
        + b"Subject: smuggled\r\n\r\nevil\r\n.\r\n"
    )
    client.send(smuggled)
    reply = client.reply()
    assert reply.startswith(b"521 5.5.2"), reply
    assert client.closed()
    time.sleep(0.3)
    assert mta.messages("alice") == [] and mta.messages("bob") == []


def test_trusted_client_may_use_bare_lf(mta: Mta) -> None:
    client = RawClient(mta.port, source=HOST)
    client.send(b"EHLO client.sender.test\n")
    assert client.reply().startswith(b"250")
    client.send(b"MAIL FROM:<c@sender.test>\nRCPT TO:<alice@example.test>\nDATA\n")
    assert client.reply().startswith(b"250")
    assert client.reply().startswith(b"250")
    assert client.reply().startswith(b"354")
    client.send(b"Subject: lf\n\nunix client\n.\n")
    assert client.reply().startswith(b"250")
    (body,) = mta.wait_for_messages("alice", 1)
    assert b"unix client" in body


def test_starttls_injection_is_discarded(mta: Mta) -> None:
    client = RawClient(mta.port, source=STRANGER)
    assert client.cmd(b"EHLO client.sender.test").startswith(b"250")
    client.send(b"STARTTLS\r\nMAIL FROM:<injected@sender.test>\r\n")
    assert client.reply().startswith(b"220")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tls = context.wrap_socket(client.sock, server_hostname="mail.example.test")
    tls.settimeout(10)
    # The injected MAIL was thrown away: state is fresh, MAIL needs EHLO first.
    tls.sendall(b"MAIL FROM:<c@sender.test>\r\n")
    assert tls.recv(4096).startswith(b"503")
    tls.sendall(b"EHLO client.sender.test\r\n")
    ehlo = b""
    while not ehlo.endswith(b"\r\n") or b"250 " not in ehlo:
        ehlo += tls.recv(4096)
    assert b"STARTTLS" not in ehlo
    tls.sendall(b"STARTTLS\r\n")
    assert tls.recv(4096).startswith(b"503")
    tls.close()


def test_early_talker_gets_554(mta_factory: type[MtaFactory]) -> None:
    mta = mta_factory.start("smtpd_greet_pause = 2s\n")
    client = RawClient(mta.port, source=STRANGER, greet=False)
    client.send(b"EHLO spambot.test\r\n")
    reply = client.reply()
    assert reply.startswith(b"554"), reply
    assert client.closed()
    assert mta.log_has("pregreet")


def test_overlong_command_line(mta: Mta) -> None:
    client = RawClient(mta.port)
    assert client.cmd(b"NOOP " + b"x" * 600).startswith(b"500")
    assert client.cmd(b"NOOP").startswith(b"250")  # the session goes on


def test_overlong_text_line_rejected_after_terminator(mta: Mta) -> None:
    client = RawClient(mta.port)
    _open_data(client)
    reply = client.cmd(b"Subject: long\r\n\r\n" + b"y" * 1200 + b"\r\n.")
    assert reply.startswith(b"500 5.5.2"), reply
    assert client.cmd(b"NOOP").startswith(b"250")


def test_nul_and_invalid_utf8_get_replies(mta: Mta) -> None:
    client = RawClient(mta.port)
    assert client.cmd(b"EHLO a\x00b").startswith(b"500")
    assert client.cmd(b"EHLO \xff\xfe.test")[:1] == b"5"
    assert client.cmd(b"NOOP").startswith(b"250")


def test_http_request_is_dropped(mta: Mta) -> None:
    client = RawClient(mta.port, source=STRANGER)
    assert client.cmd(b"GET / HTTP/1.1").startswith(b"502")
    assert client.closed()


def test_utf8_address_without_smtputf8(mta: Mta) -> None:
    client = RawClient(mta.port)
    client.cmd(b"EHLO client.sender.test")
    assert client.cmd("MAIL FROM:<jørgen@sender.test>".encode()).startswith(b"553 5.6.7")
    assert client.cmd("MAIL FROM:<jørgen@sender.test> SMTPUTF8".encode()).startswith(b"250")


@pytest.mark.parametrize(
    ("path", "codes"),
    [
        (b"<alice@>", (b"501", b"553")),
        (b"<" + b"a" * 65 + b"@example.test>", (b"553", b"501")),
        (b"<a@" + b"b" * 250 + b".test>", (b"501", b"553")),
    ],
)
def test_bad_addresses(mta: Mta, path: bytes, codes: tuple[bytes, ...]) -> None:
    client = RawClient(mta.port)
    client.cmd(b"EHLO client.sender.test")
    assert client.cmd(b"MAIL FROM:" + path)[:3] in codes


def test_idle_client_times_out(mta_factory: type[MtaFactory]) -> None:
    mta = mta_factory.start("smtpd_timeout = 1s\n")
    client = RawClient(mta.port)
    reply = client.reply()
    assert reply.startswith(b"421 4.4.2"), reply
    assert client.closed()


def test_trickling_client_hits_the_deadline(mta_factory: type[MtaFactory]) -> None:
    mta = mta_factory.start("smtpd_timeout = 10s\nsmtpd_session_deadline = 2s\n")
    client = RawClient(mta.port)
    client.sock.settimeout(0.2)
    start = time.monotonic()
    got = b""
    while time.monotonic() - start < 8:
        try:
            client.send(b"N")  # one byte at a time, never a whole command
            got += client.sock.recv(512)
            if got:
                break
        except TimeoutError:
            continue
        except OSError:
            break
    assert got.startswith(b"421"), got


def test_connection_flood_from_one_ip_is_capped(mta_factory: type[MtaFactory]) -> None:
    mta = mta_factory.start("smtpd_client_connection_count_limit = 5\n")
    held = [RawClient(mta.port, source=STRANGER) for _ in range(5)]
    extra = socket.create_connection((HOST, mta.port), timeout=5, source_address=(STRANGER, 0))
    assert extra.recv(512).startswith(b"421")
    # Another client is still served.
    other = RawClient(mta.port, source="127.0.0.67")
    assert other.cmd(b"NOOP").startswith(b"250")
    for c in held:
        c.close()


def test_hard_error_limit_disconnects(mta_factory: type[MtaFactory]) -> None:
    mta = mta_factory.start("smtpd_hard_error_limit = 3\nsmtpd_soft_error_limit = 10\n")
    client = RawClient(mta.port)
    for _ in range(2):
        assert client.cmd(b"BOGUS").startswith(b"502")
    assert client.cmd(b"BOGUS").startswith(b"502")
    assert client.reply().startswith(b"421")
    assert client.closed()
