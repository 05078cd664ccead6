"""The queue manager against the real SQLite queue, a real Router and real Maildirs.

Remote destinations go to a scripted RecordingTransport (ironpost.testing.transport),
so the manager's decisions (retry times, bounces, notices, dead destinations,
concurrency) are observable without a network. The SMTP transport itself is tested
against real peers elsewhere.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import os
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from ironpost.config.tables import DictTable
from ironpost.delivery.local import DiscardTransport, ErrorTransport, MaildirTransport
from ironpost.delivery.manager import QueueManager
from ironpost.delivery.notices import Notices
from ironpost.delivery.transport import NextHop, Transport
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
from ironpost.scheduler import Feedback, Scheduler, SchedulerConfig
from ironpost.testing.transport import RecordingTransport, reply

T = TypeVar("T")
NOW = 1_800_000_000.0
MIN_BACKOFF = 300.0
CONTENT = b"From: alice@example.org\r\nSubject: hello\r\nMessage-ID: <m1@x>\r\n\r\nHi Bob.\r\n"
CLIENT = ClientInfo("192.0.2.7", "mx.example.org", "mx.example.org", "ESMTP")
LINE = re.compile(
    r"^(?P<month>\w{3}) [ \d]\d \d\d:\d\d:\d\d mx1 ironpost/(?P<service>\w+)\[\d+\]: "
    r"(?P<rest>.*)$"
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Settings:
    """The few main.cf values the notices read (bounce_recipient_for)."""

    VALUES = {
        "myorigin": "example.net",
        "double_bounce_sender": "double-bounce",
        "2bounce_notice_recipient": "postmaster",
    }

    def text(self, name: str) -> str:
        return self.VALUES[name]


@dataclass
class Env:
    store: SqliteQueue
    router: Router
    log: io.StringIO
    maillog: MailLog
    clock: Clock
    mail: Path
    remote: RecordingTransport
    manager: QueueManager
    scheduler: Scheduler

    def lines(self, service: str | None = None) -> list[str]:
        out = []
        for line in self.log.getvalue().splitlines():
            m = LINE.match(line)
            assert m is not None, line
            if service is None or m["service"] == service:
                out.append(m["rest"])
        return out

    def drain(self) -> None:
        run(self.manager.drain)


def make_router(mail: Path) -> Router:
    aliases = {
        "team@example.net": "bob@example.net, carol@example.net",
        "both@example.net": "bob@example.net, bobby@example.net",
        "postmaster@example.net": "admin@example.net",
    }
    mailboxes = {
        "bob@example.net": "example.net/bob/",
        "bobby@example.net": "example.net/bob/",  # a second address, same mailbox
        "carol@example.net": "example.net/carol/",
        "admin@example.net": "example.net/admin/",
        "alice@example.net": "example.net/alice/",
        "broken@example.net": "example.net/broken/",
    }
    transport_maps = {
        "gone.example": "error:5.1.2 this domain is closed",
        "sink.example": "discard:",
    }
    from ironpost.routing.transports import TransportConfig

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
            transports=TransportConfig(
                (DictTable("inline:transport", transport_maps),),
                "smtp",
                "relay",
                "local",
                "virtual",
                "",
                "+",
                False,
            ),
        )
    )


def build(env_dir: Path, remote: RecordingTransport, **config: object) -> Env:
    store = open_queue(env_dir / "queue")
    mail = env_dir / "mail"
    router = make_router(mail)
    clock = Clock(NOW)
    log = io.StringIO()
    maillog = MailLog(log, hostname="mx1.example.net", clock=clock)
    sched_config = SchedulerConfig(backoff_jitter=0.0, **config)  # type: ignore[arg-type]
    scheduler = Scheduler(sched_config, clock=clock)
    transports: dict[str, Transport] = {
        "maildir": MaildirTransport(
            router, hostname="mx1.example.net", maillog=maillog, clock=clock
        ),
        "discard": DiscardTransport(),
        "error": ErrorTransport(),
        "smtp": remote,
    }
    notices = Notices(
        store,
        router,
        maillog,
        Settings(),
        scheduler.lifetime,
        hostname="mx1.example.net",
        bounce_size_limit=50000,
        clock=clock,
    )
    manager = QueueManager(
        store,
        router,
        maillog,
        transports=transports,
        limiter=scheduler.destinations,
        backoff=scheduler.backoff,
        lifetime=scheduler.lifetime,
        notices=notices,
        clock=clock,
        poll_interval=60.0,
    )
    return Env(store, router, log, maillog, clock, mail, remote, manager, scheduler)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = build(tmp_path, RecordingTransport(reply(450, "4.2.0", "try later")))
    yield e
    run(e.manager.stop)
    e.store.close()


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coro_fn()

    return asyncio.run(main())


def submit(
    env: Env,
    *rcpts: str,
    sender: str = "alice@example.org",
    age: float = 2.1,
    notify: tuple[str, ...] | None = None,
    ret: str | None = None,
) -> str:
    """Enqueue as the server does: each RCPT TO expanded through the router."""
    specs = tuple(
        RecipientSpec(address=final, original=r, notify=notify)
        for r in rcpts
        for final in env.router.expand(r)
    )
    envelope = Envelope(
        sender=sender,
        recipients=specs,
        size=len(CONTENT),
        body_type=None,
        smtputf8=False,
        ret=ret,
        envid=None,
        client=CLIENT,
        arrival=env.clock.now - age,
    )
    return run(lambda: env.store.submit(envelope, CONTENT))


def new_files(maildir: Path) -> list[Path]:
    new = maildir / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def others(env: Env, *known: str) -> list[str]:
    return [m.id for m in env.store.list_messages() if m.id not in known]


# -- local delivery --------------------------------------------------------------------


def test_local_mailbox_delivered_logged_and_removed(env: Env) -> None:
    qid = submit(env, "bob@example.net")
    env.drain()
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
    assert env.store.list_messages() == []  # no notice: nobody asked NOTIFY=SUCCESS


def test_alias_one_to_many_and_shared_mailbox(env: Env) -> None:
    qid = submit(env, "team@example.net", "both@example.net")
    env.drain()
    # bob (via team), bob and bobby (one mailbox) are one mailbox: one copy of the message
    for user in ("bob", "carol"):
        assert len(new_files(env.mail / "example.net" / user)) == 1
    assert len(env.lines("virtual")) == 4
    assert env.store.get(qid) is None


def test_maildir_files_are_owned_0600(env: Env) -> None:
    submit(env, "bob@example.net")
    env.drain()
    [path] = new_files(env.mail / "example.net" / "bob")
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_failing_maildir_deferred_not_lost(env: Env) -> None:
    box = env.mail / "example.net" / "broken"
    box.parent.mkdir(parents=True)
    box.write_bytes(b"a file where the Maildir should be")
    qid = submit(env, "broken@example.net")
    env.drain()
    [line] = env.lines("virtual")[-1:]
    assert "dsn=4.3.0, status=deferred (Maildir write failed: " in line
    assert any("maildir delivery failed:" in x and "broken" in x for x in env.lines("virtual"))
    msg = env.store.get(qid)
    assert msg is not None and msg.state is QueueState.DEFERRED
    [r] = msg.recipients
    assert r.last_reply is not None and str(env.mail) not in r.last_reply
    assert r.next_attempt == NOW + MIN_BACKOFF
    box.unlink()  # the operator fixes the mailbox; the retry delivers
    env.clock.now = NOW + MIN_BACKOFF
    env.drain()
    assert len(new_files(box)) == 1
    assert env.store.get(qid) is None


# -- remote: retries, bounces, notices -------------------------------------------------


def test_remote_deferral_follows_the_backoff(env: Env) -> None:
    qid = submit(env, "someone@remote.example")
    env.drain()
    [req] = env.remote.requests
    assert str(req.nexthop) == "smtp:remote.example"
    [line] = env.lines("smtp")
    assert f"{qid}: to=<someone@remote.example>, relay=remote.example[127.0.0.1]:25," in line
    assert "dsn=4.2.0, status=deferred (host remote.example[127.0.0.1] said: 450" in line
    msg = env.store.get(qid)
    assert msg is not None and msg.state is QueueState.DEFERRED
    assert msg.recipients[0].next_attempt == NOW + MIN_BACKOFF
    # Second failure: the delay doubles.
    env.clock.now = NOW + MIN_BACKOFF
    env.drain()
    msg = env.store.get(qid)
    assert msg is not None and msg.recipients[0].attempts == 2
    assert msg.recipients[0].next_attempt == env.clock.now + 2 * MIN_BACKOFF


def test_mixture_retry_does_not_redeliver(env: Env) -> None:
    qid = submit(env, "bob@example.net", "someone@remote.example")
    env.drain()
    env.clock.now = NOW + MIN_BACKOFF
    env.drain()
    assert len(new_files(env.mail / "example.net" / "bob")) == 1
    msg = env.store.get(qid)
    assert msg is not None
    assert {r.spec.address: r.status for r in msg.recipients} == {
        "bob@example.net": RecipientStatus.DELIVERED,
        "someone@remote.example": RecipientStatus.DEFERRED,
    }


def test_5xx_bounces_with_a_dsn_to_the_sender(tmp_path: Path) -> None:
    env = build(tmp_path, RecordingTransport(reply(550, "5.1.1", "no such user")))
    qid = submit(env, "someone@remote.example", sender="alice@example.net")
    env.drain()
    assert env.store.get(qid) is None  # bounced: final
    [notice] = env.lines("bounce")
    assert f"{qid}: sender non-delivery notification: " in notice
    # The bounce was queued and delivered like any mail, to alice@example.net.
    [path] = new_files(env.mail / "example.net" / "alice")
    dsn = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert str(dsn["To"]) == "alice@example.net"
    assert dsn["Return-Path"] == "<>"
    parts = list(dsn.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]
    text = parts[1].as_string()
    assert "Final-Recipient: rfc822; someone@remote.example" in text
    assert "Action: failed" in text
    assert "Status: 5.1.1" in text
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such user" in text
    assert "Remote-MTA: dns; remote.example" in text
    assert b"Subject: hello" in parts[2].as_bytes()
    assert env.store.list_messages() == []
    env.store.close()


def test_notify_never_sends_no_bounce(tmp_path: Path) -> None:
    env = build(tmp_path, RecordingTransport(reply(550, "5.1.1", "no such user")))
    qid = submit(env, "someone@remote.example", notify=("NEVER",))
    env.drain()
    assert env.store.get(qid) is None
    assert env.store.list_messages() == []
    assert env.lines("bounce") == []
    env.store.close()


def test_a_bounce_that_bounces_goes_to_the_postmaster_once(tmp_path: Path) -> None:
    env = build(tmp_path, RecordingTransport(reply(550, "5.1.1", "no such user")))
    submit(env, "someone@remote.example", sender="")  # this message is itself a bounce
    env.drain()
    # The double bounce went to postmaster -> admin@example.net (an alias), delivered.
    [path] = new_files(env.mail / "example.net" / "admin")
    assert b"Undelivered Mail Returned to Sender" in path.read_bytes()
    assert env.store.list_messages() == []
    # A failing double bounce is discarded: no loop.
    submit(env, "someone@remote.example", sender="double-bounce@example.net")
    env.drain()
    assert env.store.list_messages() == []
    assert len(new_files(env.mail / "example.net" / "admin")) == 1
    env.store.close()


def test_error_transport_and_unknown_user_bounce(env: Env) -> None:
    q1 = submit(env, "x@gone.example", notify=("NEVER",))
    q2 = submit(env, "nobody@example.net", notify=("NEVER",))
    env.drain()
    lines = env.lines("error")
    assert any(
        f"{q1}: to=<x@gone.example>" in x
        and "dsn=5.1.2, status=bounced (this domain is closed)" in x
        for x in lines
    )
    assert any(
        f"{q2}: to=<nobody@example.net>" in x
        and "dsn=5.1.1, status=bounced (User unknown in virtual mailbox table)" in x
        for x in lines
    )
    assert env.store.list_messages() == []


def test_discard_transport(env: Env) -> None:
    qid = submit(env, "x@sink.example")
    env.drain()
    assert any(
        f"{qid}: to=<x@sink.example>" in x and "status=sent" in x for x in env.lines("discard")
    )
    assert env.store.list_messages() == []


def test_queue_lifetime_expiry_bounces_with_the_last_reason(env: Env) -> None:
    qid = submit(env, "someone@remote.example", sender="alice@example.net", age=5 * 86400 + 1)
    env.drain()
    assert env.store.get(qid) is None
    assert any("status=expired, returned to sender" in x for x in env.lines("qmgr"))
    [path] = new_files(env.mail / "example.net" / "alice")
    data = path.read_bytes()
    assert b"Action: failed" in data and b"Status: 4.2.0" in data


def test_delay_warning_is_sent_once(env: Env) -> None:
    qid = submit(env, "someone@remote.example", sender="alice@example.net", age=4 * 3600 + 5)
    env.drain()
    box = env.mail / "example.net" / "alice"
    [path] = new_files(box)
    data = path.read_bytes()
    assert b"Delayed Mail (still being retried)" in data and b"Action: delayed" in data
    msg = env.store.get(qid)
    assert msg is not None and msg.warned
    env.clock.now += 2 * MIN_BACKOFF
    env.drain()
    assert len(new_files(box)) == 1  # still deferred, no second warning


def test_success_notice_when_asked(tmp_path: Path) -> None:
    from ironpost.testing.transport import accept

    env = build(tmp_path, RecordingTransport(accept))
    submit(env, "bob@example.net", sender="alice@example.net", notify=("SUCCESS",))
    env.drain()
    [path] = new_files(env.mail / "example.net" / "alice")
    assert b"Action: delivered" in path.read_bytes()
    env.store.close()


# -- destinations ----------------------------------------------------------------------


def test_dead_destination_is_not_hammered(tmp_path: Path) -> None:
    remote = RecordingTransport(reply(421, "4.4.1", "", dead=True))
    env = build(tmp_path, remote, initial_destination_concurrency=1)
    submit(env, "a@down.example", notify=("NEVER",))
    env.drain()
    assert len(remote.requests) == 1
    assert env.scheduler.destinations.is_dead(remote.requests[0].nexthop)
    qid = submit(env, "b@down.example", notify=("NEVER",))
    env.drain()
    assert len(remote.requests) == 1  # not tried: deferred at once
    [r] = env.store.get(qid).recipients  # type: ignore[union-attr]
    assert r.status is RecipientStatus.DEFERRED
    assert r.last_reply is not None and "delivery temporarily suspended" in r.last_reply
    # Another destination is unaffected.
    submit(env, "c@up.example", notify=("NEVER",))
    env.drain()
    assert [str(q.nexthop) for q in remote.requests][-1] == "smtp:up.example"
    env.store.close()


def test_concurrency_per_destination_is_capped(tmp_path: Path) -> None:
    from ironpost.testing.transport import accept

    remote = RecordingTransport(accept, delay=0.05)
    env = build(
        tmp_path,
        remote,
        initial_destination_concurrency=2,
        default_destination_concurrency_limit=2,
    )
    for i in range(8):
        submit(env, f"u{i}@slow.example")
    env.drain()
    assert len(remote.requests) == 8
    assert remote.max_in_flight == 2
    env.store.close()


def test_slow_start_grows_the_window_up_to_the_limit(tmp_path: Path) -> None:
    from ironpost.testing.transport import accept

    remote = RecordingTransport(accept, delay=0.02)
    env = build(
        tmp_path,
        remote,
        initial_destination_concurrency=1,
        default_destination_concurrency_limit=4,
    )
    for i in range(40):
        submit(env, f"u{i}@slow.example")
    env.drain()
    assert len(remote.requests) == 40
    assert 1 < remote.max_in_flight <= 4
    env.store.close()


def test_a_released_slot_goes_to_one_waiter_not_to_all(tmp_path: Path) -> None:
    """60 messages queue for one slot: each release hands it on directly, so the gate
    is consulted a few times per message, not once per waiter per release (the
    wake-everyone herd made that 60 x 60)."""
    from ironpost.testing.transport import accept

    remote = RecordingTransport(accept, delay=0.001)
    env = build(
        tmp_path,
        remote,
        initial_destination_concurrency=1,
        default_destination_concurrency_limit=1,
    )
    limiter = env.scheduler.destinations
    calls = 0
    real_acquire = limiter.acquire

    def counting(hop: NextHop) -> bool:
        nonlocal calls
        calls += 1
        return real_acquire(hop)

    limiter.acquire = counting  # type: ignore[method-assign]
    for i in range(60):
        submit(env, f"u{i}@slow.example")
    env.drain()
    assert len(remote.requests) == 60
    assert remote.max_in_flight == 1
    assert calls <= 3 * 60
    env.store.close()


def test_waiters_of_a_destination_that_dies_are_deferred_at_once(tmp_path: Path) -> None:
    remote = RecordingTransport(reply(421, "4.4.1", "", dead=True), delay=0.01)
    env = build(
        tmp_path,
        remote,
        initial_destination_concurrency=1,
        default_destination_concurrency_limit=1,
    )
    ids = [submit(env, f"u{i}@down.example", notify=("NEVER",)) for i in range(5)]
    env.drain()
    assert len(remote.requests) == 1  # the others waited, then saw it die
    for qid in ids:
        [r] = env.store.get(qid).recipients  # type: ignore[union-attr]
        assert r.status is RecipientStatus.DEFERRED
    assert sum("delivery temporarily suspended" in line for line in env.lines()) == 4
    env.store.close()


def test_a_cancelled_waiter_gives_its_slot_back(tmp_path: Path) -> None:
    from ironpost.testing.transport import accept

    env = build(tmp_path, RecordingTransport(accept), initial_destination_concurrency=1)
    hop = NextHop("smtp", "slow.example")
    manager = env.manager
    limiter = env.scheduler.destinations

    async def main() -> None:
        assert await manager._acquire(hop)  # the only slot
        waiter = asyncio.ensure_future(manager._acquire(hop))
        await asyncio.sleep(0)
        assert not waiter.done()
        limiter.release(hop, Feedback.SUCCESS)
        manager._grant()  # the slot is taken for the waiter...
        waiter.cancel()  # ...which is cancelled before it runs: the slot comes back
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert limiter.in_flight(hop) == 0
        assert await manager._acquire(hop)

    asyncio.run(main())
    env.store.close()


def test_recipient_limit_splits_requests(tmp_path: Path) -> None:
    from ironpost.testing.transport import accept

    remote = RecordingTransport(accept)
    env = build(tmp_path, remote, default_destination_recipient_limit=2)
    submit(env, *(f"u{i}@many.example" for i in range(5)))
    env.drain()
    assert sorted(len(r.recipients) for r in remote.requests) == [1, 2, 2]
    assert env.store.list_messages() == []
    env.store.close()


def test_a_transport_that_raises_defers_everything(tmp_path: Path) -> None:
    def broken(request, rcpt):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")

    env = build(tmp_path, RecordingTransport(broken))
    qid = submit(env, "a@x.example", "b@x.example")
    env.drain()
    msg = env.store.get(qid)
    assert msg is not None
    assert [r.status for r in msg.recipients] == [RecipientStatus.DEFERRED] * 2
    env.store.close()


def test_run_wake_and_stop(env: Env) -> None:
    box = env.mail / "example.net" / "bob"

    async def main() -> None:
        task = asyncio.create_task(env.manager.run())
        await asyncio.sleep(0.05)
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
        env.manager.wake()
        for _ in range(200):
            if new_files(box):
                break
            await asyncio.sleep(0.01)
        await env.manager.stop()
        await asyncio.wait_for(task, 2)

    run(main)
    assert len(new_files(box)) == 1
    assert env.store.list_messages() == []


def test_a_message_whose_outcomes_cannot_be_recorded_is_given_back_deferred(env: Env) -> None:
    qid = submit(env, "bob@example.net")
    # The database refuses the outcome (as a failing disk would), not the give-back.
    env.store._admin_write(
        "CREATE TRIGGER no_outcome BEFORE UPDATE OF status ON recipients"
        " WHEN NEW.status = 'delivered' BEGIN SELECT RAISE(ABORT, 'disk trouble'); END",
        (),
    )
    env.drain()
    assert env.store.state_of(qid) is QueueState.DEFERRED  # not left ACTIVE until a restart
    (rcpt,) = env.store.get(qid).recipients  # type: ignore[union-attr]
    assert rcpt.status is RecipientStatus.DEFERRED and rcpt.next_attempt > NOW
    assert any(f"{qid}: delivery failed" in line and "deferred" in line for line in env.lines())
    env.store._admin_write("DROP TRIGGER no_outcome", ())
    env.clock.now = rcpt.next_attempt
    env.drain()
    assert env.store.get(qid) is None  # delivered (again: at least once) and removed
