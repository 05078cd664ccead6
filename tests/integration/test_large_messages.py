"""Large messages end to end: DATA and BDAT bodies of a few MiB, with dot lines across
every read, arrive intact, from our own network (one join in cleanup) and from a
stranger (inbound checks read the joined message)."""

from __future__ import annotations

import itertools
import smtplib
import time

import pytest
from mta_harness import HOST, STRANGER, Mta, RawClient

HEADERS = (
    b"From: Carol <carol@sender.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: large\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <large@sender.test>\r\n"
    b"\r\n"
)


def body(size: int) -> bytes:
    """Text lines of varied length, a third of them starting with a dot."""
    lines = []
    total = 0
    i = 0
    while total < size:
        line = (b"." if i % 3 == 0 else b"") + b"%07d " % i + b"x" * (i % 97) + b"\r\n"
        lines.append(line)
        total += len(line)
        i += 1
    return b"".join(lines)


def stored_body(message: bytes) -> bytes:
    """The body of a delivered Maildir message, back in CRLF form."""
    head, sep, rest = message.partition(b"\n\n")
    assert sep, "no header/body separator"
    assert b"Message-ID: <large@sender.test>" in head
    return rest.replace(b"\n", b"\r\n")


@pytest.mark.parametrize("source", [HOST, STRANGER])
def test_large_message_over_data_arrives_intact(mta: Mta, source: str) -> None:
    content = body(3 << 20)
    with smtplib.SMTP(HOST, mta.port, source_address=(source, 0), timeout=30) as s:
        s.ehlo("client.sender.test")
        assert s.sendmail("carol@sender.test", ["alice@example.test"], HEADERS + content) == {}
    (message,) = mta.wait_for_messages("alice", 1, timeout=30)
    assert stored_body(message) == content


def test_large_message_over_bdat_arrives_intact(mta: Mta) -> None:
    content = HEADERS + body(2 << 20)
    cuts = [0, 1000, 700_000, 1_500_000, len(content)]
    client = RawClient(mta.port)
    try:
        assert client.cmd(b"EHLO client.sender.test").startswith(b"250")
        assert client.cmd(b"MAIL FROM:<carol@sender.test>").startswith(b"250")
        assert client.cmd(b"RCPT TO:<alice@example.test>").startswith(b"250")
        for a, b in itertools.pairwise(cuts):
            last = b" LAST" if b == len(content) else b""
            client.send(b"BDAT %d%s\r\n" % (b - a, last) + content[a:b])
            reply = client.reply()
            assert reply.startswith(b"250"), reply
        assert b"queued as" in reply
        assert client.cmd(b"QUIT").startswith(b"221")
    finally:
        client.close()
    (message,) = mta.wait_for_messages("alice", 1, timeout=30)
    assert stored_body(message) == body(2 << 20)


def test_a_1_mib_message_goes_through_a_body_file_and_leaves_none(mta: Mta) -> None:
    # 1 MiB is above queue_body_file_threshold (256 KiB): the body is queued in a file
    # beside queue.db, delivered from it, and the file goes with the message.
    content = body(1 << 20)
    with smtplib.SMTP(HOST, mta.port, timeout=30) as s:
        s.ehlo("client.sender.test")
        assert s.sendmail("carol@sender.test", ["alice@example.test"], HEADERS + content) == {}
    (message,) = mta.wait_for_messages("alice", 1, timeout=30)
    assert stored_body(message) == content
    bodies = mta.data / "queue" / "bodies"
    assert bodies.is_dir()  # the body did go to a file
    deadline = time.monotonic() + 10
    while [p for p in bodies.rglob("*") if p.is_file()] and time.monotonic() < deadline:
        time.sleep(0.05)  # the file is unlinked right after the commit that removes the row
    assert [p for p in bodies.rglob("*") if p.is_file()] == []
