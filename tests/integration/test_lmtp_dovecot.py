"""LMTP delivery end to end: a real ironpost hands mail to a real Dovecot LMTP server.

``transport_maps`` routes lmtp.test to ``lmtp:inet:<dovecot>:24``; Dovecot's userdb is
a passwd-file, so a recipient missing from it is refused with a per-recipient
``550 5.1.1``. The message must land in Dovecot's Maildir for the known recipients,
and ironpost must bounce only the refused one.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import time

from mta_harness import HOST, Mta

DOMAIN = "lmtp.test"
USERS = {f"bob@{DOMAIN}": "x", f"carol@{DOMAIN}": "x"}


def lmtp_lines(nexthop: str) -> str:
    return f"relay_domains = {DOMAIN}\ntransport_maps = inline:{{ {DOMAIN}=lmtp:{nexthop} }}\n"


def send(mta: Mta, rcpts: list[str], mid: str, body: str) -> None:
    with smtplib.SMTP(HOST, mta.port, timeout=10) as c:
        c.sendmail(
            "alice@example.test",
            rcpts,
            f"From: alice@example.test\r\nTo: {', '.join(rcpts)}\r\nSubject: lmtp\r\n"
            f"Message-ID: {mid}\r\n\r\n{body}\r\n",
        )


def test_delivery_into_dovecots_maildir(mta_factory, dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = dovecot.start(USERS, lmtp=True)
    mta = mta_factory.start(lmtp_lines(peer.lmtp_nexthop))
    mid = f"<lmtp.{time.time()}@t>"
    send(mta, [f"bob@{DOMAIN}", f"carol@{DOMAIN}"], mid, "through LMTP")
    [bob] = peer.wait_for_messages("bob", DOMAIN, 1)
    [carol] = peer.wait_for_messages("carol", DOMAIN, 1)
    for msg in (bob, carol):
        assert mid.encode() in msg and b"through LMTP" in msg
        assert b"Return-Path: <alice@example.test>" in msg
        # Dovecot's trace header names our LHLO; one transaction carried both recipients
        # (Dovecot adds Delivered-To only when a transaction has one).
        assert b"Received: from mail.example.test ([127.0.0.1])" in msg
        assert b"with LMTP" in msg and b"Delivered-To:" not in msg
    assert mta.log_has(
        f"to=<bob@{DOMAIN}>", f"to=<carol@{DOMAIN}>", f"{peer.host}]:24", "status=sent"
    )
    assert "status=bounced" not in mta.maillog
    assert "saved mail to INBOX" in peer.log


def test_unknown_user_bounces_only_that_recipient(mta_factory, dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = dovecot.start(USERS, lmtp=True)
    mta = mta_factory.start(lmtp_lines(peer.lmtp_nexthop))
    mid = f"<lmtp-mixed.{time.time()}@t>"
    send(mta, [f"bob@{DOMAIN}", f"nobody@{DOMAIN}"], mid, "one of two")
    [delivered] = peer.wait_for_messages("bob", DOMAIN, 1)
    assert mid.encode() in delivered
    assert peer.messages("nobody", DOMAIN) == []

    [dsn_bytes] = mta.wait_for_messages("alice", 1, timeout=20)
    dsn = email.message_from_bytes(dsn_bytes, policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    status = list(dsn.iter_parts())[1].as_string()
    assert f"Final-Recipient: rfc822; nobody@{DOMAIN}" in status
    assert "Action: failed" in status
    assert "Status: 5.1.1" in status
    assert "Diagnostic-Code: smtp; 550 5.1.1" in status  # "smtp" for LMTP too, as Postfix
    assert f"bob@{DOMAIN}" not in status  # delivered, so not in the report
    assert mta.log_has(f"to=<nobody@{DOMAIN}>", "dsn=5.1.1", "status=bounced")
    assert mta.log_has(f"to=<bob@{DOMAIN}>", "status=sent")
    time.sleep(0.5)  # nothing else may turn up
    assert len(mta.messages("alice")) == 1
    assert len(peer.messages("bob", DOMAIN)) == 1


def test_per_recipient_reply_after_data(mta_factory, dovecot) -> None:  # type: ignore[no-untyped-def]
    """LMTP's own feature: one reply per recipient after DATA. A full mailbox at Dovecot
    (552 5.2.2 for carol only) bounces carol and no one else."""
    peer = dovecot.start(USERS, lmtp=True, full=(f"carol@{DOMAIN}",))
    mta = mta_factory.start(lmtp_lines(peer.lmtp_nexthop))
    mid = f"<lmtp-full.{time.time()}@t>"
    send(mta, [f"bob@{DOMAIN}", f"carol@{DOMAIN}"], mid, "one fits")
    [delivered] = peer.wait_for_messages("bob", DOMAIN, 1)
    assert mid.encode() in delivered
    [dsn_bytes] = mta.wait_for_messages("alice", 1, timeout=20)
    status = list(email.message_from_bytes(dsn_bytes, policy=email.policy.default).iter_parts())
    report = status[1].as_string()
    assert f"Final-Recipient: rfc822; carol@{DOMAIN}" in report
    assert "Status: 5.2.2" in report
    assert f"bob@{DOMAIN}" not in report
    assert mta.log_has(
        f"to=<carol@{DOMAIN}>", "dsn=5.2.2", "status=bounced", "in reply to end of DATA command"
    )
    assert mta.log_has(f"to=<bob@{DOMAIN}>", "status=sent")
    assert peer.messages("carol", DOMAIN) == []
