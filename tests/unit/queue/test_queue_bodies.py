"""Large bodies in files beside the database: round trip, removal, orphans, corruption,
the schema upgrade and the write-before-commit ordering (real files, real SQLite)."""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from queue_testing import EnvelopeFactory, build_envelope

from ironpost.cli.queue import cmd_show
from ironpost.queue import (
    Outcome,
    QueueState,
    QueueWriteError,
    RecipientStatus,
    SqliteQueue,
    new_queue_id,
    open_queue,
)
from ironpost.queue.bodies import BODY_FILE_THRESHOLD
from ironpost.queue.model import CorruptRecord
from ironpost.queue.records import SCHEMA_VERSION

NOW = 1_700_000_100.0
THRESHOLD = BODY_FILE_THRESHOLD
LARGE = b"Subject: big\r\n\r\n" + b"0123456789abcdef" * (THRESHOLD // 8) + b"\r\n"
SMALL = b"Subject: small\r\n\r\nhi\r\n"


@pytest.fixture
def cold(tmp_path: Path) -> Iterator[SqliteQueue]:
    """A store without the just-accepted cache, so content() always reads the store."""
    s = open_queue(tmp_path / "q", hot_bytes=0)
    yield s
    s.close()


def body_files(sqlite_store: SqliteQueue) -> list[Path]:
    root = sqlite_store.bodies.directory
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def content_row(sqlite_store: SqliteQueue, qid: str) -> tuple[bytes, int | None]:
    conn = sqlite3.connect(sqlite_store.path)
    try:
        row = conn.execute(
            "SELECT content, file_size FROM message_content WHERE message_id = ?", (qid,)
        ).fetchone()
    finally:
        conn.close()
    return bytes(row[0]), row[1]


def deliver_all(sqlite_store: SqliteQueue, qid: str) -> list[str]:
    async def main() -> list[str]:
        [message] = await sqlite_store.claim(now=NOW, limit=10)
        assert message.id == qid
        assert await sqlite_store.content(qid) == LARGE
        return await sqlite_store.record(
            [Outcome(qid, r.index, RecipientStatus.DELIVERED, "250 ok") for r in message.recipients]
        )

    return asyncio.run(main())


def test_a_large_body_is_a_private_file_and_goes_with_its_message(
    cold: SqliteQueue, envelope: EnvelopeFactory
) -> None:
    qid = asyncio.run(cold.submit(envelope("a@example.net", "b@example.net"), LARGE))
    path = cold.bodies.path(qid)
    assert body_files(cold) == [path]
    assert path.parent.parent == cold.path.parent / "bodies" and len(path.parent.name) == 2
    assert path.read_bytes() == LARGE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert content_row(cold, qid) == (b"", len(LARGE))  # no blob in the database
    assert cold.read_content(qid) == LARGE
    assert cold.get(qid) is not None and cold.get(qid).size == len(LARGE)  # type: ignore[union-attr]

    syncs = cold.writer.wal_syncs
    assert deliver_all(cold, qid) == [qid]
    assert body_files(cold) == []  # unlinked after the commit that removed the row
    assert cold.writer.wal_syncs == syncs + 1  # the non-durable record commit was fsynced first
    assert cold.read_content(qid) is None


def test_a_deferral_keeps_the_file_for_the_next_attempt(
    cold: SqliteQueue, envelope: EnvelopeFactory
) -> None:
    async def main() -> None:
        qid = await cold.submit(envelope(), LARGE)
        [m] = await cold.claim(now=NOW, limit=1)
        await cold.record([Outcome(qid, 0, RecipientStatus.DEFERRED, "451", NOW + 60)])
        assert body_files(cold) == [cold.bodies.path(qid)]
        [m] = await cold.claim(now=NOW + 61, limit=1)
        assert await cold.content(m.id) == LARGE

    asyncio.run(main())


def test_small_bodies_stay_in_the_database(cold: SqliteQueue, envelope: EnvelopeFactory) -> None:
    qid = asyncio.run(cold.submit(envelope(), SMALL))
    assert content_row(cold, qid) == (SMALL, None)
    assert body_files(cold) == []
    assert asyncio.run(cold.content(qid)) == SMALL


def test_threshold_zero_never_writes_a_file(tmp_path: Path, envelope: EnvelopeFactory) -> None:
    store = open_queue(tmp_path / "q", body_file_threshold=0)
    try:
        qid = asyncio.run(store.submit(envelope(), LARGE))
        assert content_row(store, qid) == (LARGE, None)
        assert body_files(store) == []
        assert store.read_content(qid) == LARGE
    finally:
        store.close()


def test_the_threshold_is_inclusive_and_the_hot_cache_still_serves(
    tmp_path: Path, envelope: EnvelopeFactory
) -> None:
    store = open_queue(tmp_path / "q", body_file_threshold=len(SMALL))
    try:
        qid = asyncio.run(store.submit(envelope(), SMALL))
        assert content_row(store, qid) == (b"", len(SMALL))
        store.bodies.path(qid).unlink()  # the first delivery needs no file: it is in memory
        assert asyncio.run(store.content(qid)) == SMALL
        assert store.hot.hits == 1
    finally:
        store.close()


def test_recover_removes_orphans_and_keeps_live_bodies(
    tmp_path: Path, envelope: EnvelopeFactory
) -> None:
    store = open_queue(tmp_path / "q")
    live = asyncio.run(store.submit(envelope(), LARGE))
    # A crash between the file write and the commit: a fsynced file, no row.
    unborn = new_queue_id()
    store.bodies.write(unborn, LARGE)
    # A crash between the commit that removed a row and the unlink: same, for another.
    gone = asyncio.run(store.submit(envelope(), LARGE))
    conn = sqlite3.connect(store.path)
    conn.execute("DELETE FROM message_content WHERE message_id = ?", (gone,))
    conn.execute("DELETE FROM recipients WHERE message_id = ?", (gone,))
    conn.execute("DELETE FROM messages WHERE id = ?", (gone,))
    conn.commit()
    conn.close()
    store.close()

    again = open_queue(tmp_path / "q")
    try:
        assert len(body_files(again)) == 3
        assert asyncio.run(again.recover()) == 0
        assert again.orphans_removed == 2
        assert body_files(again) == [again.bodies.path(live)]
        assert again.read_content(live) == LARGE
    finally:
        again.close()


def test_recover_without_a_bodies_directory(sqlite_store: SqliteQueue) -> None:
    assert asyncio.run(sqlite_store.recover()) == 0 and sqlite_store.orphans_removed == 0


def test_a_missing_body_file_makes_the_message_corrupt_not_a_crash(
    cold: SqliteQueue, envelope: EnvelopeFactory
) -> None:
    async def main() -> None:
        bad = await cold.submit(envelope(), LARGE)
        short = await cold.submit(envelope(), LARGE)
        good = await cold.submit(envelope(), LARGE)
        cold.bodies.path(bad).unlink()
        with cold.bodies.path(short).open("r+b") as f:
            f.truncate(100)
        assert len(await cold.claim(now=NOW, limit=10)) == 3
        for qid in (bad, short):
            with pytest.raises(CorruptRecord):
                await cold.content(qid)
            assert cold.state_of(qid) is QueueState.CORRUPT
            with pytest.raises(CorruptRecord):
                cold.read_content(qid)
        assert await cold.content(good) == LARGE
        # The manager records its (deferred) outcome; a CORRUPT message stays CORRUPT.
        await cold.record([Outcome(bad, 0, RecipientStatus.DEFERRED, "4.3.0", NOW)])
        await cold.recover()  # the good one (ACTIVE) is requeued; CORRUPT ones are not
        assert cold.state_of(bad) is QueueState.CORRUPT
        assert [m.id for m in await cold.claim(now=NOW + 10, limit=10)] == [good]
        out, err = io.StringIO(), io.StringIO()
        assert cmd_show(cold, bad, out=out, err=err) == 1
        assert "body file missing" in err.getvalue() and out.getvalue() == ""

    asyncio.run(main())


def test_admin_deletes_unlink_after_commit(
    sqlite_store: SqliteQueue, envelope: EnvelopeFactory
) -> None:
    async def submit(n: int) -> list[str]:
        return [await sqlite_store.submit(envelope(), LARGE) for _ in range(n)]

    a, b, c, d, e = asyncio.run(submit(5))
    small = asyncio.run(sqlite_store.submit(envelope(), SMALL))
    assert sqlite_store.delete(a)
    assert sqlite_store.delete_messages([b, c, small]) == 3
    assert {p.name for p in body_files(sqlite_store)} == {d, e}
    assert sqlite_store.delete_all() == 2
    assert body_files(sqlite_store) == []


def test_old_schema_upgrades_and_matches_a_fresh_one(tmp_path: Path) -> None:
    def columns(path: Path) -> dict[str, list[tuple[object, ...]]]:
        conn = sqlite3.connect(path)
        try:
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            return {t: conn.execute(f"PRAGMA table_info({t})").fetchall() for t in sorted(tables)}
        finally:
            conn.close()

    fresh = open_queue(tmp_path / "fresh")
    fresh.close()
    # A version 2 queue with a message in it, then the version 3 code opens it.
    old = tmp_path / "old"
    old.mkdir()
    conn = sqlite3.connect(old / "queue.db")
    conn.execute("ATTACH DATABASE ? AS fresh", (str(tmp_path / "fresh" / "queue.db"),))
    for (sql,) in conn.execute("SELECT sql FROM fresh.sqlite_master WHERE sql IS NOT NULL"):
        conn.execute(sql.replace(",\n        file_size INTEGER", ""))
    conn.execute("DETACH DATABASE fresh")
    conn.execute("INSERT INTO schema_version VALUES (2)")
    conn.commit()
    conn.close()
    assert "file_size" not in str(columns(old / "queue.db")["message_content"])
    store = open_queue(old)
    try:
        qid = asyncio.run(store.submit(build_envelope(), SMALL))
        big = asyncio.run(store.submit(build_envelope(), LARGE))
        assert store.read_content(qid) == SMALL and store.read_content(big) == LARGE
    finally:
        store.close()
    assert columns(old / "queue.db") == columns(tmp_path / "fresh" / "queue.db")
    check = sqlite3.connect(old / "queue.db")
    assert check.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    check.close()


def test_the_file_is_written_before_the_row_commits(
    sqlite_store: SqliteQueue, envelope: EnvelopeFactory
) -> None:
    async def main() -> None:
        qid = new_queue_id()
        blocker = sqlite3.connect(sqlite_store.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the database write lock, held elsewhere
        task = asyncio.create_task(sqlite_store.submit(envelope(), LARGE, queue_id=qid))
        path = sqlite_store.bodies.path(qid)
        for _ in range(500):
            if path.exists() and path.stat().st_size == len(LARGE):
                break
            await asyncio.sleep(0.01)
        assert path.read_bytes() == LARGE  # on disk, complete, while the row cannot commit
        assert not task.done() and sqlite_store.get(qid) is None
        blocker.execute("ROLLBACK")
        blocker.close()
        assert await task == qid
        assert sqlite_store.read_content(qid) == LARGE

    asyncio.run(main())


def test_a_body_swept_before_the_commit_fails_the_submit(
    sqlite_store: SqliteQueue, envelope: EnvelopeFactory
) -> None:
    async def main() -> None:
        qid = new_queue_id()
        blocker = sqlite3.connect(sqlite_store.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        task = asyncio.create_task(sqlite_store.submit(envelope(), LARGE, queue_id=qid))
        path = sqlite_store.bodies.path(qid)
        for _ in range(500):
            if path.exists():
                break
            await asyncio.sleep(0.01)
        # A starting server's sweep (under the same lock) sees a file without a row.
        assert sqlite_store.bodies.sweep(blocker) == 1
        blocker.execute("ROLLBACK")
        blocker.close()
        with pytest.raises(QueueWriteError):
            await task  # never a 250 for a message without its body
        assert sqlite_store.state_of(qid) is None

    asyncio.run(main())


def test_a_failed_commit_leaves_neither_row_nor_file(
    sqlite_store: SqliteQueue, envelope: EnvelopeFactory
) -> None:
    async def main() -> None:
        await sqlite_store.submit(envelope(), SMALL)  # opens the writer's connection
        conn = sqlite3.connect(sqlite_store.path)
        conn.execute("ALTER TABLE message_content RENAME TO message_content_gone")
        conn.commit()
        results = await asyncio.gather(
            *(sqlite_store.submit(envelope(), LARGE) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, QueueWriteError) for r in results)
        assert body_files(sqlite_store) == []
        conn.execute("ALTER TABLE message_content_gone RENAME TO message_content")
        conn.commit()
        conn.close()
        assert len(sqlite_store.list_messages()) == 1

    asyncio.run(main())


def test_a_failed_body_write_is_a_queue_write_error(
    sqlite_store: SqliteQueue, envelope: EnvelopeFactory
) -> None:
    qid = new_queue_id()
    sqlite_store.bodies.write(qid, b"someone else's")  # O_EXCL: never overwrite a body
    with pytest.raises(QueueWriteError):
        asyncio.run(sqlite_store.submit(envelope(), LARGE, queue_id=qid))
    assert sqlite_store.bodies.path(qid).read_bytes() == b"someone else's"
    assert sqlite_store.state_of(qid) is None


def test_a_crash_between_write_and_commit_leaves_only_an_orphan(
    tmp_path: Path, envelope: EnvelopeFactory
) -> None:
    # The state a kill -9 after the file write leaves: a body written, the transaction
    # never committed (here: rolled back while the row was inserted).
    store = open_queue(tmp_path / "q")
    qid = new_queue_id()
    store.bodies.write(qid, LARGE)
    conn = sqlite3.connect(store.path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO message_content (message_id, content, file_size) VALUES (?, x'', ?)",
        (qid, len(LARGE)),
    )
    conn.execute("ROLLBACK")
    conn.close()
    try:
        assert store.state_of(qid) is None and body_files(store) == [store.bodies.path(qid)]
        asyncio.run(store.recover())
        assert store.orphans_removed == 1 and body_files(store) == []
    finally:
        store.close()


def test_concurrent_large_submits_share_commits(
    sqlite_store: SqliteQueue, envelope: EnvelopeFactory
) -> None:
    async def main() -> list[str]:
        return await asyncio.gather(*(sqlite_store.submit(envelope(), LARGE) for _ in range(40)))

    ids = asyncio.run(main())
    assert len(set(ids)) == 40 and len(body_files(sqlite_store)) == 40
    assert sqlite_store.commits < 40  # group commit still batches them


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=64), threshold=st.integers(min_value=0, max_value=48))
def test_any_body_round_trips_in_a_row_or_a_file(
    tmp_path_factory: pytest.TempPathFactory, body: bytes, threshold: int
) -> None:
    store = open_queue(tmp_path_factory.mktemp("q"), hot_bytes=0, body_file_threshold=threshold)
    try:
        qid = asyncio.run(store.submit(build_envelope(), body))
        in_file = 0 < threshold <= len(body)
        assert content_row(store, qid) == ((b"", len(body)) if in_file else (body, None))
        assert asyncio.run(store.content(qid)) == body
        assert store.delete(qid)
        assert body_files(store) == []
    finally:
        store.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create files for another user")
def test_root_gives_its_body_files_to_the_queue_owner(
    tmp_path: Path, envelope: EnvelopeFactory
) -> None:
    directory = tmp_path / "q"
    open_queue(directory).close()
    for path in (directory, *directory.iterdir()):
        os.chown(path, 65534, 65534)  # as the server leaves it after take_ownership
    store = open_queue(directory)  # e.g. sendmail run by root
    try:
        qid = asyncio.run(store.submit(envelope(), LARGE))
        path = store.bodies.path(qid)
        for p in (path, path.parent, path.parent.parent):
            assert (p.stat().st_uid, p.stat().st_gid) == (65534, 65534), p
    finally:
        store.close()
