"""Queue administration on a real SQLite file: flush, requeue, selection, bulk ops, the
warned flag, the schema upgrade from version 1, and the ``ironpost queue`` commands."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
from queue_testing import build_envelope

from ironpost.cli.main import main
from ironpost.cli.queue import Selection, cmd_apply, cmd_flush
from ironpost.queue import (
    Outcome,
    QueuedMessage,
    QueueState,
    RecipientStatus,
    SqliteQueue,
    open_queue,
)
from ironpost.queue.model import address_domain, normalize_sender
from ironpost.queue.records import SCHEMA_VERSION

T0 = 1_700_000_000.0
LATER = T0 + 3600.0  # the retry time of deferred recipients
NOW = T0 + 60.0  # "now" for the admin operations: before LATER


def submit(store: SqliteQueue, *rcpts: str, sender: str = "alice@example.org") -> str:
    return asyncio.run(store.submit(build_envelope(*rcpts, sender=sender, arrival=T0), b"x\r\n"))


def defer(store: SqliteQueue, message_id: str, *, keep: Sequence[int] = ()) -> None:
    """Claim everything due and defer ``message_id``'s claimed recipients to LATER (those in
    ``keep`` are delivered instead); other claimed messages are deferred too."""

    async def run() -> None:
        claimed = await store.claim(now=T0, limit=1000)
        outcomes = []
        for m in claimed:
            for r in m.recipients:
                if m.id == message_id and r.index in keep:
                    outcomes.append(Outcome(m.id, r.index, RecipientStatus.DELIVERED, "250 ok"))
                else:
                    outcomes.append(
                        Outcome(m.id, r.index, RecipientStatus.DEFERRED, "451 later", LATER)
                    )
        await store.record(outcomes)

    asyncio.run(run())


def msg(store: SqliteQueue, message_id: str) -> QueuedMessage:
    m = store.get(message_id)
    assert m is not None
    return m


def due_now(store: SqliteQueue) -> list[str]:
    claimed = asyncio.run(store.claim(now=NOW, limit=1000))
    return sorted(m.id for m in claimed)


# -- flush ------------------------------------------------------------------------------


def test_flush_makes_deferred_mail_due_but_not_held(store: SqliteQueue) -> None:
    a = submit(store, "x@one.example")
    b = submit(store, "y@two.example")
    c = submit(store, "z@two.example")
    defer(store, a)
    assert store.hold(c)
    assert due_now(store) == []  # LATER has not come
    assert store.flush(now=NOW) == 2  # a and b; c is on hold
    assert msg(store, a).recipients[0].next_attempt == NOW
    assert msg(store, c).state is QueueState.HOLD
    assert due_now(store) == [a, b]


def test_flush_domain_only_touches_that_domains_recipients(store: SqliteQueue) -> None:
    a = submit(store, "x@one.example", "y@Two.Example", "z@sub.two.example")
    b = submit(store, "w@one.example")
    defer(store, a)
    # Exact, case-insensitive domain: sub.two.example is not two.example.
    assert store.flush_domain("TWO.example", now=NOW) == 1
    times = {r.spec.address: r.next_attempt for r in msg(store, a).recipients}
    assert times == {"x@one.example": LATER, "y@Two.Example": NOW, "z@sub.two.example": LATER}
    claimed = asyncio.run(store.claim(now=NOW, limit=10))
    assert [(m.id, [r.spec.address for r in m.recipients]) for m in claimed] == [
        (a, ["y@Two.Example"])
    ]
    assert b not in [m.id for m in claimed]
    assert store.flush_domain("nowhere.example", now=NOW) == 0


def test_flush_reaches_deferred_recipients_of_an_active_message(store: SqliteQueue) -> None:
    a = submit(store, "x@one.example", "y@two.example")
    defer(store, a)
    store.flush_domain("one.example", now=T0 + 1)
    (claimed,) = asyncio.run(store.claim(now=T0 + 1, limit=10))  # x in flight, y deferred
    assert [r.spec.address for r in claimed.recipients] == ["x@one.example"]
    assert store.flush(now=NOW) == 1
    assert msg(store, a).state is QueueState.ACTIVE  # never pulled out from under delivery
    asyncio.run(store.record([Outcome(a, 0, RecipientStatus.DELIVERED, "250 ok")]))
    assert due_now(store) == [a]


# -- requeue ----------------------------------------------------------------------------


def test_requeue_releases_held_mail_and_makes_everything_due(store: SqliteQueue) -> None:
    a = submit(store, "x@one.example", "y@one.example")
    defer(store, a, keep=[0])
    assert store.hold(a)
    assert store.requeue(a, now=NOW)
    m = msg(store, a)
    assert m.state is QueueState.INCOMING
    assert [(r.status, r.attempts) for r in m.recipients] == [
        (RecipientStatus.DELIVERED, 1),  # final recipients stay final
        (RecipientStatus.PENDING, 1),
    ]
    (claimed,) = asyncio.run(store.claim(now=NOW, limit=10))
    assert [r.spec.address for r in claimed.recipients] == ["y@one.example"]
    assert not store.requeue("NOSUCHID")


def test_requeue_leaves_an_active_message_active(store: SqliteQueue) -> None:
    a = submit(store, "x@one.example")
    asyncio.run(store.claim(now=T0, limit=10))
    assert store.requeue_messages([a], now=NOW) == 1
    assert msg(store, a).state is QueueState.ACTIVE
    assert asyncio.run(store.claim(now=NOW, limit=10)) == []  # never handed out twice


def test_requeue_skips_corrupt_messages(store: SqliteQueue) -> None:
    a = submit(store, "x@one.example")
    store._admin_write("UPDATE messages SET state = 'corrupt' WHERE id = ?", (a,))
    assert store.requeue_messages(store.select(), now=NOW) == 0
    assert store.state_of(a) is QueueState.CORRUPT


# -- selection and bulk operations --------------------------------------------------------


def test_select_by_sender_domain_and_state(store: SqliteQueue) -> None:
    a = submit(store, "x@one.example", sender="Alice@Example.ORG")
    b = submit(store, "y@two.example", sender="")
    c = submit(store, "z@two.example", "w@one.example", sender="bob@example.org")
    assert store.select() == [a, b, c]
    assert store.select(sender="alice@example.org") == [a]
    assert store.select(sender="<ALICE@example.org>") == [a]
    assert store.select(sender="") == [b]
    assert store.select(sender="<>") == [b]
    assert store.select(domain="ONE.example") == [a, c]
    assert store.select(domain="two.example", sender="bob@example.org") == [c]
    assert store.select(domain="example") == []
    store.hold(b)
    assert store.select(states=[QueueState.HOLD]) == [b]


def test_select_by_domain_ignores_final_recipients(store: SqliteQueue) -> None:
    a = submit(store, "x@one.example", "y@two.example")
    defer(store, a, keep=[0])
    assert store.select(domain="one.example") == []
    assert store.select(domain="two.example") == [a]


def test_select_non_ascii_sender_case_insensitively(store: SqliteQueue) -> None:
    a = submit(store, "x@one.example", sender="Jörg@Bücher.example")
    assert store.select(sender="JÖRG@BÜCHER.EXAMPLE") == [a]


def test_bulk_hold_release_delete_count_only_what_changed(store: SqliteQueue) -> None:
    ids = [submit(store, f"u{i}@one.example") for i in range(3)]
    assert store.hold_messages([ids[0]]) == 1
    assert store.hold_messages([*ids, "NOSUCHID"]) == 2  # ids[0] was already held
    assert store.release_messages(ids[:2]) == 2
    assert store.release_messages(ids[:2]) == 0
    assert {msg(store, i).state for i in ids} == {QueueState.INCOMING, QueueState.HOLD}
    assert store.delete_messages([ids[0], "NOSUCHID"]) == 1
    assert store.select() == ids[1:]


def test_bulk_operations_cross_chunk_boundaries(store: SqliteQueue) -> None:
    async def fill() -> list[str]:
        envelope = build_envelope("x@one.example", arrival=T0)
        return list(await asyncio.gather(*(store.submit(envelope, b"x") for _ in range(1203))))

    ids = asyncio.run(fill())
    assert store.hold_messages(store.select()) == 1203
    assert store.stats()[QueueState.HOLD] == 1203
    assert store.requeue_messages(ids, now=NOW) == 1203
    assert store.stats()[QueueState.INCOMING] == 1203
    assert store.delete_messages(store.select(domain="one.example")) == 1203
    assert store.select() == []


# -- the warned flag ------------------------------------------------------------------------


def test_mark_warned_is_durable_and_visible_everywhere(tmp_path: Path) -> None:
    store = open_queue(tmp_path / "q")
    a = submit(store, "x@one.example")
    b = submit(store, "y@one.example")
    assert not msg(store, a).warned
    asyncio.run(store.mark_warned([a, a]))
    asyncio.run(store.mark_warned([]))
    store.close()
    store = open_queue(tmp_path / "q")
    try:
        assert msg(store, a).warned and not msg(store, b).warned
        assert [m.warned for m in store.list_messages()] == [True, False]
        claimed = asyncio.run(store.claim(now=T0, limit=10))
        assert {m.id: m.warned for m in claimed} == {a: True, b: False}
    finally:
        store.close()


# -- the schema upgrade ---------------------------------------------------------------------

# The version 1 schema, as ironpost 0.1 created it (copied, not imported: it must not move).
SCHEMA_V1 = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE messages (
        id TEXT PRIMARY KEY, state TEXT NOT NULL, arrival REAL NOT NULL,
        size INTEGER NOT NULL, sender TEXT NOT NULL, next_attempt REAL NOT NULL,
        envelope TEXT NOT NULL)""",
    "CREATE INDEX messages_due ON messages (state, next_attempt)",
    "CREATE TABLE message_content (message_id TEXT PRIMARY KEY, content BLOB NOT NULL)",
    """CREATE TABLE recipients (
        message_id TEXT NOT NULL, idx INTEGER NOT NULL, address TEXT NOT NULL,
        original TEXT NOT NULL, notify TEXT, orcpt TEXT, status TEXT NOT NULL,
        attempts INTEGER NOT NULL, next_attempt REAL NOT NULL, last_reply TEXT,
        PRIMARY KEY (message_id, idx))""",
    "INSERT INTO schema_version (version) VALUES (1)",
)
ENVELOPE_V1 = (
    '{"v":1,"sender":"old@example.org","size":3,"body_type":null,"smtputf8":false,'
    '"ret":null,"envid":null,"arrival":1700000000.0,'
    '"client":["192.0.2.1","mx.example.org","mx.example.org","ESMTP",null,null]}'
)


def test_a_version_1_queue_opens_upgraded_and_keeps_its_mail(tmp_path: Path) -> None:
    directory = tmp_path / "q"
    directory.mkdir()
    conn = sqlite3.connect(directory / "queue.db")
    for statement in SCHEMA_V1:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO messages VALUES ('OLD1', 'deferred', ?, 3, 'old@example.org', ?, ?)",
        (T0, LATER, ENVELOPE_V1),
    )
    conn.execute("INSERT INTO message_content VALUES ('OLD1', x'782020')")
    conn.executemany(
        "INSERT INTO recipients VALUES ('OLD1', ?, ?, ?, NULL, NULL, 'deferred', 1, ?, '451')",
        [
            (0, "a@One.Example", "a@One.Example", LATER),
            (1, "b@two.example", "b@two.example", LATER),
        ],
    )
    conn.commit()
    conn.close()

    store = open_queue(directory)
    try:
        m = msg(store, "OLD1")
        assert m.state is QueueState.DEFERRED and not m.warned
        assert [r.spec.address for r in m.recipients] == ["a@One.Example", "b@two.example"]
        assert store.select(domain="one.example") == ["OLD1"]  # the domain column was filled
        assert store.flush_domain("two.example", now=NOW) == 1
        asyncio.run(store.mark_warned(["OLD1"]))
        assert msg(store, "OLD1").warned
        assert store.integrity_check() == "ok"
    finally:
        store.close()
    check = sqlite3.connect(directory / "queue.db")
    assert check.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    check.close()


def test_address_domain_and_sender_normalisation() -> None:
    assert address_domain("User@Example.COM") == "example.com"
    assert address_domain('"a@b"@example.com.') == "example.com"
    assert address_domain("postmaster") == "postmaster"  # qshape's view of a bare name
    assert normalize_sender("<>") == "" and normalize_sender(" <a@b> ") == "a@b"


# -- the commands -----------------------------------------------------------------------------


def run_apply(
    store: SqliteQueue, action: str, selection: Selection, stdin: str = ""
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cmd_apply(store, action, selection, out=out, err=err, stdin=io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


def test_commands_by_sender_domain_all_and_stdin(store: SqliteQueue) -> None:
    a = submit(store, "x@one.example", sender="spammer@bad.example")
    b = submit(store, "y@two.example", sender="spammer@bad.example")
    c = submit(store, "z@two.example", sender="")

    assert run_apply(store, "hold", Selection(sender="SPAMMER@bad.example")) == (
        0,
        "ironpost queue: Placed on hold: 2 messages\n",
        "",
    )
    assert run_apply(store, "release", Selection(domain="two.example")) == (
        0,
        "ironpost queue: Released from hold: 1 message\n",
        "",
    )
    assert msg(store, a).state is QueueState.HOLD and msg(store, b).state is QueueState.INCOMING
    assert run_apply(store, "requeue", Selection(ids=("ALL",)))[1] == (
        "ironpost queue: Requeued: 3 messages\n"
    )
    # postsuper's "-": ids from stdin, with mailq's marks still attached.
    code, out, err = run_apply(store, "delete", Selection(ids=("-",)), f"{a}!\n{c}* NOSUCH\n")
    assert (code, out) == (1, "ironpost queue: Deleted: 2 messages\n")
    assert err == "ironpost queue: NOSUCH: no such message\n"
    assert store.select() == [b]


def test_flush_command_reports_and_survives_no_server(store: SqliteQueue, tmp_path: Path) -> None:
    a = submit(store, "x@one.example")
    defer(store, a)
    out = io.StringIO()
    # No server is listening on the trigger: the change is made regardless.
    assert cmd_flush(store, domain=None, out=out, queue_directory=tmp_path, now=NOW) == 0
    assert out.getvalue() == "ironpost queue: Flushed: 1 message\n"
    assert due_now(store) == [a]


def test_cli_selection_arguments_are_checked(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(f"queue_directory = {tmp_path}/q\n")
    for argv in (["hold"], ["hold", "ALL", "--sender", "a@b"], ["delete", "ALL", "X"]):
        with pytest.raises(SystemExit) as exc:
            main(["queue", *argv, "-c", str(etc)])
        assert exc.value.code == 2
    assert main(["queue", "hold", "--sender", "<>", "-c", str(etc)]) == 0
    assert main(["queue", "flush", "--domain", "example.net", "-c", str(etc)]) == 0
    assert main(["queue", "requeue", "ALL", "-c", str(etc)]) == 0


def test_abandon_gives_claimed_messages_back_deferred(store: SqliteQueue) -> None:
    a = submit(store, "x@one.example", "y@two.example")
    held = submit(store, "z@one.example")
    claimed = asyncio.run(store.claim(now=NOW, limit=10))
    assert {m.id for m in claimed} == {a, held}
    assert store.hold(held)  # held while in flight: stays held
    retry = NOW + 300
    asyncio.run(store.abandon([a, held], next_attempt=retry))
    m = msg(store, a)
    assert m.state is QueueState.DEFERRED
    assert [(r.status, r.next_attempt, r.attempts) for r in m.recipients] == [
        (RecipientStatus.DEFERRED, retry, 0),
        (RecipientStatus.DEFERRED, retry, 0),
    ]
    assert store.state_of(held) is QueueState.HOLD
    assert asyncio.run(store.claim(now=NOW, limit=10)) == []  # not before the retry time
    assert [c.id for c in asyncio.run(store.claim(now=retry, limit=10))] == [a]
