"""Receive end to end: a real ironpost, real clients (smtplib, swaks), real Maildirs."""

from __future__ import annotations

import json
import shutil
import smtplib
import ssl
import subprocess
from pathlib import Path

import pytest
from mta_harness import HOST, STRANGER, Mta, MtaFactory, RawClient, write_config

MESSAGE = (
    "From: Carol <carol@sender.test>\r\n"
    "To: alice@example.test\r\n"
    "Subject: hello\r\n"
    "Message-ID: <m1@sender.test>\r\n"
    "\r\n"
    "Hi Alice.\r\n"
    ".leading dot\r\n"
)


def send(
    mta: Mta, rcpts: list[str], *, sender: str = "carol@sender.test", source: str = HOST
) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(HOST, mta.port, source_address=(source, 0), timeout=10) as s:
        s.ehlo("client.sender.test")
        return s.sendmail(sender, rcpts, MESSAGE)


def test_message_lands_in_maildir_with_trace_headers(mta: Mta) -> None:
    assert send(mta, ["alice@example.test"]) == {}
    (body,) = mta.wait_for_messages("alice", 1)
    assert body.startswith(b"Return-Path: <carol@sender.test>\nDelivered-To: alice@example.test\n")
    # The name comes from /etc/hosts, as Postfix's getnameinfo() finds it.
    assert b"Received: from client.sender.test (localhost [127.0.0.1])" in body
    assert b"by mail.example.test (ironpost) with ESMTP id " in body
    assert b"\n.leading dot\n" in body
    assert b"\r\n" not in body  # Maildir files use LF
    assert mta.log_has("relay=maildir", "status=sent", "dsn=2.0.0", "message-id=<m1@sender.test>")


def test_queue_id_in_reply_matches_log(mta: Mta) -> None:
    with smtplib.SMTP(HOST, mta.port, timeout=10) as s:
        s.ehlo("client.sender.test")
        s.mail("carol@sender.test")
        s.rcpt("bob@example.test")
        code, text = s.data(MESSAGE.encode())
    assert code == 250
    queue_id = text.decode().rsplit(" ", 1)[-1]
    mta.wait_for_messages("bob", 1)
    assert mta.log_has(f"{queue_id}: to=<bob@example.test>")


def test_alias_expands_one_to_many_and_delimiter_extension(mta: Mta) -> None:
    assert send(mta, ["team@example.test"]) == {}
    assert send(mta, ["alice+lists@example.test"]) == {}
    alice = mta.wait_for_messages("alice", 2)
    assert len(mta.wait_for_messages("bob", 1)) == 1
    assert any(b"Delivered-To: alice+lists@example.test" in m for m in alice)


def test_unknown_recipient_rejected_at_rcpt_no_backscatter(mta: Mta) -> None:
    with smtplib.SMTP(HOST, mta.port, source_address=(STRANGER, 0), timeout=10) as s:
        s.ehlo("client.sender.test")
        s.mail("carol@sender.test")
        code, text = s.rcpt("nobody@example.test")
    assert code == 550
    assert text.startswith(b"5.1.1")
    assert mta.log_has("NOQUEUE: reject: RCPT from unknown[127.0.0.66]: 550 5.1.1")


def test_alias_to_remote_stays_queued(mta: Mta) -> None:
    assert send(mta, ["far@example.test"]) == {}
    for _ in range(100):
        listed = mta.cli("queue", "list", "--json")
        messages = json.loads(listed.stdout)
        if messages and messages[0]["recipients"][0]["status"] == "deferred":
            break
        import time

        time.sleep(0.05)
    assert messages[0]["recipients"][0]["address"] == "someone@remote.test"
    plain = mta.cli("queue", "list").stdout
    assert "carol@sender.test" in plain and "someone@remote.test" in plain


def test_queue_cli_hold_release_delete_while_running(mta: Mta) -> None:
    assert send(mta, ["far@example.test"]) == {}
    messages = json.loads(mta.cli("queue", "list", "--json").stdout)
    queue_id = messages[0]["id"]
    assert mta.cli("queue", "hold", queue_id).returncode == 0
    assert f"{queue_id}!" in mta.cli("queue", "list").stdout
    assert mta.cli("queue", "release", queue_id).returncode == 0
    shown = mta.cli("queue", "show", queue_id)
    assert "Subject: hello" in shown.stdout
    assert mta.cli("queue", "delete", queue_id).returncode == 0
    assert "Mail queue is empty" in mta.cli("queue", "list").stdout
    assert mta.cli("queue", "show", queue_id).returncode != 0


def test_starttls_with_smtplib_and_received_header_names_cipher(mta: Mta) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(HOST, mta.port, timeout=10) as s:
        s.ehlo("client.sender.test")
        assert s.has_extn("starttls")
        s.starttls(context=context)
        s.ehlo("client.sender.test")
        assert not s.has_extn("starttls")
        assert s.sendmail("carol@sender.test", ["alice@example.test"], MESSAGE) == {}
    (body,) = mta.wait_for_messages("alice", 1)
    assert b"(using TLSv1." in body and b"with ESMTPS id" in body


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is installed by make test")
def test_swaks_with_tls(mta: Mta) -> None:
    result = subprocess.run(
        [
            "swaks", "--server", f"{HOST}:{mta.port}", "--tls",
            "--from", "carol@sender.test", "--to", "bob@example.test",
            "--helo", "client.sender.test", "--body", "sent by swaks",
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<-  220 2.0.0 Ready to start TLS" in result.stdout
    assert "<~  250 2.0.0 Ok: queued as" in result.stdout
    (body,) = mta.wait_for_messages("bob", 1)
    assert b"sent by swaks" in body


def test_size_limit_advertised_and_enforced(mta_factory: type[MtaFactory]) -> None:
    mta = mta_factory.start("message_size_limit = 20000\n")
    client = RawClient(mta.port)
    assert b"SIZE 20000" in client.cmd(b"EHLO client.sender.test")
    assert client.cmd(b"MAIL FROM:<c@sender.test> SIZE=30000").startswith(b"552 5.3.4")
    assert client.cmd(b"MAIL FROM:<c@sender.test>").startswith(b"250")
    assert client.cmd(b"RCPT TO:<alice@example.test>").startswith(b"250")
    assert client.cmd(b"DATA").startswith(b"354")
    client.send(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 30 + b".\r\n")
    assert client.reply().startswith(b"552 5.3.4")
    # The session goes on: a small message is accepted.
    assert client.cmd(b"MAIL FROM:<c@sender.test>").startswith(b"250")
    assert client.cmd(b"RCPT TO:<alice@example.test>").startswith(b"250")
    assert client.cmd(b"DATA").startswith(b"354")
    assert client.cmd(b"Subject: small\r\n\r\nok\r\n.").startswith(b"250")
    client.close()


def test_too_many_recipients(mta_factory: type[MtaFactory]) -> None:
    mta = mta_factory.start("smtpd_recipient_limit = 2\n")
    client = RawClient(mta.port)
    client.cmd(b"EHLO client.sender.test")
    client.cmd(b"MAIL FROM:<c@sender.test>")
    assert client.cmd(b"RCPT TO:<alice@example.test>").startswith(b"250")
    assert client.cmd(b"RCPT TO:<bob@example.test>").startswith(b"250")
    assert client.cmd(b"RCPT TO:<postmaster@example.test>").startswith(b"452 4.5.3")
    client.close()


def test_hopcount_limit(mta_factory: type[MtaFactory]) -> None:
    mta = mta_factory.start("hopcount_limit = 3\n")
    client = RawClient(mta.port)
    client.cmd(b"EHLO client.sender.test")
    client.cmd(b"MAIL FROM:<c@sender.test>")
    client.cmd(b"RCPT TO:<alice@example.test>")
    client.cmd(b"DATA")
    hops = b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n" * 3
    assert client.cmd(hops + b"Subject: loop\r\n\r\nbody\r\n.").startswith(b"554 5.4.6")
    client.close()


def test_helo_required(mta: Mta) -> None:
    client = RawClient(mta.port, source=STRANGER)
    assert client.cmd(b"MAIL FROM:<c@sender.test>").startswith(b"503")
    client.close()


def test_missing_certificate_at_level_may_serves_without_starttls(
    mta_factory: type[MtaFactory],
) -> None:
    mta = mta_factory.start(
        "smtpd_tls_cert_file = /nonexistent/mail.pem\nsmtpd_tls_key_file = /nonexistent/mail.key\n"
    )
    client = RawClient(mta.port)
    assert b"STARTTLS" not in client.cmd(b"EHLO client.sender.test")
    assert mta.log_has("STARTTLS is disabled")
    client.close()


def test_missing_certificate_at_level_encrypt_refuses_to_start(tmp_path: Path) -> None:
    port = write_config(
        tmp_path,
        "smtpd_tls_security_level = encrypt\nsmtpd_tls_cert_file = /nonexistent/mail.pem\n",
    )
    mta = Mta(tmp_path, port)
    with pytest.raises(RuntimeError, match="fatal: cannot load TLS certificate"):
        mta.start()
