"""kill -9 in the middle of a load: nothing that got a 250 is lost.

smtp-source puts 2,000 messages of load on the server while our own clients send
messages and record the queue id of every ``250 … queued as``. The server is
killed with SIGKILL mid-load and restarted; every acknowledged id must then be
in the queue or in a Maildir (its Received header carries the id).
"""

from __future__ import annotations

import json
import shutil
import smtplib
import subprocess
import threading
import time

import pytest
from mta_harness import HOST, Mta, MtaFactory

pytestmark = pytest.mark.skipif(
    shutil.which("smtp-source") is None, reason="smtp-source comes with postfix (make test)"
)


def _sender(port: int, acked: list[str], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with smtplib.SMTP(HOST, port, timeout=5) as s:
                s.ehlo("loader.test")
                while not stop.is_set():
                    s.mail("load@sender.test")
                    s.rcpt("alice@example.test")
                    code, text = s.data(b"Subject: durable\r\n\r\n" + (b"z" * 76 + b"\r\n") * 50)
                    if code == 250:
                        acked.append(text.decode().rsplit(" ", 1)[-1])
        except (OSError, smtplib.SMTPException):
            time.sleep(0.01)


def test_kill9_mid_load_loses_nothing_acknowledged(mta_factory: type[MtaFactory]) -> None:
    mta: Mta = mta_factory.start()
    load = subprocess.Popen(
        ["smtp-source", "-s", "20", "-m", "2000", "-l", "4096", "-f", "load@sender.test",
         "-t", "bob@example.test", f"{HOST}:{mta.port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    acked: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_sender, args=(mta.port, acked, stop), daemon=True)
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 150 and time.monotonic() < deadline:
        time.sleep(0.02)
    mta.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=10)
    load.kill()
    load.wait()
    assert len(acked) >= 50, "the load did not get going"

    mta.start()
    try:
        # Everything acknowledged is either queued or already delivered.
        delivered = set()
        queued = {m["id"] for m in json.loads(mta.cli("queue", "list", "--json").stdout)}
        for body in mta.messages("alice"):
            marker = body.find(b" id ")
            delivered.add(body[marker + 4 :].split(None, 1)[0].decode())
        missing = [q for q in acked if q not in queued and q not in delivered]
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]}"
        # And the queued ones get delivered after the restart.
        mta.wait_for_messages("alice", len(set(acked)), timeout=30)
    finally:
        mta.stop()
