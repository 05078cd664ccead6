"""The SQLite engine: durability, group commit, lifecycle, admin operations, failures."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from pathlib import Path

import pytest
from queue_testing import EnvelopeFactory

from ironpost.queue import (
    Outcome,
    QueueState,
    QueueWriteError,
    RecipientStatus,
    SqliteQueue,
    open_queue,
)
from ironpost.queue.records import SCHEMA_VERSION, QueueSchemaError

BODY = b"Received: from x\r\nSubject: hi\r\n\r\nHello\r\n"
NOW = 1_700_000_100.0


def test_submit_is_durable_across_reopen(tmp_path: Path, envelope: EnvelopeFactory) -> None:
    store = open_queue(tmp_path / "q")
    env = envelope("bob@example.net", "carol@example.net")
    qid = asyncio.run(store.submit(env, BODY))
    store.close()

    again = open_queue(tmp_path / "q")
    try:
        message = again.get(qid)
        assert message is not None
        assert message.envelope == env
        assert message.state is QueueState.INCOMING
        assert message.size == len(BODY)
        assert [r.status for r in message.recipients] == [RecipientStatus.PENDING] * 2
        assert again.read_content(qid) == BODY
    finally:
        again.close()


def test_files_are_private(tmp_path: Path) -> None:
    store = open_queue(tmp_path / "q")
    store.close()
    assert stat.S_IMODE((tmp_path / "q").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "q" / "queue.db").stat().st_mode) == 0o600
    conn = sqlite3.connect(tmp_path / "q" / "queue.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    conn.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    open_queue(tmp_path / "q").close()
    conn = sqlite3.connect(tmp_path / "q" / "queue.db")
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(QueueSchemaError):
        open_queue(tmp_path / "q")


def test_group_commit_batches(store: SqliteQueue, envelope: EnvelopeFactory) -> None:
    async def main() -> list[str]:
        return await asyncio.gather(*(store.submit(envelope(), BODY) for _ in range(200)))

    ids = asyncio.run(main())
    assert len(set(ids)) == 200
    assert store.commits < 50  # 200 messages, far fewer transactions
    assert store.writer.jobs_committed == 200
    assert len(store.list_messages()) == 200


def test_lifecycle_defer_then_deliver(store: SqliteQueue, envelope: EnvelopeFactory) -> None:
    async def main() -> None:
        qid = await store.submit(envelope("a@x.example", "b@y.example"), BODY)
        claimed = await store.claim(now=NOW, limit=10)
        assert [m.id for m in claimed] == [qid]
        assert claimed[0].state is QueueState.ACTIVE
        assert store.get(qid).state is QueueState.ACTIVE  # type: ignore[union-attr]
        assert await store.content(qid) == BODY
        assert await store.claim(now=NOW, limit=10) == []  # active is not claimed twice

        removed = await store.record(
            [
                Outcome(qid, 0, RecipientStatus.DELIVERED, "250 2.0.0 ok"),
                Outcome(qid, 1, RecipientStatus.DEFERRED, "451 4.4.1 try later", NOW + 300),
            ]
        )
        assert removed == []
        message = store.get(qid)
        assert message is not None and message.state is QueueState.DEFERRED
        assert message.recipients[1].attempts == 1
        assert message.recipients[1].last_reply == "451 4.4.1 try later"

        assert await store.claim(now=NOW + 299, limit=10) == []  # not yet due
        again = await store.claim(now=NOW + 300, limit=10)
        assert [m.id for m in again] == [qid]
        # Only the recipient still to do is handed out, marked for this attempt.
        assert [(r.index, r.status) for r in again[0].recipients] == [(1, RecipientStatus.PENDING)]
        removed = await store.record([Outcome(qid, 1, RecipientStatus.BOUNCED, "550 5.1.1 no")])
        assert removed == [qid]
        assert store.get(qid) is None
        with pytest.raises(KeyError):
            await store.content(qid)

    asyncio.run(main())


def test_partial_record_keeps_message_active(store: SqliteQueue, envelope: EnvelopeFactory) -> None:
    async def main() -> None:
        qid = await store.submit(envelope("a@x.example", "b@y.example"), BODY)
        await store.claim(now=NOW, limit=10)
        await store.record([Outcome(qid, 0, RecipientStatus.DEFERRED, "451", NOW + 60)])
        # Recipient 1 is still in flight: the message must not be filed as deferred.
        assert store.get(qid).state is QueueState.ACTIVE  # type: ignore[union-attr]
        await store.record([Outcome(qid, 1, RecipientStatus.DELIVERED, "250")])
        assert store.get(qid).state is QueueState.DEFERRED  # type: ignore[union-attr]

    asyncio.run(main())


def test_claim_limit_and_order(store: SqliteQueue, envelope: EnvelopeFactory) -> None:
    async def main() -> None:
        ids = [await store.submit(envelope(), BODY) for _ in range(5)]
        first = await store.claim(now=NOW, limit=3)
        assert [m.id for m in first] == ids[:3]
        rest = await store.claim(now=NOW, limit=10)
        assert [m.id for m in rest] == ids[3:]
        assert await store.claim(now=NOW, limit=0) == []

    asyncio.run(main())


def test_record_validates_outcomes(store: SqliteQueue) -> None:
    with pytest.raises(ValueError):
        asyncio.run(store.record([Outcome("X", 0, RecipientStatus.DEFERRED, "451")]))
    with pytest.raises(ValueError):
        asyncio.run(store.record([Outcome("X", 0, RecipientStatus.PENDING, "")]))


def test_hold_release_delete(store: SqliteQueue, envelope: EnvelopeFactory) -> None:
    async def main() -> None:
        a = await store.submit(envelope(), BODY)
        b = await store.submit(envelope(), BODY)
        c = await store.submit(envelope(), BODY)
        assert store.hold(a)
        assert not store.hold("NOSUCHID")
        assert [m.id for m in await store.claim(now=NOW, limit=10)] == [b, c]
        assert store.stats()[QueueState.HOLD] == 1
        assert store.release(a)
        assert not store.release(a)  # no longer held
        assert [m.id for m in await store.claim(now=NOW, limit=10)] == [a]
        assert store.delete(b)
        assert not store.delete(b)
        # Outcomes for a message deleted while in flight are ignored, not an error.
        assert await store.record([Outcome(b, 0, RecipientStatus.DELIVERED, "250")]) == []
        assert store.delete_all() == 2
        assert store.list_messages() == []

    asyncio.run(main())


def test_hold_while_active_survives_a_deferral(
    store: SqliteQueue, envelope: EnvelopeFactory
) -> None:
    async def main() -> None:
        qid = await store.submit(envelope(), BODY)
        await store.claim(now=NOW, limit=1)
        assert store.hold(qid)
        await store.record([Outcome(qid, 0, RecipientStatus.DEFERRED, "451", NOW)])
        assert store.get(qid).state is QueueState.HOLD  # type: ignore[union-attr]
        assert await store.claim(now=NOW + 10_000, limit=10) == []

    asyncio.run(main())


def test_recover_requeues_active(tmp_path: Path, envelope: EnvelopeFactory) -> None:
    store = open_queue(tmp_path / "q")

    async def first() -> str:
        qid = await store.submit(envelope(), BODY)
        await store.claim(now=NOW, limit=10)
        return qid

    qid = asyncio.run(first())
    store.close()  # "crash" with the message active
    store = open_queue(tmp_path / "q")
    try:
        assert asyncio.run(store.recover()) == 1
        assert store.get(qid).state is QueueState.INCOMING  # type: ignore[union-attr]
        assert [m.id for m in asyncio.run(store.claim(now=NOW, limit=10))] == [qid]
    finally:
        store.close()


def test_corrupt_envelope_goes_to_corrupt(
    tmp_path: Path, sqlite_store: SqliteQueue, envelope: EnvelopeFactory
) -> None:
    async def main() -> None:
        bad = await sqlite_store.submit(envelope(), BODY)
        good = await sqlite_store.submit(envelope(), BODY)
        conn = sqlite3.connect(sqlite_store.path)
        conn.execute("UPDATE messages SET envelope = '{broken' WHERE id = ?", (bad,))
        conn.commit()
        conn.close()
        assert sqlite_store.get(bad) is None
        assert [m.id for m in sqlite_store.list_messages()] == [good]
        assert [m.id for m in await sqlite_store.claim(now=NOW, limit=10)] == [good]
        assert sqlite_store.state_of(bad) is QueueState.CORRUPT
        assert sqlite_store.stats()[QueueState.CORRUPT] == 1

    asyncio.run(main())


def test_failed_batch_fails_every_caller_then_recovers(
    sqlite_store: SqliteQueue, envelope: EnvelopeFactory
) -> None:
    async def main() -> None:
        # A first submit creates the writer's connection; then sabotage the schema so
        # that the next batch fails inside the transaction (as a full disk would).
        await sqlite_store.submit(envelope(), BODY)
        conn = sqlite3.connect(sqlite_store.path)
        conn.execute("ALTER TABLE message_content RENAME TO message_content_gone")
        conn.commit()
        results = await asyncio.gather(
            *(sqlite_store.submit(envelope(), BODY) for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, QueueWriteError) for r in results)
        assert len(sqlite_store.list_messages()) == 1  # the whole batch rolled back
        conn.execute("ALTER TABLE message_content_gone RENAME TO message_content")
        conn.commit()
        conn.close()
        qid = await sqlite_store.submit(envelope(), BODY)  # the next batch works again
        assert sqlite_store.get(qid) is not None
        assert len(sqlite_store.list_messages()) == 2

    asyncio.run(main())


def test_connection_closed_underneath(sqlite_store: SqliteQueue, envelope: EnvelopeFactory) -> None:
    grabbed: list[sqlite3.Connection] = []

    async def main() -> None:
        await sqlite_store.submit(envelope(), BODY)
        # Grab the writer's connection from inside a job and close it: the next batch
        # cannot even begin on it, so nothing of it ran, and it is tried once more on a
        # new connection (a database restarted under a kept connection, in PostgreSQL).
        await sqlite_store.writer.run(grabbed.append)
        grabbed[0].close()
        qid = await sqlite_store.submit(envelope(), BODY)
        assert sqlite_store.get(qid) is not None
        assert sqlite_store.writer.retried_batches == 1
        assert sqlite_store.writer.failed_batches == 0

    asyncio.run(main())


def test_submit_after_close_fails(tmp_path: Path, envelope: EnvelopeFactory) -> None:
    store = open_queue(tmp_path / "q")
    store.close()
    with pytest.raises(QueueWriteError):
        asyncio.run(store.submit(envelope(), BODY))


def test_callers_on_two_loops(store: SqliteQueue, envelope: EnvelopeFactory) -> None:
    import threading

    results: list[str] = []

    def worker() -> None:
        async def go() -> None:
            results.extend(
                await asyncio.gather(*(store.submit(envelope(), BODY) for _ in range(20)))
            )

        asyncio.run(go())

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 60
    assert len(store.list_messages()) == 60


def test_sqlite_queue_is_a_queue_store(store: SqliteQueue) -> None:
    from ironpost.queue import QueueStore

    as_store: QueueStore = store  # checked by mypy: the engine implements the interface
    assert as_store.stats()[QueueState.INCOMING] == 0
