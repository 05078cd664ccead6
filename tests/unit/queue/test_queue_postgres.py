"""The PostgreSQL engine's own behaviour, on a real PostgreSQL: what a cluster adds to the
QueueStore contract (which every test taking the ``store`` fixture checks on both
engines). Leases, fencing, per-node recovery, migrations, reconnection."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import psycopg
import pytest
from queue_testing import build_envelope

from ironpost.queue import Outcome, QueueState, QueueWriteError, RecipientStatus
from ironpost.queue.pg_records import (
    HANDOFF_SECONDS,
    MIGRATIONS,
    PG_SCHEMA_VERSION,
    migrate,
    renew,
)
from ironpost.queue.postgres import PgDb, PostgresQueue, connect
from ironpost.queue.records import QueueSchemaError
from ironpost.testing.postgres import PostgresServer

NOW = 1_700_000_100.0
BODY = b"Subject: t\r\n\r\nhello\r\n"


def submit_many(q: PostgresQueue, n: int, *rcpts: str) -> list[str]:
    async def go() -> list[str]:
        return list(
            await asyncio.gather(*[q.submit(build_envelope(*rcpts), BODY) for _ in range(n)])
        )

    return asyncio.run(go())


def delivered(message_id: str, index: int = 0) -> Outcome:
    return Outcome(message_id, index, RecipientStatus.DELIVERED, "250 2.0.0 ok")


def expire_leases(q: PostgresQueue, node: str) -> None:
    """What time does to the leases of a node that stopped renewing them."""
    q._admin_write("UPDATE messages SET lease_expires = 0 WHERE lease_owner = ?", (node,))


@pytest.fixture
def nodes(pg_url: str) -> Iterator[tuple[PostgresQueue, PostgresQueue, PostgresQueue]]:
    made = tuple(PostgresQueue(pg_url, node=f"node{i}") for i in range(3))
    yield made  # type: ignore[misc]
    for q in made:
        q.close()


def test_concurrent_claims_never_hand_out_a_message_twice(
    nodes: tuple[PostgresQueue, PostgresQueue, PostgresQueue],
) -> None:
    ids = submit_many(nodes[0], 300)
    got: dict[str, list[str]] = {}

    def drain(q: PostgresQueue) -> None:
        async def go() -> None:
            while True:
                batch = await q.claim(now=NOW, limit=7)
                if not batch:
                    return
                got.setdefault(q.node, []).extend(m.id for m in batch)

        asyncio.run(go())

    threads = [threading.Thread(target=drain, args=(q,)) for q in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [i for ids_ in got.values() for i in ids_]
    assert sorted(claimed) == sorted(ids)  # every message once, none twice
    assert len(got) >= 2  # the work really was shared


def test_an_expired_lease_is_taken_over_and_the_old_holder_is_fenced(pg_url: str) -> None:
    dying = PostgresQueue(pg_url, node="dying")
    taker = PostgresQueue(pg_url, node="taker")
    try:
        (a,) = submit_many(dying, 1, "x@one.example", "y@two.example")
        first = asyncio.run(dying.claim(now=NOW, limit=10))
        assert [m.id for m in first] == [a]
        # Half the message was delivered and recorded before the node stalled.
        assert asyncio.run(dying.record([delivered(a, 0)])) == []
        expire_leases(dying, "dying")  # ... and stalled for longer than its lease
        again = asyncio.run(taker.claim(now=NOW, limit=10))
        assert [m.id for m in again] == [a]
        assert [r.index for r in again[0].recipients] == [1]  # only what was still in flight
        assert taker.leases.taken_over == 1
        # The stalled node comes back with its outcome: fenced, the new holder decides.
        assert asyncio.run(dying.record([delivered(a, 1)])) == []
        assert dying.leases.fenced == 1
        assert taker.get(a) is not None and taker.state_of(a) is QueueState.ACTIVE
        assert asyncio.run(taker.record([delivered(a, 1)])) == [a]
        assert taker.get(a) is None
    finally:
        dying.close()
        taker.close()


def test_a_live_lease_is_not_taken(nodes: tuple[PostgresQueue, ...]) -> None:
    submit_many(nodes[0], 3)
    assert len(asyncio.run(nodes[0].claim(now=NOW, limit=10))) == 3
    assert asyncio.run(nodes[1].claim(now=NOW, limit=10)) == []


def test_recover_takes_back_only_this_nodes_work(nodes: tuple[PostgresQueue, ...]) -> None:
    submit_many(nodes[0], 4)
    mine = asyncio.run(nodes[0].claim(now=NOW, limit=2))
    theirs = asyncio.run(nodes[1].claim(now=NOW, limit=2))
    assert len(mine) == len(theirs) == 2
    # node0 restarts: its own two come back, node1's stay in its hands.
    assert asyncio.run(nodes[0].recover()) == 2
    assert {nodes[0].state_of(m.id) for m in mine} == {QueueState.INCOMING}
    assert {nodes[0].state_of(m.id) for m in theirs} == {QueueState.ACTIVE}
    assert ("node0", 0) in [(n[0], n[4]) for n in nodes[0].nodes()]


def test_renewal_extends_this_nodes_leases_only(pg_url: str) -> None:
    q = PostgresQueue(pg_url, node="short")
    other = PostgresQueue(pg_url, node="other")
    try:
        submit_many(q, 2)
        asyncio.run(q.claim(now=NOW, limit=10))
        expire_leases(q, "short")
        live = q.leases.live()
        assert len(live) == 2
        db = connect(pg_url)
        try:
            assert renew(db, "short", 3600.0, live) == 2
            assert renew(db, "nobody", 3600.0, live) == 0
        finally:
            db.close()
        assert asyncio.run(other.claim(now=NOW, limit=10)) == []  # renewed: not orphaned
    finally:
        q.close()
        other.close()


def test_deferred_and_delivered_outcomes_release_the_lease(pg_url: str) -> None:
    q = PostgresQueue(pg_url, node="n")
    try:
        a, b = submit_many(q, 2)
        asyncio.run(q.claim(now=NOW, limit=10))
        later = NOW + 300
        asyncio.run(
            q.record(
                [Outcome(a, 0, RecipientStatus.DEFERRED, "451 4.3.0 later", later), delivered(b)]
            )
        )
        assert q.state_of(a) is QueueState.DEFERRED
        row = q._admin_read(
            lambda db: db.execute(
                "SELECT lease_owner, lease_token FROM messages WHERE id = ?", (a,)
            ).fetchone()
        )
        assert tuple(row) == (None, None)
        assert q.leases.tokens == {}
        assert q.leases.live() == []  # nothing left to renew
        assert [m.id for m in asyncio.run(q.claim(now=later, limit=10))] == [a]
    finally:
        q.close()


def test_submit_commits_synchronously_and_bookkeeping_does_not(pg_url: str) -> None:
    q = PostgresQueue(pg_url, node="n")
    setting = "SELECT current_setting('synchronous_commit')"

    async def go() -> tuple[str, str]:
        durable = await q.writer.run(lambda db: db.execute(setting).fetchone()[0])
        lazy = await q.writer.run(lambda db: db.execute(setting).fetchone()[0], durable=False)
        return durable, lazy

    try:
        assert asyncio.run(go()) == ("on", "off")
    finally:
        q.close()


def test_concurrent_submits_share_commits(pg_url: str) -> None:
    q = PostgresQueue(pg_url, node="n")
    try:
        ids = submit_many(q, 200)
        assert len(set(ids)) == 200
        assert q.commits < 200  # group commit: many messages per transaction
        assert q.stats()[QueueState.INCOMING] == 200
    finally:
        q.close()


def test_hot_body_and_read_back(pg_url: str) -> None:
    writer = PostgresQueue(pg_url, node="a")
    reader = PostgresQueue(pg_url, node="b", hot_bytes=0)
    try:
        (a,) = submit_many(writer, 1)
        assert asyncio.run(reader.content(a)) == BODY  # another node reads from the database
        assert asyncio.run(writer.content(a)) == BODY  # the accepting node from memory
        with pytest.raises(KeyError):
            asyncio.run(reader.content("NOSUCHMESSAGE000"))
    finally:
        writer.close()
        reader.close()


# -- migrations ------------------------------------------------------------------------


def _raw(url: str) -> PgDb:
    return connect(url)


def test_a_version_1_database_is_migrated_and_keeps_its_mail(pg_url: str) -> None:
    db = _raw(pg_url)
    try:
        db.execute("BEGIN")
        migrate(db, target=1)
        db.execute("COMMIT")
    finally:
        db.close()
    # Put mail in the version-1 schema with plain SQL, as an old ironpost would have.
    with psycopg.connect(pg_url, autocommit=True) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        raw.execute(
            "INSERT INTO messages (id, state, arrival, size, sender, next_attempt, envelope)"
            " SELECT 'OLD0000000000001', 'incoming', 1, 3, '', 1, '{}'"
        )
    q = PostgresQueue(pg_url, node="n")
    try:
        assert q.state_of("OLD0000000000001") is QueueState.INCOMING
        version = q._admin_read(
            lambda d: d.execute("SELECT version FROM schema_version").fetchall()
        )
        assert [tuple(r) for r in version] == [(PG_SCHEMA_VERSION,)]
        assert len(MIGRATIONS) == PG_SCHEMA_VERSION
    finally:
        q.close()


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    PostgresQueue(pg_url, node="n").close()
    with psycopg.connect(pg_url, autocommit=True) as raw:
        raw.execute("UPDATE schema_version SET version = %s", (PG_SCHEMA_VERSION + 1,))
    with pytest.raises(QueueSchemaError, match="newer"):
        PostgresQueue(pg_url, node="n")


def test_nodes_starting_together_create_the_schema_once(pg_url: str) -> None:
    errors: list[BaseException] = []
    opened: list[PostgresQueue] = []

    def start(i: int) -> None:
        try:
            opened.append(PostgresQueue(pg_url, node=f"n{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for q in opened:
        q.close()
    assert errors == []
    with psycopg.connect(pg_url, autocommit=True) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [
            (PG_SCHEMA_VERSION,)
        ]


# -- the database going away --------------------------------------------------------------


def test_an_unreachable_database_fails_submits_and_the_node_reconnects(
    private_postgres: PostgresServer,
) -> None:
    server = private_postgres
    url = server.create_database("outage")
    q = PostgresQueue(url, node="n")
    try:
        submit_many(q, 2)
        claimed = asyncio.run(q.claim(now=NOW, limit=1))
        assert len(q.leases.live()) == 1
        server.stop("immediate")
        with pytest.raises(QueueWriteError):
            submit_many(q, 1)
        # The delivery's outcome cannot be recorded: the message is given up, its
        # lease no longer renewed, so it comes back once the lease has run out.
        with pytest.raises(QueueWriteError):
            asyncio.run(q.record([delivered(claimed[0].id)]))
        assert q.leases.live() == []
        with pytest.raises(psycopg.OperationalError):
            q.stats()
        server.start()
        # No restart of ours: the writer and the admin connection reconnect.
        submit_many(q, 3)
        # 5: nothing acknowledged was lost (the claim, bookkeeping committed without
        # waiting for the WAL flush, may have been undone by the crash: a redelivery).
        assert sum(q.stats().values()) == 5
        expire_leases(q, "n")
        again = asyncio.run(q.claim(now=NOW, limit=10))
        assert claimed[0].id in {m.id for m in again}
    finally:
        q.close()


def test_a_batch_the_database_rolled_back_for_a_deadlock_is_tried_again(pg_url: str) -> None:
    q = PostgresQueue(pg_url, node="n")
    calls: list[int] = []
    applied: list[str] = []

    def job(db: PgDb) -> str:
        calls.append(1)
        q.writer.after_commit(lambda: applied.append("after"))
        if len(calls) == 1:
            # What PostgreSQL answers a deadlock with: the whole transaction rolled back.
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return str(db.execute("SELECT 'done'").fetchone()[0])

    async def go() -> str:
        result: str = await q.writer.run(job)
        return result

    try:
        assert asyncio.run(go()) == "done"
        assert len(calls) == 2 and q.writer.retried_batches == 1
        assert applied == ["after"]  # the rolled-back try's after-commit action is dropped
    finally:
        q.close()


def test_claims_commit_apart_from_the_other_writes(pg_url: str) -> None:
    # A claim keeps locks on rows it skipped; in one transaction with a record waiting
    # for another node's claim, two nodes deadlock. So claims have their own transactions.
    q = PostgresQueue(pg_url, node="n")
    try:
        (a,) = submit_many(q, 1)
        writes = q.writer.commits
        asyncio.run(q.claim(now=NOW, limit=10))
        assert q.writer.commits == writes  # not through the submit/record writer
        assert asyncio.run(q.record([delivered(a)])) == [a]
        assert q.writer.commits == writes + 1
    finally:
        q.close()


def test_records_after_an_outage_do_not_inherit_its_failure(
    private_postgres: PostgresServer,
) -> None:
    server = private_postgres
    q = PostgresQueue(server.create_database("records"), node="n")
    try:
        a, _ = submit_many(q, 2)
        asyncio.run(q.claim(now=NOW, limit=10))
        server.stop("immediate")
        with pytest.raises(QueueWriteError):  # no connection: the job never ran
            asyncio.run(q.record([delivered(a)]))
        server.start()
        expire_leases(q, "n")
        again = {m.id for m in asyncio.run(q.claim(now=NOW, limit=10))}
        assert a in again
        assert asyncio.run(q.record([delivered(m) for m in sorted(again)])) == sorted(again)
    finally:
        q.close()


def test_new_mail_is_left_to_its_accepting_node_for_the_handoff_time(pg_url: str) -> None:
    accepting = PostgresQueue(pg_url, node="accepting")
    other = PostgresQueue(pg_url, node="other")
    try:
        arrival = 1_800_000_000.0

        async def go() -> str:
            return await accepting.submit(build_envelope(arrival=arrival), BODY)

        a = asyncio.run(go())
        assert asyncio.run(other.claim(now=arrival + 1, limit=10)) == []  # not yet its
        late = arrival + HANDOFF_SECONDS + 1  # the accepting node did not take it: anyone's
        assert [m.id for m in asyncio.run(other.claim(now=late, limit=10))] == [a]
    finally:
        accepting.close()
        other.close()
