"""Moving a SQLite queue into a PostgreSQL one (``ironpost queue migrate --to URL``).

Owns :func:`migrate_queue`: engine-to-engine copying of every message of a
:class:`~ironpost.queue.sqlite.SqliteQueue` into the shared queue at a PostgreSQL URL,
row for row (id, state, arrival, size, sender, next attempt, envelope JSON as stored,
warned flag, content bytes, every recipient row), then its removal from SQLite.

The order of the two steps is the whole safety argument. Messages move in batches (at most
:data:`BATCH_MESSAGES` messages and about :data:`BATCH_BYTES` of content); a batch is
inserted into PostgreSQL in one transaction with ``synchronous_commit = on``, and only
after that COMMIT returned are its messages deleted from SQLite (``delete_messages``,
which unlinks body files only after its own commit). So:

- a crash (or error) before the PostgreSQL COMMIT leaves the batch in SQLite only: the
  next run copies it;
- a crash between the COMMIT and the SQLite delete leaves it in both: the next run finds
  each id already in PostgreSQL *with the same envelope*, copies nothing and deletes it
  from SQLite. A message is therefore never lost and never copied twice, and a run can be
  repeated after a crash at any point until it reports nothing left.

An id already in PostgreSQL with a *different* envelope (two machines that made the same
id) is not the same message: it is left in SQLite and reported, as is a message whose
rows cannot be copied (a missing body file, stored text PostgreSQL refuses): nothing is
deleted that is not safely in the target. Re-run the migration *before* any PostgreSQL
node starts delivering: a message copied by a crashed run and already delivered (hence
removed) by a node would be copied again by the next run, and delivered twice.

States: ACTIVE becomes INCOMING (as ``recover`` does: nothing is being delivered once
the SQLite server is stopped), HOLD, DEFERRED, INCOMING and CORRUPT (and any state
SQLite holds) are kept, without decoding anything; the lease columns are NULL. The
source server must be stopped (the CLI refuses otherwise): this module assumes nothing
else claims or records in the SQLite queue meanwhile; new mail dropped by ``sendmail``
during the run is picked up by a final pass.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ironpost.queue.model import CorruptRecord, QueueState
from ironpost.queue.pg_records import migrate as migrate_schema
from ironpost.queue.postgres import CONNECT_TIMEOUT, PgDb, connect, finish_transaction
from ironpost.queue.records import QueueSchemaError, qmarks
from ironpost.queue.sql import Db
from ironpost.queue.sqlite import SqliteQueue

T = TypeVar("T")

#: Messages per PostgreSQL transaction.
BATCH_MESSAGES = 500
#: Content bytes per batch (a batch is held in memory); a larger message goes alone.
BATCH_BYTES = 64 * 1024 * 1024

_MESSAGE_COLUMNS = "id, state, arrival, size, sender, next_attempt, envelope, warned"
_RCPT_COLUMNS = (
    "message_id, idx, address, original, notify, orcpt, status, attempts, next_attempt,"
    " last_reply, domain"
)
_INSERT_MESSAGE = (
    f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO NOTHING"
)
_INSERT_CONTENT = (
    "INSERT INTO message_content (message_id, content, file_size) VALUES (?, ?, NULL)"
    " ON CONFLICT (message_id) DO NOTHING"
)
_INSERT_RCPT = (
    f"INSERT INTO recipients ({_RCPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (message_id, idx) DO NOTHING"
)
_SCHEMES = ("postgresql://", "postgres://")
_PASSWORD = re.compile(r"(://[^:/@?#]*:)[^@/?#]*@|(password=)[^&\s]*")

#: Called with the ids of a batch after its PostgreSQL COMMIT, before the SQLite delete.
AfterCommit = Callable[[Sequence[str]], None]


class MigrationError(Exception):
    """The migration cannot run or go on. ``temporary``: the database is unreachable or
    was lost (retry later); otherwise the URL or the target is wrong (fix the config)."""

    def __init__(self, text: str, *, temporary: bool) -> None:
        super().__init__(text)
        self.temporary = temporary


@dataclass(slots=True)
class MigrationResult:
    copied: int = 0  # messages inserted into PostgreSQL and removed from SQLite
    already: int = 0  # found in PostgreSQL (an earlier, interrupted run), removed from SQLite
    left: dict[str, str] = field(default_factory=dict)  # id -> why it stays in SQLite
    batches: int = 0  # PostgreSQL transactions committed


@dataclass(frozen=True, slots=True)
class MessageRows:
    """One message as stored, ready for PostgreSQL (state already mapped)."""

    id: str
    message: tuple[Any, ...]  # _MESSAGE_COLUMNS
    content: bytes
    recipients: list[tuple[Any, ...]]  # _RCPT_COLUMNS

    @property
    def envelope(self) -> Any:
        return self.message[6]


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced, for messages."""
    return _PASSWORD.sub(lambda m: f"{m[1]}***@" if m[1] else f"{m[2]}***", url)


def check_url(url: str) -> None:
    """:class:`MigrationError` (not temporary) unless ``url`` is a well-formed
    ``postgresql://`` (or ``postgres://``) URL."""
    if not url.startswith(_SCHEMES):
        # Not echoed: a key=value connection string may hold a password anywhere.
        raise MigrationError("not a postgresql:// URL", temporary=False)
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise MigrationError(f"bad database URL: {_clean(exc, url)}", temporary=False) from None


def _clean(exc: BaseException, url: str) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text.replace(url, redact(url))


def open_target(url: str, *, timeout: int = CONNECT_TIMEOUT) -> PgDb:
    """A connection to the target, its queue schema created or brought up to date."""
    check_url(url)
    try:
        db = connect(url, timeout=timeout)
    except psycopg.ProgrammingError as exc:
        raise MigrationError(f"bad database URL: {_clean(exc, url)}", temporary=False) from None
    except psycopg.Error as exc:
        raise MigrationError(f"cannot connect: {_clean(exc, url)}", temporary=True) from None
    try:
        _transaction(db, migrate_schema)
    except QueueSchemaError as exc:
        db.close()
        raise MigrationError(str(exc), temporary=False) from None
    except psycopg.Error as exc:
        db.close()
        raise MigrationError(
            f"cannot prepare the queue schema: {_clean(exc, url)}",
            temporary=isinstance(exc, psycopg.OperationalError),
        ) from None
    return db


def _transaction(db: PgDb, work: Callable[[Db], T]) -> T:
    def durably(tx: Db) -> T:
        # Whatever the server's default: the SQLite copy is deleted on the strength of it.
        tx.execute("SET LOCAL synchronous_commit = on")
        return work(tx)

    db.execute("BEGIN")
    return finish_transaction(db, durably)


# -- reading the source ---------------------------------------------------------------


def read_batch(
    source: SqliteQueue,
    after: str,
    *,
    limit: int = BATCH_MESSAGES,
    max_bytes: int = BATCH_BYTES,
    skip: frozenset[str] | set[str] = frozenset(),
) -> tuple[list[MessageRows], dict[str, str], str | None]:
    """The next messages with ids above ``after`` (in id order), from one snapshot:
    ``(batch, unreadable id -> reason, last id looked at or None at the end)``. Ids in
    ``skip`` (already known to stay behind) are passed over."""

    def read(conn: Any) -> tuple[list[Any], dict[str, Any], dict[str, list[tuple[Any, ...]]]]:
        rows = conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        ).fetchall()
        taken: list[Any] = []
        total = 0
        for row in rows:
            size = row[3] if isinstance(row[3], int) else 0
            if taken and total + size > max_bytes:
                break
            taken.append(row)
            total += size
        ids = [str(r[0]) for r in taken if str(r[0]) not in skip]
        if not ids:
            return taken, {}, {}
        marks = qmarks(ids)
        contents = {
            str(r[0]): r[1:]
            for r in conn.execute(
                "SELECT message_id, content, file_size FROM message_content"
                f" WHERE message_id IN ({marks})",
                ids,
            )
        }
        rcpts: dict[str, list[tuple[Any, ...]]] = {}
        for r in conn.execute(
            f"SELECT {_RCPT_COLUMNS} FROM recipients WHERE message_id IN ({marks})"
            " ORDER BY message_id, idx",
            ids,
        ):
            rcpts.setdefault(str(r[0]), []).append(tuple(r))
        return taken, contents, rcpts

    # The SqlAdmin read primitive: one snapshot of messages, contents and recipients.
    taken, contents, rcpts = source._admin_read(read)
    if not taken:
        return [], {}, None
    batch: list[MessageRows] = []
    bad: dict[str, str] = {}
    for row in taken:
        message_id = str(row[0])
        if message_id in skip:
            continue
        content_row = contents.get(message_id)
        if content_row is None:
            bad[message_id] = "no content row"
            continue
        try:
            # Through the engine, so a body kept in a file is read (and checked) too.
            content = source._body_of(message_id, content_row)
        except (CorruptRecord, OSError, TypeError, ValueError) as exc:
            bad[message_id] = f"cannot read the content: {exc}"
            continue
        state = row[1]
        if state == QueueState.ACTIVE.value:
            state = QueueState.INCOMING.value  # as recover() does; nothing is in flight
        batch.append(
            MessageRows(
                id=message_id,
                message=(message_id, state, *row[2:]),
                content=content,
                recipients=rcpts.get(message_id, []),
            )
        )
    return batch, bad, str(taken[-1][0])


# -- writing the target ----------------------------------------------------------------


@dataclass(slots=True)
class _Written:
    copied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    conflicts: dict[str, str] = field(default_factory=dict)


def write_batch(db: PgDb, batch: Sequence[MessageRows]) -> _Written:
    """Insert ``batch`` in one durable transaction; ids already there with the same
    envelope count as ``already``, with another envelope as ``conflicts``."""

    def work(tx: Db) -> _Written:
        written = _Written()
        ids = [m.id for m in batch]
        present = {
            str(r[0]): r[1]
            for r in tx.execute(
                f"SELECT id, envelope FROM messages WHERE id IN ({qmarks(ids)})", ids
            )
        }
        new: list[MessageRows] = []
        for m in batch:
            if m.id not in present:
                new.append(m)
            elif present[m.id] == m.envelope:
                written.already.append(m.id)
            else:
                written.conflicts[m.id] = "another message with this id is in the database"
        if new:
            tx.executemany(_INSERT_MESSAGE, [m.message for m in new])
            tx.executemany(_INSERT_CONTENT, [(m.id, m.content) for m in new])
            rcpts = [r for m in new for r in m.recipients]
            if rcpts:
                tx.executemany(_INSERT_RCPT, rcpts)
        written.copied = [m.id for m in new]
        return written

    return _transaction(db, work)


def _write_isolating(db: PgDb, batch: Sequence[MessageRows]) -> _Written:
    """:func:`write_batch`; if PostgreSQL refuses the data (a CORRUPT row's raw values),
    each message again in its own transaction, so one bad row holds back only itself."""
    try:
        return write_batch(db, batch)
    except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
        if len(batch) == 1:
            return _Written(conflicts={batch[0].id: f"refused by PostgreSQL: {_first(exc)}"})
    merged = _Written()
    for m in batch:
        one = _write_isolating(db, [m])
        merged.copied += one.copied
        merged.already += one.already
        merged.conflicts.update(one.conflicts)
    return merged


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# -- the migration ---------------------------------------------------------------------


def migrate_queue(
    source: SqliteQueue,
    url: str,
    *,
    batch_messages: int = BATCH_MESSAGES,
    batch_bytes: int = BATCH_BYTES,
    after_commit: AfterCommit | None = None,
    timeout: int = CONNECT_TIMEOUT,
) -> MigrationResult:
    """Move every message of ``source`` into the PostgreSQL queue at ``url`` (see the
    module docstring for why this is safe to interrupt and repeat). ``after_commit`` is
    called between each batch's PostgreSQL COMMIT and its SQLite delete (tests inject a
    crash there). :class:`MigrationError` if the target cannot be reached or used; the
    batches committed before it stay migrated."""
    if batch_messages < 1 or batch_bytes < 1:
        raise ValueError("batches need at least one message and one byte")
    db = open_target(url, timeout=timeout)
    result = MigrationResult()
    try:
        # Passes until one moves nothing: mail dropped into SQLite during a pass (sendmail)
        # may carry an id below the point the pass had reached.
        while True:
            moved = _one_pass(source, db, result, batch_messages, batch_bytes, after_commit, url)
            if not moved:
                return result
    except sqlite3.Error as exc:
        # E.g. the queue locked past its busy timeout: what is committed in PostgreSQL
        # and still in SQLite is recognised (same envelope) and removed by the re-run.
        raise MigrationError(f"SQLite queue: {exc}", temporary=True) from None
    finally:
        with contextlib.suppress(psycopg.Error):
            db.close()


def _one_pass(
    source: SqliteQueue,
    db: PgDb,
    result: MigrationResult,
    batch_messages: int,
    batch_bytes: int,
    after_commit: AfterCommit | None,
    url: str,
) -> int:
    moved = 0
    after = ""
    while True:
        skip = set(result.left)
        batch, bad, last = read_batch(
            source, after, limit=batch_messages, max_bytes=batch_bytes, skip=skip
        )
        if last is None:
            return moved
        after = last
        result.left.update(bad)
        if not batch:
            continue
        try:
            written = _write_isolating(db, batch)
        except psycopg.Error as exc:
            raise MigrationError(
                f"database write failed: {_clean(exc, url)}",
                temporary=isinstance(exc, psycopg.OperationalError),
            ) from None
        result.batches += 1
        result.left.update(written.conflicts)
        done = written.copied + written.already
        if after_commit is not None:
            after_commit(done)
        if done:
            source.delete_messages(done)
        result.copied += len(written.copied)
        result.already += len(written.already)
        moved += len(done)
