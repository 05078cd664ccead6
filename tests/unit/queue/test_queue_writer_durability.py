"""Durable jobs commit with synchronous=FULL; a batch of bookkeeping jobs does not."""

from __future__ import annotations

import asyncio
import sqlite3
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
