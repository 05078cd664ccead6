"""The delivery runner against the real SQLite queue and a real Router (no fakes)."""

from __future__ import annotations

import asyncio
import io
import os
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from ironpost.config.tables import DictTable
from ironpost.delivery import DeliveryRunner
from ironpost.maillog import MailLog
from ironpost.queue import (
    ClientInfo,
    Envelope,
    QueueState,
    RecipientSpec,
    RecipientStatus,
    SqliteQueue,
    open_queue,
)
from ironpost.routing import DomainList, Router, RoutingConfig

T = TypeVar("T")
NOW = 1_800_000_000.0
RETRY = 300.0
CONTENT = b"From: alice@example.org\r\nSubject: hello\r\n\r\nHi Bob.\r\n"
CLIENT = ClientInfo("192.0.2.7", "mx.example.org", "mx.example.org", "ESMTP")
LINE = re.compile(
    r"^(?P<month>\w{3}) [ \d]\d \d\d:\d\d:\d\d mx1 ironpost/(?P<service>\w+)\[\d+\]: "
    r"(?P<rest>.*)$"
)


class Clock:
    """A settable clock: delays in the log lines become exact."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    store: SqliteQueue
    router: Router
    log: io.StringIO
    maillog: MailLog
    clock: Clock
    mail: Path
    runner: DeliveryRunner

    def lines(self, service: str | None = None) -> list[str]:
        out = []
        for line in self.log.getvalue().splitlines():
            m = LINE.match(line)
            assert m is not None, line
            if service is None or m["service"] == service:
                out.append(m["rest"])
        return out


def make_router(mail: Path) -> Router:
    aliases = {
        "team@example.net": "bob@example.net, carol@example.net",
        "both@example.net": "bob@example.net, bobby@example.net",
    }
    mailboxes = {
        "bob@example.net": "example.net/bob/",
        "bobby@example.net": "example.net/bob/",  # a second address, same mailbox
        "carol@example.net": "example.net/carol/",
        "broken@example.net": "example.net/broken/",
    }
    return Router(
        RoutingConfig(
            mydestination=DomainList.build(["mx1.example.net"]),
            virtual_alias_domains=DomainList(),
            virtual_mailbox_domains=DomainList.build(["example.net"]),
            relay_domains=DomainList(),
            virtual_alias_maps=(DictTable("inline:aliases", aliases),),
            virtual_mailbox_maps=(DictTable("inline:mailboxes", mailboxes),),
            alias_maps=(),
            local_recipient_maps=(),
            virtual_mailbox_base=mail,
            recipient_delimiter="+",
            allow_percent_hack=True,
            swap_bangpath=True,
            myorigin="example.net",
            myhostname="mx1.example.net",
        )
    )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    store = open_queue(tmp_path / "queue")
    mail = tmp_path / "mail"
    router = make_router(mail)
    clock = Clock(NOW)
    log = io.StringIO()
    maillog = MailLog(log, hostname="mx1.example.net", clock=clock)
    runner = DeliveryRunner(
        store, router, maillog, hostname="mx1.example.net", retry_delay=RETRY, clock=clock
    )
    yield Env(store, router, log, maillog, clock, mail, runner)
    asyncio.run(runner.stop())
    store.close()


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coro_fn()

    return asyncio.run(main())


def submit(env: Env, *rcpts: str, sender: str = "alice@example.org", age: float = 2.1) -> str:
    """Enqueue as the server does: each RCPT TO expanded through the router."""
    specs = tuple(
        RecipientSpec(address=final, original=r) for r in rcpts for final in env.router.expand(r)
    )
    envelope = Envelope(
        sender=sender,
        recipients=specs,
        size=len(CONTENT),
        body_type=None,
        smtputf8=False,
        ret=None,
        envid=None,
        client=CLIENT,
        arrival=NOW - age,
    )
    return run(lambda: env.store.submit(envelope, CONTENT))


def new_files(maildir: Path) -> list[Path]:
    new = maildir / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def test_local_mailbox_delivered_logged_and_removed(env: Env) -> None:
    qid = submit(env, "bob@example.net")
    assert run(env.runner.run_once) == 1
    [path] = new_files(env.mail / "example.net" / "bob")
    assert path.read_bytes() == (
        b"Return-Path: <alice@example.org>\nDelivered-To: bob@example.net\n"
        + CONTENT.replace(b"\r\n", b"\n")
    )
    assert env.lines("virtual") == [
        f"{qid}: to=<bob@example.net>, relay=maildir, delay=2.1, delays=2.1/0/0/0, "
        "dsn=2.0.0, status=sent (delivered to maildir)"
    ]
    assert env.lines("qmgr") == [f"{qid}: removed"]
    assert env.store.get(qid) is None
    assert run(env.runner.run_once) == 0  # nothing left to do


def test_log_line_delays_follow_the_clock(env: Env) -> None:
    submit(env, "bob@example.net", age=30.0)
    env.clock.now = NOW + 0.5  # claimed half a second after NOW
    run(env.runner.run_once)
    [line] = env.lines("virtual")
    assert re.fullmatch(
        r"[0-9A-Z]{16}: to=<bob@example\.net>, relay=maildir, delay=30, "
        r"delays=30/0/0/0, dsn=2\.0\.0, status=sent \(delivered to maildir\)",
        line,
    ), line


def test_null_sender(env: Env) -> None:
    submit(env, "bob@example.net", sender="")
    run(env.runner.run_once)
    [path] = new_files(env.mail / "example.net" / "bob")
    assert path.read_bytes().startswith(b"Return-Path: <>\n")


def test_alias_one_to_many(env: Env) -> None:
    qid = submit(env, "team@example.net")
    assert run(env.runner.run_once) == 2
    for user in ("bob", "carol"):
        [path] = new_files(env.mail / "example.net" / user)
        assert path.read_bytes() == (
            f"Return-Path: <alice@example.org>\nDelivered-To: {user}@example.net\n".encode()
            + CONTENT.replace(b"\r\n", b"\n")
        )
    lines = env.lines("virtual")
    assert sorted(lines) == sorted(
        f"{qid}: to=<{u}@example.net>, orig_to=<team@example.net>, relay=maildir, delay=2.1, "
        "delays=2.1/0/0/0, dsn=2.0.0, status=sent (delivered to maildir)"
        for u in ("bob", "carol")
    )
    assert env.store.get(qid) is None


def test_same_mailbox_twice_is_written_once(env: Env) -> None:
    qid = submit(env, "both@example.net")
    assert run(env.runner.run_once) == 2
    assert len(new_files(env.mail / "example.net" / "bob")) == 1
    assert len(env.lines("virtual")) == 2
    assert env.store.get(qid) is None


def test_remote_recipient_deferred_and_stays_queued(env: Env) -> None:
    qid = submit(env, "someone@remote.example")
    assert run(env.runner.run_once) == 1
    assert env.lines("smtp") == [
        f"{qid}: to=<someone@remote.example>, relay=none, delay=2.1, delays=2.1/0/0/0, "
        "dsn=4.4.1, status=deferred (outbound SMTP delivery not yet available)"
    ]
    assert env.lines("qmgr") == []
    msg = env.store.get(qid)
    assert msg is not None and msg.state is QueueState.DEFERRED
    [r] = msg.recipients
    assert r.status is RecipientStatus.DEFERRED
    assert r.last_reply == "4.4.1 outbound SMTP delivery not yet available"
    assert r.next_attempt == NOW + RETRY

    assert run(lambda: env.store.claim(now=NOW + RETRY - 1, limit=10)) == []
    [again] = run(lambda: env.store.claim(now=NOW + RETRY, limit=10))
    assert again.id == qid


def test_retry_after_delay_through_runner(env: Env) -> None:
    qid = submit(env, "someone@remote.example")
    run(env.runner.run_once)
    env.clock.now = NOW + RETRY - 1
    assert run(env.runner.run_once) == 0
    env.clock.now = NOW + RETRY
    assert run(env.runner.run_once) == 1
    msg = env.store.get(qid)
    assert msg is not None and msg.recipients[0].attempts == 2


def test_unknown_virtual_user_bounced(env: Env) -> None:
    qid = submit(env, "nobody@example.net")
    assert run(env.runner.run_once) == 1
    assert env.lines("error") == [
        f"{qid}: to=<nobody@example.net>, relay=none, delay=2.1, delays=2.1/0/0/0, "
        "dsn=5.1.1, status=bounced (User unknown in virtual mailbox table)"
    ]
    assert env.lines("qmgr") == [f"{qid}: removed"]
    assert env.store.get(qid) is None


def test_failing_maildir_deferred_not_lost(env: Env) -> None:
    box = env.mail / "example.net" / "broken"
    box.parent.mkdir(parents=True)
    box.write_bytes(b"a file where the Maildir should be")
    qid = submit(env, "broken@example.net")
    assert run(env.runner.run_once) == 1
    [line] = env.lines("virtual")
    assert re.fullmatch(
        rf"{qid}: to=<broken@example\.net>, relay=maildir, delay=2\.1, delays=2\.1/0/0/0, "
        r"dsn=4\.3\.0, status=deferred \(maildir delivery failed: .*broken.*: .+\)",
        line,
    ), line
    msg = env.store.get(qid)
    assert msg is not None and msg.state is QueueState.DEFERRED
    [r] = msg.recipients
    assert r.status is RecipientStatus.DEFERRED
    assert r.last_reply is not None and r.last_reply.startswith("4.3.0 Maildir write failed: ")
    assert str(env.mail) not in r.last_reply  # the stored reply never names a path
    assert r.next_attempt == NOW + RETRY

    # The operator fixes the mailbox; the retry delivers.
    box.unlink()
    env.clock.now = NOW + RETRY
    assert run(env.runner.run_once) == 1
    assert len(new_files(box)) == 1
    assert env.store.get(qid) is None


def test_mixture_delivered_and_deferred(env: Env) -> None:
    qid = submit(env, "bob@example.net", "someone@remote.example")
    assert run(env.runner.run_once) == 2
    assert len(new_files(env.mail / "example.net" / "bob")) == 1
    msg = env.store.get(qid)
    assert msg is not None and msg.state is QueueState.DEFERRED
    status = {r.spec.address: r.status for r in msg.recipients}
    assert status == {
        "bob@example.net": RecipientStatus.DELIVERED,
        "someone@remote.example": RecipientStatus.DEFERRED,
    }
    # The retry handles only the deferred recipient: bob gets no second copy.
    env.clock.now = NOW + RETRY
    [again] = run(lambda: env.store.claim(now=NOW + RETRY, limit=10))
    assert [r.spec.address for r in again.recipients] == ["someone@remote.example"]


def test_mixture_retry_does_not_redeliver(env: Env) -> None:
    submit(env, "bob@example.net", "someone@remote.example")
    run(env.runner.run_once)
    env.clock.now = NOW + RETRY
    assert run(env.runner.run_once) == 1
    assert len(new_files(env.mail / "example.net" / "bob")) == 1


def test_outcomes_recorded_in_one_batch(env: Env) -> None:
    for _ in range(5):
        submit(env, "bob@example.net", "carol@example.net")
    before = env.store.commits
    assert run(env.runner.run_once) == 10
    # one claim + one record transaction, however many messages and recipients
    assert env.store.commits - before == 2
    assert len(new_files(env.mail / "example.net" / "bob")) == 5
    assert len(env.lines("qmgr")) == 5


def test_run_wake_and_stop(env: Env) -> None:
    box = env.mail / "example.net" / "bob"
    env.clock.now = NOW

    async def main() -> None:
        runner = DeliveryRunner(
            env.store,
            env.router,
            env.maillog,
            hostname="mx1.example.net",
            clock=env.clock,
            poll_interval=60.0,  # only wake() can make it deliver within the test
        )
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(0.05)  # idle: the first pass found nothing
        envelope = Envelope(
            "alice@example.org",
            (RecipientSpec("bob@example.net", "bob@example.net"),),
            len(CONTENT),
            None,
            False,
            None,
            None,
            CLIENT,
            NOW,
        )
        await env.store.submit(envelope, CONTENT)
        runner.wake()
        for _ in range(200):
            if new_files(box):
                break
            await asyncio.sleep(0.01)
        await runner.stop()
        await asyncio.wait_for(task, 2)

    run(main)
    assert len(new_files(box)) == 1
    assert env.store.list_messages() == []


def test_stop_without_run_is_harmless(env: Env) -> None:
    run(env.runner.stop)
    run(env.runner.stop)


def test_maildir_files_are_owned_0600(env: Env) -> None:
    submit(env, "bob@example.net")
    run(env.runner.run_once)
    [path] = new_files(env.mail / "example.net" / "bob")
    assert os.stat(path).st_mode & 0o777 == 0o600
