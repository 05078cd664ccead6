"""The SQLite queue engine: one database file, WAL, ``synchronous=FULL``, group commit.

Layout (see :mod:`ironpost.queue.records` and docs/queue.md): ``messages`` (one row per
message: state, envelope JSON, scheduling summary), ``message_content`` (the bytes, stored
once, apart so that a state change never rewrites the blob) and ``recipients`` (one row
per recipient with its own status). A body of at least ``body_file_threshold`` bytes is
a file in ``bodies/`` beside the database instead (:mod:`ironpost.queue.bodies`).

Invariants:
- every write of the server (submit, claim, record, recover) goes through the single
  :class:`~ironpost.queue.writer.GroupCommitWriter` thread, so a caller hears "done"
  only after the COMMIT holding its work; a submit's COMMIT is fsynced
  (``synchronous=FULL``), the manager's claim/record bookkeeping is not (see
  :mod:`ironpost.queue.writer`: a power loss can mean a redelivery, never a loss);
- HOLD and CORRUPT messages are never claimed; undecodable rows are moved to CORRUPT by
  ``claim`` and skipped by the admin listings;
- a crash at any point leaves the database consistent (SQLite's WAL), and ``recover``
  returns interrupted (ACTIVE) messages to INCOMING and removes orphaned body files;
- a body file is fsynced before its row commits and unlinked only after the commit that
  removed the row (durably: :meth:`GroupCommitWriter.after_commit`); a live row whose
  file is missing is a corrupt record, its message moves to CORRUPT.

Admin operations use their own connection with a busy timeout, so the CLI can run them
from another process while the server is writing; each bulk operation (``ALL``, by
sender, by domain) is one transaction. Opening a database of an older schema version
upgrades it in place (:data:`~ironpost.queue.records.UPGRADES`). ``content`` serves a
just-accepted body from memory (:mod:`ironpost.queue.hotcache`) and otherwise reads on a
reader thread of its own, so that message bodies never wait behind an fsync.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ironpost.queue.admin import SqlAdmin
from ironpost.queue.bodies import (
    BODY_FILE_THRESHOLD,
    DIR_NAME,
    BodyFiles,
    all_ids_with_files,
    ids_with_files,
)
from ironpost.queue.hotcache import HotContent
from ironpost.queue.ids import new_queue_id
from ironpost.queue.model import (
    CorruptRecord,
    Envelope,
    Outcome,
    QueuedMessage,
    QueueState,
    QueueWriteError,
)
from ironpost.queue.records import (
    INSERT_CONTENT,
    INSERT_MESSAGE,
    INSERT_RCPT,
    SCHEMA,
    SCHEMA_VERSION,
    SELECT_CONTENT,
    QueueSchemaError,
    abandon_job,
    check_outcomes,
    claim_job,
    mark_warned_job,
    record_job,
    recover_job,
    set_state,
    submit_rows,
    upgrade,
)
from ironpost.queue.writer import GroupCommitWriter

T = TypeVar("T")
DB_NAME = "queue.db"
#: Default memory for bodies awaiting their first delivery (see ``SqliteQueue``).
HOT_BYTES = 32 * 1024 * 1024


class SqliteQueue(SqlAdmin):
    """A :class:`~ironpost.queue.store.QueueStore` in one SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float = 10.0,
        hot_bytes: int = HOT_BYTES,
        body_file_threshold: int = BODY_FILE_THRESHOLD,
    ) -> None:
        """``hot_bytes``: memory for just-accepted bodies awaiting their first delivery
        (:mod:`ironpost.queue.hotcache`); 0 in a process that accepts but never delivers.
        ``body_file_threshold``: bodies this large or larger are written to files in
        ``bodies/`` beside the database (:mod:`ironpost.queue.bodies`); 0: never."""
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self.hot = HotContent(hot_bytes)
        self.bodies = BodyFiles(self.path.parent / DIR_NAME, body_file_threshold)
        self.orphans_removed = 0  # body files removed by the last recover()
        if not self.path.exists():
            # Create it ourselves so the mode is 0600 whatever the umask; SQLite gives its
            # -wal and -shm files the same mode as the database.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._admin_lock = threading.Lock()
        self._admin_conn: sqlite3.Connection | None = None
        with self._admin_lock:
            self._init_schema(self._admin())
        self._writer = GroupCommitWriter(self._connect, name="ironpost-queue-writer")
        self._reader: ThreadPoolExecutor | None = None
        self._reader_local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []

    # -- connections -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _admin(self) -> sqlite3.Connection:
        if self._admin_conn is None:
            self._admin_conn = self._connect()
        return self._admin_conn

    @staticmethod
    def _init_schema(conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise QueueSchemaError(f"cannot enable WAL mode (got {mode})")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in SCHEMA:
                conn.execute(statement)
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            if row[0] is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise QueueSchemaError(
                    f"queue schema version {row[0]} is newer than this ironpost ({SCHEMA_VERSION})"
                )
            elif row[0] < SCHEMA_VERSION:
                upgrade(conn, int(row[0]))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _read_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._reader_local.conn = conn
            self._reader_conns.append(conn)
        return conn

    # -- server side (async) -----------------------------------------------------------

    @property
    def commits(self) -> int:
        """Transactions committed by the writer (one per group commit)."""
        return self._writer.commits

    @property
    def writer(self) -> GroupCommitWriter[sqlite3.Connection]:
        return self._writer

    async def submit(
        self, envelope: Envelope, content: bytes, *, queue_id: str | None = None
    ) -> str:
        message_id = queue_id or new_queue_id()
        message_row, rcpt_rows = submit_rows(message_id, envelope, len(content))
        size = len(content)
        if self.bodies.wanted(message_id, size):
            return await self._submit_file(message_id, content, message_row, rcpt_rows)
        blob = bytes(content)

        def job(conn: sqlite3.Connection) -> str:
            conn.execute(INSERT_MESSAGE, message_row)
            conn.execute(INSERT_CONTENT, (message_id, blob, None))
            conn.executemany(INSERT_RCPT, rcpt_rows)
            return message_id

        await self._writer.run(job)
        self.hot.put(message_id, blob)
        return message_id

    async def _submit_file(
        self,
        message_id: str,
        content: bytes | bytearray | memoryview,
        message_row: tuple[Any, ...],
        rcpt_rows: list[tuple[Any, ...]],
    ) -> str:
        # The body is written and fsynced on a helper thread, in parallel with other
        # sessions' bodies, before the (small) transaction is queued: the writer thread
        # never carries the bytes, and the loop never waits on the disk.
        size = len(content)
        if self._writer.closed:
            raise QueueWriteError("queue is closed")
        try:
            path = await self.bodies.write_async(message_id, content)
        except OSError as exc:
            raise QueueWriteError(f"queue body write failed: {exc}") from exc

        def job(conn: sqlite3.Connection) -> str:
            # Under the write lock, as the orphan sweep is: a body swept meanwhile (by a
            # server starting while this process was between write and commit) fails
            # this submit (451) rather than commit a row without its body.
            os.stat(path)
            conn.execute(INSERT_MESSAGE, message_row)
            conn.execute(INSERT_CONTENT, (message_id, b"", size))
            conn.executemany(INSERT_RCPT, rcpt_rows)
            return message_id

        try:
            await self._writer.run(job)
        except QueueWriteError:
            # Nobody was told 250, so the file goes. (Should the COMMIT have reached the
            # disk after all, the row is CORRUPT, not lost: the client was told to retry.)
            await self.bodies.discard_async([message_id])
            raise
        if size <= self.hot.max_body:
            self.hot.put(message_id, bytes(content))
        return message_id

    async def claim(self, *, now: float, limit: int) -> list[QueuedMessage]:
        if limit <= 0:
            return []
        result: list[QueuedMessage] = await self._writer.run(claim_job(now, limit), durable=False)
        return result

    async def content(self, message_id: str) -> bytes:
        """The stored message bytes; ``KeyError`` if the message is gone."""
        hot = self.hot.take(message_id)
        if hot is not None:
            return hot
        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="ironpost-queue-reader")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader, self._read_content, message_id)
        except CorruptRecord:
            # As claim does with an undecodable record: out of the way, for the admin.
            await self._writer.run(
                lambda conn: set_state(conn, message_id, QueueState.CORRUPT), durable=False
            )
            raise

    def _read_content(self, message_id: str) -> bytes:
        row = self._read_conn().execute(SELECT_CONTENT, (message_id,)).fetchone()
        if row is None:
            raise KeyError(message_id)
        return self._body_of(message_id, row)

    def _body_of(self, message_id: str, row: Sequence[Any]) -> bytes:
        content, file_size = row
        if file_size is None:
            return bytes(content)
        return self.bodies.read(message_id, int(file_size))

    async def record(self, outcomes: Sequence[Outcome]) -> list[str]:
        check_outcomes(outcomes)
        if not outcomes:
            return []
        apply = record_job(list(outcomes))
        touched = list(dict.fromkeys(o.message_id for o in outcomes))

        def job(conn: sqlite3.Connection) -> list[str]:
            with_files = ids_with_files(conn, touched)
            removed: list[str] = apply(conn)
            doomed = [m for m in removed if m in with_files]
            if doomed:
                self._writer.after_commit(lambda: self.bodies.discard(doomed))
            return removed

        removed: list[str] = await self._writer.run(job, durable=False)
        return removed

    async def recover(self) -> int:
        """Requeue ACTIVE messages (return how many) and remove orphaned body files
        (:attr:`orphans_removed`), in one transaction: see :mod:`ironpost.queue.bodies`."""

        def job(conn: sqlite3.Connection) -> tuple[int, int]:
            return recover_job(conn), self.bodies.sweep(conn)

        count, self.orphans_removed = await self._writer.run(job)
        return count

    async def abandon(self, message_ids: Sequence[str], *, next_attempt: float) -> None:
        if message_ids:
            await self._writer.run(abandon_job(message_ids, next_attempt), durable=False)

    async def mark_warned(self, message_ids: Sequence[str]) -> None:
        """Record that a delay warning was queued for these messages (one per message)."""
        if message_ids:
            await self._writer.run(mark_warned_job(message_ids), durable=False)

    def close(self) -> None:
        self._writer.close()
        if self._reader is not None:
            self._reader.shutdown(wait=True)
            self._reader = None
        self.bodies.close()
        for conn in self._reader_conns:
            conn.close()
        self._reader_conns.clear()
        with self._admin_lock:
            if self._admin_conn is not None:
                self._admin_conn.close()
                self._admin_conn = None

    # -- admin (synchronous) ----------------------------------------------------------

    def _admin_write(self, sql: str, params: Sequence[Any]) -> int:
        with self._admin_lock:
            conn = self._admin()
            return conn.execute(sql, params).rowcount

    def _admin_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction of the admin connection."""
        with self._admin_lock:
            conn = self._admin()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def _admin_delete(
        self, work: Callable[[sqlite3.Connection], T], ids: Sequence[str] | None
    ) -> T:
        """Run the deletion ``work`` on messages ``ids`` (None: every message) in one admin
        transaction, then unlink their body files: only after the (durable) COMMIT, so a
        crash in between leaves an orphan file, never a row without its body."""
        doomed: list[str] = []

        def run(conn: sqlite3.Connection) -> T:
            doomed.extend(all_ids_with_files(conn) if ids is None else ids_with_files(conn, ids))
            return work(conn)

        result = self._admin_transaction(run)
        if doomed:
            self.bodies.discard(doomed)
        return result

    def _admin_read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one read transaction (one snapshot) of the admin connection."""
        with self._admin_lock:
            conn = self._admin()
            conn.execute("BEGIN")
            try:
                return work(conn)
            finally:
                conn.execute("COMMIT")

    def integrity_check(self) -> str:
        with self._admin_lock:
            return str(self._admin().execute("PRAGMA integrity_check").fetchone()[0])


def open_queue(
    queue_directory: Path,
    *,
    hot_bytes: int = HOT_BYTES,
    body_file_threshold: int = BODY_FILE_THRESHOLD,
) -> SqliteQueue:
    """Open (creating if needed, mode 0700) ``queue_directory`` and its ``queue.db``.

    ``hot_bytes``, ``body_file_threshold``: see :class:`SqliteQueue` (``hot_bytes`` is 0
    where this process never delivers)."""
    directory = Path(queue_directory)
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask
    return SqliteQueue(
        directory / DB_NAME, hot_bytes=hot_bytes, body_file_threshold=body_file_threshold
    )
