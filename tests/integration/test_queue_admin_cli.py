"""``ironpost queue`` hold/release/flush/requeue/delete/stats as subprocesses, against a
running ironpost whose remote mail stays deferred (far@example.test -> someone@remote.test)."""

from __future__ import annotations

import json
import smtplib
import time
from datetime import datetime
from typing import Any

from mta_harness import HOST, Mta

MESSAGE = b"From: x@sender.test\r\nTo: far@example.test\r\nSubject: admin\r\n\r\nhello\r\n"


def send(mta: Mta, sender: str) -> None:
    with smtplib.SMTP(HOST, mta.port, timeout=10) as s:
        s.ehlo("client.sender.test")
        assert s.sendmail(sender, ["far@example.test"], MESSAGE) == {}


def queue(mta: Mta) -> list[dict[str, Any]]:
    result = mta.cli("queue", "list", "--json")
    assert result.returncode == 0, result.stderr
    messages: list[dict[str, Any]] = json.loads(result.stdout)
    return messages


def wait_all_deferred(mta: Mta, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        messages = queue(mta)
        if len(messages) == count and all(m["state"] == "deferred" for m in messages):
            return messages
        if time.monotonic() > deadline:
            raise AssertionError(f"not all deferred: {messages}")
        time.sleep(0.1)


def ok(mta: Mta, *args: str) -> str:
    result = mta.cli("queue", *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def test_admin_by_sender_and_domain_while_the_server_runs(mta: Mta) -> None:
    send(mta, "spam@bad.test")
    send(mta, "SPAM@bad.test")
    send(mta, "carol@sender.test")
    wait_all_deferred(mta, 3)

    assert ok(mta, "hold", "--sender", "spam@BAD.test") == (
        "ironpost queue: Placed on hold: 2 messages\n"
    )
    held = [m for m in queue(mta) if m["state"] == "hold"]
    assert sorted(m["sender"].lower() for m in held) == ["spam@bad.test", "spam@bad.test"]
    assert ok(mta, "list").count("! ") == 2  # mailq's hold mark

    stats = ok(mta, "stats")
    assert "hold      2\n" in stats and "deferred  1\n" in stats
    # Only carol's message is in the default queues (incoming, active, deferred).
    assert [line.split()[:2] for line in stats.splitlines() if "remote.test" in line] == [
        ["remote.test", "1"]
    ]
    shape = json.loads(ok(mta, "stats", "--queue", "hold", "--json"))
    assert shape["rows"][1]["destination"] == "remote.test"
    assert shape["rows"][1]["total"] == 2
    by_sender = json.loads(ok(mta, "stats", "--queue", "hold", "-s", "--json"))
    assert by_sender["rows"][1] == {"destination": "bad.test", "total": 2, "buckets": [2] + [0] * 9}

    assert ok(mta, "release", "--sender", "spam@bad.test") == (
        "ironpost queue: Released from hold: 2 messages\n"
    )
    wait_all_deferred(mta, 3)

    before = {m["id"]: m["recipients"][0]["attempts"] for m in queue(mta)}
    flushed_at = time.time()
    assert ok(mta, "flush", "--domain", "REMOTE.test") == "ironpost queue: Flushed: 3 messages\n"
    for m in queue(mta):
        r = m["recipients"][0]
        due = datetime.fromisoformat(r["next_attempt"].replace("Z", "+00:00")).timestamp()
        # Either still waiting with its retry time brought forward, or already retried.
        assert due <= flushed_at + 1 or r["attempts"] > before[m["id"]], m

    assert ok(mta, "requeue", "ALL") == "ironpost queue: Requeued: 3 messages\n"
    assert ok(mta, "delete", "--domain", "remote.test") == "ironpost queue: Deleted: 3 messages\n"
    assert queue(mta) == []
    missing = mta.cli("queue", "hold", "NOSUCHID")
    assert missing.returncode == 1 and "NOSUCHID: no such message" in missing.stderr
