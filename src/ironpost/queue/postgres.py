"""The PostgreSQL queue engine: one queue shared by many ironpost nodes (issue #8).

Selected with ``queue_engine = postgresql`` and ``queue_database_url``. The same
:class:`~ironpost.queue.store.QueueStore` as SQLite, with the same tables and shared SQL
(:mod:`ironpost.queue.records`, :mod:`ironpost.queue.admin`); what a cluster changes is
in :mod:`ironpost.queue.pg_records` (leases, fencing, migrations).

Threads, not an asyncio driver, and why: every server-side write is a job of one
:class:`~ironpost.queue.writer.GroupCommitWriter` thread, exactly as with SQLite, so the
group commit (every message that finished DATA during the previous COMMIT joins the
next transaction) and its failure semantics are the same code. The event loop never
waits on the database: it awaits the writer's futures. Bodies are read through a psycopg
connection pool on reader threads; admin commands use their own connection.

Invariants:
- a ``submit`` returns only after the COMMIT holding it returned with
  ``synchronous_commit = on`` (the WAL is flushed, and replicated if the cluster has a
  synchronous standby); any failure, the database being unreachable included, raises
  :class:`QueueWriteError` (the server answers 451 4.3.0), never a false success;
- the bookkeeping of delivery (claim, record) commits with ``synchronous_commit = off``:
  a database crash can undo it, which means a redelivery, never a loss;
- a lost connection is reopened by the next batch (the writer never reuses a connection
  in doubt), so a node reconnects by itself when the database is back;
- leases: see :mod:`ironpost.queue.pg_records`; this node renews its own while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from ironpost.queue.admin import SqlAdmin
from ironpost.queue.hotcache import HotContent
from ironpost.queue.ids import new_queue_id
from ironpost.queue.model import (
    Envelope,
    Outcome,
    QueuedMessage,
    QueueState,
    QueueWriteError,
)
from ironpost.queue.pg_records import INSERT_MESSAGE, Leases, migrate, node_rows, renew
from ironpost.queue.records import (
    INSERT_CONTENT,
    INSERT_RCPT,
    abandon_job,
    check_outcomes,
    mark_warned_job,
    submit_rows,
)
from ironpost.queue.sql import Cursor, Db
from ironpost.queue.writer import GroupCommitWriter

T = TypeVar("T")
#: Default memory for bodies awaiting their first delivery (as SQLite's ``HOT_BYTES``).
HOT_BYTES = 32 * 1024 * 1024
#: How long a claim holds its messages without renewal (``queue_lease_time``).
LEASE_SECONDS = 60.0
CONNECT_TIMEOUT = 5


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """``?`` placeholders (the shared SQL's) as psycopg's ``%s``."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgDb:
    """A psycopg connection as a :class:`~ironpost.queue.sql.Db` (autocommit, so the
    engine's BEGIN/COMMIT delimit transactions exactly as with sqlite3)."""

    __slots__ = ("_context", "_pipeline", "raw")

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self._context: Any = None
        self._pipeline: Any = None

    def enter_pipeline(self) -> None:
        self._context = self.raw.pipeline()
        self._pipeline = self._context.__enter__()

    def exit_pipeline(self) -> None:
        context, self._context, self._pipeline = self._context, None, None
        if context is not None:
            context.__exit__(None, None, None)

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        if parameters:
            cursor = self.raw.execute(_pg_sql(sql), tuple(parameters))
        else:
            cursor = self.raw.execute(sql)
        return cursor if self._pipeline is None else _Pipelined(cursor, self._pipeline)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor:
        cursor = self.raw.cursor()
        cursor.executemany(_pg_sql(sql), [tuple(p) for p in parameters])
        return cursor if self._pipeline is None else _Pipelined(cursor, self._pipeline)

    def close(self) -> None:
        self._context = self._pipeline = None  # closing the connection ends it
        self.raw.close()

    @property
    def usable(self) -> bool:
        return not (self.raw.closed or self.raw.broken)


class _Pipelined:
    """A cursor of a pipelined statement: its row count is known only once the pipeline
    has synced, so asking for it syncs (rows are fetched on demand by psycopg itself)."""

    __slots__ = ("_cursor", "_pipeline")

    def __init__(self, cursor: psycopg.Cursor[Any], pipeline: Any) -> None:
        self._cursor = cursor
        self._pipeline = pipeline

    @property
    def rowcount(self) -> int:
        if self._cursor.rowcount < 0:
            self._pipeline.sync()
        return self._cursor.rowcount

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)


def finish_transaction(db: PgDb, work: Callable[[Db], T]) -> T:
    """Run ``work`` in the transaction the caller began on ``db``, then COMMIT; ROLLBACK
    (as far as the connection allows) if anything raises."""
    try:
        result = work(db)
    except BaseException:
        with contextlib.suppress(psycopg.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def connect(url: str, *, timeout: int = CONNECT_TIMEOUT) -> PgDb:
    return PgDb(psycopg.connect(url, autocommit=True, connect_timeout=timeout))


class _PgWriter(GroupCommitWriter[PgDb]):
    """The group-commit writer on a psycopg connection, each batch in pipeline mode: the
    statements of a whole batch go out without waiting for each reply (a job that reads
    a result waits for what it needs), so a batch costs a few round trips, not three per
    message. An error anywhere still fails the whole batch, at the latest at COMMIT."""

    def _begin(self, conn: PgDb, durable: bool) -> None:
        conn.enter_pipeline()
        conn.execute("BEGIN")
        # Per transaction: the server's default may be anything, this is our guarantee.
        conn.execute(f"SET LOCAL synchronous_commit = {'on' if durable else 'off'}")

    def _commit(self, conn: PgDb) -> None:
        conn.execute("COMMIT")
        conn.exit_pipeline()  # waits for every reply: COMMIT's included

    def _run_after(self, conn: PgDb, durable: bool) -> None:
        # The actions only update this process's memory (lease tokens): nothing to make
        # durable first, unlike SQLite's unlinking of body files.
        actions, self._after = self._after, []
        for action in actions:
            action()

    def _retryable(self, exc: Exception) -> bool:
        # The database rolled the whole batch back; nothing of it happened.
        return isinstance(
            exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
        )


class _Records:
    """Outcomes gathered for one record job of the writer (see ``PostgresQueue.record``)."""

    __slots__ = ("future", "open", "outcomes")

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.open = True
        self.future: asyncio.Future[list[str]] | None = None


class PostgresQueue(SqlAdmin):
    """A :class:`~ironpost.queue.store.QueueStore` in a PostgreSQL database."""

    def __init__(
        self,
        url: str,
        *,
        node: str,
        lease_seconds: float = LEASE_SECONDS,
        hot_bytes: int = HOT_BYTES,
        readers: int = 4,
    ) -> None:
        """``node``: this node's name, unique in the cluster (its leases carry it).
        ``hot_bytes``: memory for just-accepted bodies (0 where nothing is delivered)."""
        if not node:
            raise ValueError("a PostgreSQL queue needs a node name")
        if not lease_seconds > 0:
            raise ValueError(f"the lease time must be positive, not {lease_seconds!r}")
        self.url = url
        self.node = node
        self.hot = HotContent(hot_bytes)
        self.orphans_removed = 0  # no body files: nothing is ever orphaned
        self.leases = Leases(node, lease_seconds)
        self._admin_lock = threading.Lock()
        self._admin_conn: PgDb | None = None
        self._admin_transaction(migrate)
        self._writer = _PgWriter(self._connect, name="ironpost-queue-writer")
        # Claims commit on their own (see Leases.claim_job): a claim never waits for a
        # lock, so it can never be part of a deadlock between two nodes' batches.
        self._claimer = _PgWriter(self._connect, name="ironpost-queue-claimer")
        self._records: _Records | None = None
        self._records_lock = threading.Lock()
        self._readers = readers
        self._pool: ConnectionPool[Any] | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()
        self.renewals = 0
        self.renew_errors = 0

    def _connect(self) -> PgDb:
        return connect(self.url)

    # -- server side (async) -------------------------------------------------------------

    @property
    def commits(self) -> int:
        return self._writer.commits + self._claimer.commits

    @property
    def writer(self) -> GroupCommitWriter[PgDb]:
        return self._writer

    async def submit(
        self, envelope: Envelope, content: bytes, *, queue_id: str | None = None
    ) -> str:
        message_id = queue_id or new_queue_id()
        row, rcpt_rows = submit_rows(message_id, envelope, len(content))
        message_row = (*row, self.node)  # origin: this node's for the hand-off time
        blob = bytes(content)

        def job(db: PgDb) -> str:
            db.execute(INSERT_MESSAGE, message_row)
            db.execute(INSERT_CONTENT, (message_id, blob, None))
            db.executemany(INSERT_RCPT, rcpt_rows)
            return message_id

        await self._writer.run(job)
        if len(blob) <= self.hot.max_body:
            self.hot.put(message_id, blob)
        return message_id

    async def claim(self, *, now: float, limit: int) -> list[QueuedMessage]:
        if limit <= 0:
            return []
        self._start_renewer()
        claimer = self._claimer
        claimed: list[QueuedMessage] = await claimer.run(
            self.leases.claim_job(now, limit, claimer.after_commit), durable=False
        )
        return claimed

    async def content(self, message_id: str) -> bytes:
        """The stored message bytes; ``KeyError`` if the message is gone."""
        hot = self.hot.take(message_id)
        if hot is not None:
            return hot
        if self._reader is None:
            self._reader = ThreadPoolExecutor(
                self._readers, thread_name_prefix="ironpost-queue-reader"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self._read_content, message_id)

    def _read_content(self, message_id: str) -> bytes:
        if self._pool is None:
            with self._admin_lock:  # one pool, however many readers race to open it
                if self._pool is None:
                    self._pool = ConnectionPool(
                        self.url,
                        min_size=1,
                        max_size=self._readers,
                        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
                        check=ConnectionPool.check_connection,
                        name="ironpost-queue-readers",
                        open=True,
                    )
        try:
            with self._pool.connection(timeout=CONNECT_TIMEOUT * 2) as raw:
                row = raw.execute(
                    "SELECT content FROM message_content WHERE message_id = %s", (message_id,)
                ).fetchone()
        except psycopg.Error as exc:
            raise QueueWriteError(f"queue read failed: {exc}") from exc
        if row is None:
            raise KeyError(message_id)
        return bytes(row[0])

    async def record(self, outcomes: Sequence[Outcome]) -> list[str]:
        check_outcomes(outcomes)
        if not outcomes:
            return []
        # Every record() made before the writer picks the job up joins it: one locking
        # read and one settling read for all of them, not two per message.
        with self._records_lock:
            batch = self._records
            # A batch the writer failed without running (no connection) is done, not
            # closed: joining it would fail every later record with its error.
            if batch is None or not batch.open or (batch.future and batch.future.done()):
                batch = self._records = _Records()
                batch.future = self._writer.run(self._record_job(batch), durable=False)
            batch.outcomes.extend(outcomes)
            shared = batch.future
        assert shared is not None
        try:
            removed = await asyncio.shield(shared)
        except QueueWriteError:
            # The manager drops the message; so does the renewer, and the lease expires:
            # then the message is claimed again (by any node), never left stuck ACTIVE.
            self.leases.forget(o.message_id for o in outcomes)
            raise
        mine = {o.message_id for o in outcomes}
        return [m for m in removed if m in mine]

    def _record_job(self, batch: _Records) -> Callable[[PgDb], list[str]]:
        def job(db: PgDb) -> list[str]:
            with self._records_lock:
                batch.open = False  # later outcomes go to the next job
                outcomes = list(batch.outcomes)
            return self.leases.record_job(outcomes, self._writer.after_commit)(db)

        return job

    async def recover(self) -> int:
        """Return this node's interrupted (ACTIVE) messages to INCOMING; other nodes'
        work is theirs until their leases expire."""
        count: int = await self._writer.run(self.leases.recover_job(self._writer.after_commit))
        return count

    async def abandon(self, message_ids: Sequence[str], *, next_attempt: float) -> None:
        if not message_ids:
            return
        give_back = abandon_job(message_ids, next_attempt)

        def job(db: PgDb) -> None:
            give_back(db)
            db.execute(
                "UPDATE messages SET lease_owner = NULL, lease_token = NULL,"
                " lease_expires = NULL WHERE id = ANY(?) AND lease_owner = ? AND state != ?",
                (list(message_ids), self.node, QueueState.ACTIVE.value),
            )

        try:
            await self._writer.run(job, durable=False)
        finally:
            # Given back, or (if that failed) left to expire: either way not ours to renew.
            self.leases.forget(message_ids)

    async def mark_warned(self, message_ids: Sequence[str]) -> None:
        if message_ids:
            await self._writer.run(mark_warned_job(message_ids), durable=False)

    # -- lease renewal ---------------------------------------------------------------

    def _start_renewer(self) -> None:
        if self._renewer is None and not self._stop.is_set():
            self._renewer = threading.Thread(
                target=self._renew_loop, name="ironpost-queue-leases", daemon=True
            )
            self._renewer.start()

    def _renew_loop(self) -> None:
        """Every third of a lease: extend this node's leases. A failure (the database
        away) is retried at the next tick on a new connection; leases that expire
        meanwhile are taken over by other nodes, and this node's outcomes for them are
        fenced off (:mod:`ironpost.queue.pg_records`)."""
        db: PgDb | None = None
        interval = self.leases.lease_seconds / 3
        while not self._stop.wait(interval):
            try:
                if db is None or not db.usable:
                    db = self._connect()
                renew(db, self.node, self.leases.lease_seconds, self.leases.live())
                self.renewals += 1
            except psycopg.Error:
                self.renew_errors += 1
                if db is not None:
                    with contextlib.suppress(psycopg.Error):
                        db.close()
                db = None
        if db is not None:
            with contextlib.suppress(psycopg.Error):
                db.close()

    def close(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        self._writer.close()
        self._claimer.close()
        if self._reader is not None:
            self._reader.shutdown(wait=True)
            self._reader = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        with self._admin_lock:
            if self._admin_conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._admin_conn.close()
                self._admin_conn = None

    # -- admin (synchronous): the primitives of SqlAdmin ---------------------------

    def _admin(self) -> PgDb:
        if self._admin_conn is None or not self._admin_conn.usable:
            self._admin_conn = self._connect()
        return self._admin_conn

    def _admin_run(self, begin: str, work: Callable[[Db], T]) -> T:
        with self._admin_lock:
            db = self._admin()
            try:
                db.execute(begin)
            except psycopg.OperationalError:
                # A kept connection gone stale (the database restarted): nothing ran.
                self._admin_conn = None
                db = self._admin()
                db.execute(begin)
            return finish_transaction(db, work)

    def _admin_read(self, work: Callable[[Db], T]) -> T:
        return self._admin_run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", work)

    def _admin_transaction(self, work: Callable[[Db], T]) -> T:
        return self._admin_run("BEGIN", work)

    def _admin_delete(self, work: Callable[[Db], T], ids: Sequence[str] | None) -> T:
        return self._admin_transaction(work)

    def _admin_write(self, sql: str, params: Sequence[Any]) -> int:
        return self._admin_transaction(lambda db: int(db.execute(sql, params).rowcount))

    def _body_of(self, message_id: str, row: Sequence[Any]) -> bytes:
        return bytes(row[0])

    def nodes(self) -> list[tuple[str, float, float, int, int]]:
        """Every node of the cluster: ``(name, started, heartbeat, pid, messages held)``."""
        return self._admin_read(node_rows)

    def integrity_check(self) -> str:
        """What SQLite's ``PRAGMA integrity_check`` says of a sound database: PostgreSQL
        keeps its own; this checks that every message has its content and recipients."""

        def check(db: Db) -> str:
            row = db.execute(
                "SELECT"
                " (SELECT COUNT(*) FROM messages m WHERE NOT EXISTS"
                "   (SELECT 1 FROM message_content c WHERE c.message_id = m.id)),"
                " (SELECT COUNT(*) FROM recipients r WHERE NOT EXISTS"
                "   (SELECT 1 FROM messages m WHERE m.id = r.message_id))"
            ).fetchone()
            if row[0] or row[1]:
                return f"{row[0]} message(s) without content, {row[1]} stray recipient(s)"
            return "ok"

        return self._admin_read(check)
