"""``ironpost queue migrate --to URL`` and ``ironpost queue nodes`` as subprocesses: a real
ironpost on SQLite, a real PostgreSQL (tests/conftest.py), then the same ironpost on the
migrated PostgreSQL queue delivering what the SQLite one had left."""

from __future__ import annotations

import json
import smtplib
import time

import pytest
from mta_harness import HOST, Mta, MtaFactory, free_port
from test_sendmail import sendmail

pytestmark = pytest.mark.integration

FAR = b"From: x@sender.test\r\nTo: far@example.test\r\nSubject: far\r\n\r\nhello\r\n"
BIG_LINE = b"y" * 998 + b"\n"
BIG = b"Subject: big\nTo: bob@example.test\n\n" + BIG_LINE * 300  # ~300 KiB: a body file


def wait_deferred(mta: Mta, timeout: float = 15.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        result = mta.cli("queue", "list", "--json")
        assert result.returncode == 0, result.stderr
        messages: list[dict[str, object]] = json.loads(result.stdout)
        if messages and all(m["state"] == "deferred" for m in messages):
            return messages
        if time.monotonic() > deadline:
            raise AssertionError(f"not deferred: {messages}")
        time.sleep(0.1)


def test_migrate_refuses_a_running_server_then_moves_the_stopped_queue(
    mta_factory: type[MtaFactory], pg_url: str
) -> None:
    mta = mta_factory.start()
    with smtplib.SMTP(HOST, mta.port, timeout=10) as s:
        assert s.sendmail("x@sender.test", ["far@example.test"], FAR) == {}
    [far] = wait_deferred(mta)

    # The server is running: it would go on writing to the queue being emptied.
    refused = mta.cli("queue", "migrate", "--to", pg_url)
    assert refused.returncode == 75, refused
    assert "running" in refused.stderr and "stop it" in refused.stderr
    assert refused.stdout == ""
    assert [m["id"] for m in wait_deferred(mta)] == [far["id"]]
    # A SQLite queue is no cluster.
    nodes = mta.cli("queue", "nodes")
    assert nodes.returncode == 0 and "not shared" in nodes.stdout

    mta.stop()
    for args, message in (
        (["-f", "cron@example.test", "alice@example.test"], b"Subject: small\n\nhi alice\n"),
        (["-f", "cron@example.test", "bob@example.test"], BIG),
    ):
        done = sendmail(["-C", str(mta.dir), *args], message)
        assert done.returncode == 0, done.stderr

    bodies = mta.data / "queue" / "bodies"
    assert len([p for p in bodies.rglob("*") if p.is_file()]) == 1  # bob's big body

    bad = mta.cli("queue", "migrate", "--to", "mysql://db/queue")
    assert bad.returncode == 78 and "not a postgresql:// URL" in bad.stderr
    away = mta.cli("queue", "migrate", "--to", f"postgresql://ip:pw@127.0.0.1:{free_port()}/q")
    assert away.returncode == 75 and "cannot connect" in away.stderr
    assert ":pw@" not in away.stderr

    moved = mta.cli("queue", "migrate", "--to", pg_url)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout == "ironpost queue: Migrated: 3 messages\n"
    assert "Mail queue is empty" in mta.cli("queue", "list").stdout
    again = mta.cli("queue", "migrate", "--to", pg_url)
    assert again.stdout == "ironpost queue: Migrated: 0 messages\n"
    assert [p for p in bodies.rglob("*") if p.is_file()] == []  # the big body file went too

    # The same host, now a node of the PostgreSQL queue.
    with open(mta.dir / "main.cf", "a") as main_cf:
        main_cf.write(
            f"queue_engine = postgresql\nqueue_database_url = {pg_url}\n"
            "queue_node_name = node-a\nqueue_lease_time = 30s\n"
        )
    mta.start()
    [alice] = mta.wait_for_messages("alice", 1, timeout=20)
    [bob] = mta.wait_for_messages("bob", 1, timeout=20)
    assert b"hi alice" in alice
    assert bob.replace(b"\r\n", b"\n").count(BIG_LINE) == 300
    # The deferred message kept its id, its attempts and its reason.
    [still] = wait_deferred(mta)
    assert still["id"] == far["id"]
    rcpt = still["recipients"][0]  # type: ignore[index]
    assert rcpt["attempts"] >= far["recipients"][0]["attempts"]  # type: ignore[index]

    listed = mta.cli("queue", "nodes")
    assert listed.returncode == 0, listed.stderr
    header, line = listed.stdout.splitlines()
    assert header.split() == ["NAME", "PID", "STARTED", "HEARTBEAT", "ACTIVE", "STATUS"]
    assert mta.process is not None
    assert line.split()[:2] == ["node-a", str(mta.process.pid)]
    assert line.split()[-1] == "alive"
    [node] = json.loads(mta.cli("queue", "nodes", "--json").stdout)
    assert (node["name"], node["pid"], node["stale"]) == ("node-a", mta.process.pid, False)
    assert node["heartbeat_age"] < 30

    # Stopped, the node stays listed (and turns stale after a lease time).
    mta.stop()
    gone = mta.cli("queue", "nodes", "--json")
    assert [n["name"] for n in json.loads(gone.stdout)] == ["node-a"]
