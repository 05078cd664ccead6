"""The maillog format's acceptance test: Debian's pflogsumm reads a real ironpost's log.

A scripted session against a real ironpost: mail accepted and delivered locally and to a
real peer (smtp-sink), deferred by a peer that answers 4xx, bounced by a peer that
answers 5xx (its DSN then delivered locally), and two RCPTs rejected (relay denied,
unknown user). ``pflogsumm --syslog-name=ironpost`` must count each right and name the
top senders and recipients: in clear, and as tokens when the log is pseudonymised.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import subprocess
import time
from pathlib import Path

import pytest
from mta_harness import HOST, STRANGER, Mta, MtaFactory, RawClient
from peers import SinkFactory

from ironpost.maillog.keys import KEY_FILE, load_keys
from ironpost.maillog.privacy import Pseudonymizer

pytestmark = pytest.mark.skipif(shutil.which("pflogsumm") is None, reason="needs pflogsumm")


def _send(mta: Mta, sender: str, rcpt: str) -> None:
    with smtplib.SMTP(HOST, mta.port, timeout=10) as c:
        c.sendmail(
            sender,
            [rcpt],
            f"From: {sender}\r\nTo: {rcpt}\r\nSubject: t\r\n"
            f"Message-ID: <{time.time()}@t>\r\n\r\nhi\r\n",
        )


def _wait(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def run_session(mta_factory: type[MtaFactory], smtp_sink: type[SinkFactory], privacy: str) -> Mta:
    """The scripted session; returns the (still running) MTA once the log is complete."""
    ok = smtp_sink.start(0)
    soft = smtp_sink.start(1, "-r", "RCPT")
    hard = smtp_sink.start(2, "-f", "RCPT")
    mta = mta_factory.start(
        f"""
        maillog_privacy = {privacy}
        relay_domains = relay.test, slow.test, hard.test
        transport_maps = inline:{{ relay.test=smtp:{ok.nexthop}, slow.test=smtp:{soft.nexthop},
            hard.test=smtp:{hard.nexthop} }}
        """
    )
    _send(mta, "alice@example.test", "bob@example.test")  # delivered, maildir
    _send(mta, "alice@example.test", "carol@relay.test")  # delivered, smtp
    _send(mta, "alice@example.test", "dave@slow.test")  # deferred (450)
    _send(mta, "bob@example.test", "nobody@hard.test")  # bounced (500); DSN to bob
    client = RawClient(mta.port, source=STRANGER)
    client.cmd(b"EHLO stranger.test")
    client.cmd(b"MAIL FROM:<spam@sender.test>")
    assert client.cmd(b"RCPT TO:<victim@remote.test>").startswith(b"554")  # relay denied
    assert client.cmd(b"RCPT TO:<nobody@example.test>").startswith(b"550")  # unknown user
    client.cmd(b"QUIT")
    client.close()
    assert _wait(
        lambda: (
            mta.maillog.count(": removed") >= 4
            and "status=deferred" in mta.maillog
            and "disconnect from unknown" in mta.maillog
        )
    ), mta.maillog
    time.sleep(0.3)  # the last flush
    return mta


def pflogsumm(log: Path) -> str:
    return subprocess.run(
        ["pflogsumm", "--syslog-name=ironpost", str(log)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def grand_total(report: str, what: str) -> int:
    m = re.search(rf"^\s+(\d+)\s+{what}\b", report, re.MULTILINE)
    assert m is not None, f"{what} not in report:\n{report}"
    return int(m.group(1))


def section(report: str, title: str) -> dict[str, int]:
    """``count name`` rows under a pflogsumm section heading."""
    m = re.search(rf"^{re.escape(title)}\n-+\n((?:\s+\d+\s+\S+\n)*)", report, re.MULTILINE)
    assert m is not None, f"no section {title!r} in:\n{report}"
    rows = (line.split() for line in m.group(1).splitlines())
    return {name: int(count) for count, name in rows}


def _check_counts(report: str) -> None:
    assert grand_total(report, "received") == 4
    assert grand_total(report, "delivered") == 3  # bob, carol, and bob's DSN
    assert grand_total(report, "deferred") == 1
    assert grand_total(report, "bounced") == 1
    assert grand_total(report, "rejected") == 2


def test_pflogsumm_counts_a_clear_log(mta_factory, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    mta = run_session(mta_factory, smtp_sink, "off")
    report = pflogsumm(mta.data / "maillog")
    _check_counts(report)
    assert section(report, "Senders by message count") == {
        "alice@example.test": 3,
        "bob@example.test": 1,
    }
    assert section(report, "Recipients by message count") == {
        "bob@example.test": 2,
        "carol@relay.test": 1,
    }
    rejects = report.split("message reject detail", 1)[1]
    assert "Relay access denied" in rejects and "User unknown" in rejects


def test_pflogsumm_knows_every_messages_size(mta_factory, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    mta = run_session(mta_factory, smtp_sink, "off")
    assert "Messages with no size data" not in pflogsumm(mta.data / "maillog")


def test_pflogsumm_counts_a_pseudonymised_log(mta_factory, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    mta = run_session(mta_factory, smtp_sink, "pseudonymize")
    log = (mta.data / "maillog").read_text()
    assert "alice@" not in log and "127.0.0.66" not in log
    report = pflogsumm(mta.data / "maillog")
    _check_counts(report)
    [key] = load_keys(mta.data / KEY_FILE)
    token = Pseudonymizer(key.secret).address
    assert section(report, "Senders by message count") == {
        token("alice@example.test"): 3,
        token("bob@example.test"): 1,
    }
    assert section(report, "Recipients by message count") == {
        token("bob@example.test"): 2,
        token("carol@relay.test"): 1,
    }
