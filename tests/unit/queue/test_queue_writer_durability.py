"""Durable jobs commit with synchronous=FULL; a batch of bookkeeping jobs does not."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ironpost.queue.writer import GroupCommitWriter


def test_durability_follows_the_jobs_in_the_batch(tmp_path: Path) -> None:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(tmp_path / "q.db", isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
        return conn

    def level(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t VALUES (1)")
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    writer = GroupCommitWriter(connect)

    async def main() -> tuple[int, int, int]:
        durable = await writer.run(level)
        bookkeeping = await writer.run(level, durable=False)
        # A mixed batch is durable as a whole.
        mixed = await asyncio.gather(writer.run(level, durable=False), writer.run(level))
        return durable, bookkeeping, min(mixed) if writer.largest_batch > 1 else 2

    try:
        durable, bookkeeping, mixed = asyncio.run(main())
    finally:
        writer.close()
    assert durable == 2  # FULL
    assert bookkeeping == 1  # NORMAL
    assert mixed == 2
    assert writer.fsync_commits == writer.commits - 1


def test_after_commit_actions_run_after_a_durable_commit_only(tmp_path: Path) -> None:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(tmp_path / "q.db", isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (x PRIMARY KEY)")
        return conn

    writer = GroupCommitWriter(connect)
    seen: list[tuple[str, int]] = []

    def committed_rows() -> int:
        check = sqlite3.connect(tmp_path / "q.db")
        try:
            return int(check.execute("SELECT COUNT(*) FROM t").fetchone()[0])
        finally:
            check.close()

    def insert(x: int, *, fail: bool = False) -> Callable[[sqlite3.Connection], None]:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t VALUES (?)", (x,))
            # The action sees the commit from another connection: it ran after COMMIT.
            writer.after_commit(lambda: seen.append((f"after {x}", committed_rows())))
            if fail:
                raise RuntimeError("job failed")

        return job

    async def main() -> None:
        await writer.run(insert(1), durable=False)
        assert seen == [("after 1", 1)]
        assert writer.wal_syncs == 1  # a non-durable batch: the WAL was fsynced first
        await writer.run(insert(2))
        assert seen[-1] == ("after 2", 2) and writer.wal_syncs == 1  # already durable
        try:
            await writer.run(insert(3, fail=True))
        except Exception:
            pass
        assert len(seen) == 2  # a failed batch runs no action
        await writer.run(insert(4), durable=False)
        assert seen[-1] == ("after 4", 3)

    try:
        asyncio.run(main())
    finally:
        writer.close()
