"""Group commit: one writer thread turns every waiting write into one transaction.

A job is a function of a database connection. Callers on any asyncio loop hand a job to
:meth:`GroupCommitWriter.run` and await the returned future. The writer thread takes the
first waiting job and then *everything else that is waiting* (each message that finished
DATA while the previous commit was on disk joins the next one), runs them all inside one
``BEGIN IMMEDIATE … COMMIT``, and only then wakes the callers, with one
``call_soon_threadsafe`` per event loop per batch.

A job is *durable* (the default) or not. A batch holding any durable job commits with
``synchronous=FULL`` (the WAL is fsynced before COMMIT returns); a batch of only
non-durable jobs commits with ``synchronous=NORMAL`` (no fsync: it reaches the disk with
the next durable commit or checkpoint). The queue manager's bookkeeping (claim, record)
is non-durable: a power loss can undo it, which means a redelivery, never a loss, while a
kill -9 loses nothing (the data is in the OS page cache). Accepting mail (submit) is
always durable. The WAL is sequential, so a durable commit also makes every earlier
commit durable: the order of events on disk is always a prefix of the order in memory.

A job may ask for an action to run after its COMMIT (:meth:`GroupCommitWriter.after_commit`:
the queue unlinks the body file of a removed message there). The writer runs those
actions, in the writer thread, once the batch has committed *durably*: after a
non-durable batch it first fsyncs the WAL, so that a power loss can never undo the
commit while keeping the action's effect (if that fsync fails, the actions are dropped).

Invariants:
- a future gets a result only after the COMMIT that holds its job has returned;
- an after-commit action runs only after its batch committed durably, never after a
  failed one, and before the batch's futures are resolved; its errors are ignored (the
  action must leave something that a later cleanup can finish);
- if anything in a batch fails (a job, the COMMIT, the connection), the transaction is
  rolled back and every future of the batch gets :class:`QueueWriteError`; the connection
  is then reopened, so the next batch starts clean. Two failures are tried once more, on
  a new connection, because nothing of the batch happened: a kept connection that fails
  to even begin (the database restarted meanwhile), and a rollback the engine calls
  retryable (PostgreSQL's deadlock and serialization failures). A job must therefore
  change nothing outside the transaction except through :meth:`after_commit`;
- after :meth:`close`, new jobs fail at once and none is left waiting forever.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from ironpost.queue.model import QueueWriteError
from ironpost.queue.sql import Db

T = TypeVar("T")


class _Conn(Db, Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Conn)
Job = Callable[[C], Any]
_Item = tuple[Job[Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop, bool]
_Settled = list[tuple["asyncio.Future[Any]", Any, BaseException | None]]


def _deliver(settled: _Settled) -> None:
    """Runs on the caller's loop: completes that loop's futures of one batch."""
    for fut, result, error in settled:
        if fut.done():  # the caller was cancelled; the work is committed regardless
            continue
        if error is None:
            fut.set_result(result)
        else:
            fut.set_exception(error)


def _fsync_wal(conn: Db) -> None:
    path = next(row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main")
    fd = os.open(f"{path}-wal", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class GroupCommitWriter(Generic[C]):
    """The single writer of one database. ``connect`` opens its (autocommit) connection."""

    def __init__(self, connect: Callable[[], C], *, name: str = "queue-writer") -> None:
        self._connect = connect
        self._name = name
        self._after: list[Callable[[], object]] = []  # this batch's; writer thread only
        self._jobs: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Counters for tests and benchmarks; written by the writer thread only.
        self.commits = 0
        self.jobs_committed = 0
        self.largest_batch = 0
        self.failed_batches = 0
        self.retried_batches = 0  # batches the database rolled back and a second try saved
        self.fsync_commits = 0  # commits made with synchronous=FULL
        self.wal_syncs = 0  # WAL fsyncs made for the after-commit actions of other commits
        self._synchronous: str | None = None  # the connection's current setting

    def run(self, job: Callable[[C], T], *, durable: bool = True) -> asyncio.Future[T]:
        """Queue ``job`` for the next transaction; the future resolves after its commit.

        ``durable=False``: the commit need not be fsynced (see the module docstring)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed:
                fut.set_exception(QueueWriteError("queue is closed"))
                return fut
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
                self._thread.start()
            self._jobs.put((job, fut, loop, durable))
        return fut

    @property
    def closed(self) -> bool:
        return self._closed

    def after_commit(self, action: Callable[[], object]) -> None:
        """Run ``action`` in the writer thread once the current batch has committed
        durably (see the module docstring). Call it only from inside a job."""
        self._after.append(action)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._jobs.put(None)
        if thread is not None:
            thread.join()

    # -- writer thread -------------------------------------------------------------

    def _main(self) -> None:
        conn: C | None = None
        try:
            stop = False
            while not stop:
                first = self._jobs.get()
                if first is None:
                    break
                batch = [first]
                while True:
                    try:
                        item = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                conn = self._run_batch(conn, batch)
        finally:
            if conn is not None:
                conn.close()
            # Jobs that raced with close(): fail them rather than leave them hanging.
            leftover: list[_Item] = []
            while True:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    leftover.append(item)
            if leftover:
                self._settle(leftover, None, "queue is closed")

    def _begin(self, conn: C, durable: bool) -> None:
        """Open the batch's transaction, fsynced at COMMIT or not (see the docstring)."""
        wanted = "FULL" if durable else "NORMAL"
        if self._synchronous != wanted:
            conn.execute(f"PRAGMA synchronous={wanted}")
            self._synchronous = wanted
        conn.execute("BEGIN IMMEDIATE")

    def _commit(self, conn: C) -> None:
        conn.execute("COMMIT")

    def _retryable(self, exc: Exception) -> bool:
        """Whether the database rolled the batch back for a reason a second try clears
        (PostgreSQL's deadlock and serialization failures); never a COMMIT in doubt."""
        return False

    def _run_batch(self, conn: C | None, batch: list[_Item]) -> C | None:
        durable = any(item[3] for item in batch)
        for attempt in (1, 2):
            results: list[Any] = []
            self._after.clear()
            reused = conn is not None
            begun = False
            try:
                if conn is None:
                    conn = self._connect()
                    self._synchronous = None
                self._begin(conn, durable)
                begun = True
                for job, _fut, _loop, _durable in batch:
                    results.append(job(conn))
                self._commit(conn)
                break
            except Exception as exc:
                self._after.clear()
                self._discard(conn)
                conn = None  # reopen for the next try: never reuse a connection in doubt
                # A kept connection that fails to even begin went stale meanwhile (the
                # database restarted): nothing ran, so try once on a new one.
                stale = reused and not begun
                if attempt == 1 and (stale or self._retryable(exc)):
                    self.retried_batches += 1
                    continue
                self.failed_batches += 1
                self._settle(batch, None, f"queue write failed: {exc}", exc)
                return None
        assert conn is not None
        if self._after:
            self._run_after(conn, durable)
        self.commits += 1
        self.fsync_commits += durable
        self.jobs_committed += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        self._settle(batch, results, None)
        return conn

    @staticmethod
    def _discard(conn: C | None) -> None:
        if conn is None:
            return
        try:
            conn.execute("ROLLBACK")
        except Exception:
            pass  # COMMIT failures may already have rolled back; a lost link too
        try:
            conn.close()
        except Exception:
            pass

    def _run_after(self, conn: C, durable: bool) -> None:
        actions, self._after = self._after, []
        if not durable:
            # synchronous cannot change inside a transaction, so make this commit (and,
            # the WAL being sequential, every earlier one) durable by hand.
            try:
                _fsync_wal(conn)
            except Exception:  # OSError, or the database refusing
                return  # the actions' leftovers are cleaned up later (see after_commit)
            self.wal_syncs += 1
        for action in actions:
            try:
                action()
            except Exception:  # its leftovers are cleaned up later (see after_commit)
                continue

    @staticmethod
    def _settle(
        batch: list[_Item],
        results: list[Any] | None,
        error: str | None,
        cause: BaseException | None = None,
    ) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, _Settled] = {}
        for i, (_job, fut, loop, _durable) in enumerate(batch):
            entry: tuple[asyncio.Future[Any], Any, BaseException | None]
            if error is None:
                assert results is not None
                entry = (fut, results[i], None)
            else:
                exc = QueueWriteError(error)
                exc.__cause__ = cause
                entry = (fut, None, exc)
            by_loop.setdefault(loop, []).append(entry)
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, settled)
            except RuntimeError:
                pass  # that loop is closed: nobody is waiting any more
