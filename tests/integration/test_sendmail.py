"""sendmail injection with the server stopped, then started: the message is queued at
once and delivered to its Maildir when ironpost runs (Postfix's maildrop behaviour)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from mta_harness import IRONPOST, ROOT, Mta, write_config

pytestmark = pytest.mark.integration


def sendmail(
    args: list[str], stdin: bytes, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src")
    env.pop("MAIL_CONFIG", None)
    env.update(env_extra or {})
    return subprocess.run(
        [*IRONPOST, "sendmail", *args], input=stdin, capture_output=True, timeout=30, env=env
    )


def test_sendmail_queues_while_stopped_then_delivers(tmp_path: Path) -> None:
    directory = tmp_path / "mta"
    directory.mkdir()
    port = write_config(directory)
    mta = Mta(directory, port)

    # The server is not running: the message must still be accepted and queued.
    message = b"Subject: from cron\nTo: alice@example.test\nBcc: bob@example.test\n\nhi\n.\n"
    done = sendmail(["-C", str(directory), "-t", "-f", "cron"], message)
    assert done.returncode == 0, done.stderr
    # MAIL_CONFIG instead of -C, with -i: the lone dot is content.
    done = sendmail(["-i", "bob"], b"Subject: two\n\n.\nend\n", {"MAIL_CONFIG": str(directory)})
    assert done.returncode == 0, done.stderr

    listing = mta.cli("queue", "list")
    assert listing.returncode == 0, listing.stderr
    assert "cron@example.test" in listing.stdout
    assert "alice@example.test" in listing.stdout
    assert "2 Requests." in listing.stdout
    mailq = sendmail(["-bp"], b"", {"MAIL_CONFIG": str(directory)})
    assert mailq.stdout.decode() == listing.stdout

    mta.start()
    try:
        [alice] = mta.wait_for_messages("alice", 1, timeout=15)
        bobs = mta.wait_for_messages("bob", 2, timeout=15)
    finally:
        mta.stop()
    assert b"Subject: from cron" in alice
    assert b"Bcc" not in alice and b"Bcc" not in b"".join(bobs)
    assert b"Return-Path: <cron@example.test>" in alice
    assert b"Message-ID: <" in alice and b"\nDate: " in alice.replace(b"\r\n", b"\n")
    two = next(m for m in bobs if b"Subject: two" in m)
    assert b"\n.\nend" in two.replace(b"\r\n", b"\n")
    assert "Mail queue is empty" in mta.cli("queue", "list").stdout


def test_sendmail_bs_then_delivery(tmp_path: Path) -> None:
    directory = tmp_path / "mta"
    directory.mkdir()
    port = write_config(directory)
    mta = Mta(directory, port)
    script = (
        b"HELO localhost\r\nMAIL FROM:<app@example.test>\r\nRCPT TO:<alice@example.test>\r\n"
        b"DATA\r\nSubject: via bs\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    )
    done = sendmail(["-C", str(directory), "-bs"], script)
    assert done.returncode == 0, done.stderr
    assert b"250 2.0.0 Ok: queued as " in done.stdout
    mta.start()
    try:
        [message] = mta.wait_for_messages("alice", 1, timeout=15)
    finally:
        mta.stop()
    assert b"Subject: via bs" in message


def test_sendmail_reports_config_errors(tmp_path: Path) -> None:
    done = sendmail(["-C", str(tmp_path / "missing"), "a@example.test"], b"x\n")
    assert done.returncode == 78
    assert b"sendmail: fatal:" in done.stderr
    assert b"Traceback" not in done.stderr
