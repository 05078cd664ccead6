"""SQLite queue records: the schema, row decoding, and the write jobs of the queue.

Everything here is plain functions of a ``sqlite3.Connection``; the engine
(:mod:`ironpost.queue.sqlite`) decides on which thread and in which transaction they run.
The SQL is kept portable (TEXT/INTEGER/REAL/BLOB, no triggers, no SQLite-only syntax
beyond ``BEGIN IMMEDIATE`` in the engine) so that a PostgreSQL engine can share it.

Invariants:
- ``messages.next_attempt`` is, for a DEFERRED message, the earliest ``next_attempt`` of
  its deferred recipients, which lets ``claim`` find due messages by index alone;
- a claimed recipient is (re)marked PENDING for the attempt under way; a message with
  PENDING recipients is never filed as DEFERRED;
- a message whose recipients are all final is deleted in the same transaction as the
  outcome that made them final;
- a row that does not decode raises :class:`CorruptRecord` and its message is moved to
  CORRUPT by ``claim``; nothing here raises anything else for bad stored data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from ironpost.queue.model import (
    CorruptRecord,
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    QueueState,
    RecipientSpec,
    RecipientStatus,
    envelope_from_json,
    notify_from_text,
)

SCHEMA_VERSION = 1

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS messages (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        arrival REAL NOT NULL,
        size INTEGER NOT NULL,
        sender TEXT NOT NULL,
        next_attempt REAL NOT NULL,
        envelope TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS messages_due ON messages (state, next_attempt)",
    """CREATE TABLE IF NOT EXISTS message_content (
        message_id TEXT PRIMARY KEY,
        content BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS recipients (
        message_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        address TEXT NOT NULL,
        original TEXT NOT NULL,
        notify TEXT,
        orcpt TEXT,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt REAL NOT NULL,
        last_reply TEXT,
        PRIMARY KEY (message_id, idx)
    )""",
)

RCPT_COLUMNS = "idx, address, original, notify, orcpt, status, attempts, next_attempt, last_reply"
INSERT_MESSAGE = (
    "INSERT INTO messages (id, state, arrival, size, sender, next_attempt, envelope)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
INSERT_CONTENT = "INSERT INTO message_content (message_id, content) VALUES (?, ?)"
INSERT_RCPT = (
    "INSERT INTO recipients (message_id, idx, address, original, notify, orcpt, status,"
    " attempts, next_attempt, last_reply) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, NULL)"
)


class QueueSchemaError(Exception):
    """The database was written by a newer ironpost (unknown schema version)."""


# -- row decoding (pure) ------------------------------------------------------------


def _decode_recipient(row: Sequence[Any]) -> QueuedRecipient:
    idx, address, original, notify, orcpt, status, attempts, next_attempt, last_reply = row
    try:
        return QueuedRecipient(
            index=int(idx),
            spec=RecipientSpec(
                address=str(address),
                original=str(original),
                notify=notify_from_text(notify),
                orcpt=orcpt,
            ),
            status=RecipientStatus(status),
            attempts=int(attempts),
            next_attempt=float(next_attempt),
            last_reply=last_reply,
        )
    except (ValueError, TypeError) as exc:
        raise CorruptRecord(f"bad recipient row: {exc}") from exc


def decode_message(
    message_id: str, state: str, size: int, envelope_json: str, rcpt_rows: Iterable[Sequence[Any]]
) -> QueuedMessage:
    """Build a :class:`QueuedMessage` from stored rows; :class:`CorruptRecord` if they are bad."""
    recipients = [_decode_recipient(r) for r in rcpt_rows]
    try:
        queue_state = QueueState(state)
    except ValueError as exc:
        raise CorruptRecord(f"unknown state {state!r}") from exc
    envelope = envelope_from_json(envelope_json, tuple(r.spec for r in recipients))
    return QueuedMessage(
        id=message_id, envelope=envelope, state=queue_state, recipients=recipients, size=size
    )


def load_message(conn: sqlite3.Connection, message_id: str) -> QueuedMessage | None:
    row = conn.execute(
        "SELECT state, size, envelope FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    if row is None:
        return None
    rcpts = conn.execute(
        f"SELECT {RCPT_COLUMNS} FROM recipients WHERE message_id = ? ORDER BY idx",
        (message_id,),
    ).fetchall()
    return decode_message(message_id, row[0], row[1], row[2], rcpts)


def delete_message(conn: sqlite3.Connection, message_id: str) -> bool:
    conn.execute("DELETE FROM recipients WHERE message_id = ?", (message_id,))
    conn.execute("DELETE FROM message_content WHERE message_id = ?", (message_id,))
    return conn.execute("DELETE FROM messages WHERE id = ?", (message_id,)).rowcount > 0


def set_state(conn: sqlite3.Connection, message_id: str, state: QueueState) -> None:
    conn.execute("UPDATE messages SET state = ? WHERE id = ?", (state.value, message_id))


def settle_state(conn: sqlite3.Connection, message_id: str) -> bool:
    """After outcomes were applied: remove the message (True) or fix its state."""
    row = conn.execute("SELECT state FROM messages WHERE id = ?", (message_id,)).fetchone()
    if row is None:
        return False  # deleted by the administrator while it was being delivered
    pending = deferred = 0
    earliest: float | None = None
    for status, count, first in conn.execute(
        "SELECT status, COUNT(*), MIN(next_attempt) FROM recipients"
        " WHERE message_id = ? AND status IN (?, ?) GROUP BY status",
        (message_id, RecipientStatus.PENDING.value, RecipientStatus.DEFERRED.value),
    ):
        if status == RecipientStatus.PENDING.value:
            pending = count
        else:
            deferred, earliest = count, first
    if not pending and not deferred:
        delete_message(conn, message_id)
        return True
    if row[0] in (QueueState.HOLD.value, QueueState.CORRUPT.value):
        return False  # held while in flight: stays held until released
    if not pending:
        conn.execute(
            "UPDATE messages SET state = ?, next_attempt = ? WHERE id = ?",
            (QueueState.DEFERRED.value, earliest, message_id),
        )
    return False


# -- the writer jobs (run in the writer thread, inside the batch transaction) ------------


def claim_job(now: float, limit: int) -> Any:
    def job(conn: sqlite3.Connection) -> list[QueuedMessage]:
        fresh = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM messages WHERE state = ? ORDER BY id LIMIT ?",
                (QueueState.INCOMING.value, limit),
            )
        ]
        due = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM messages WHERE state = ? AND next_attempt <= ?"
                " ORDER BY next_attempt, id LIMIT ?",
                (QueueState.DEFERRED.value, now, limit),
            )
        ]
        # Alternate new and retried mail, as Postfix's qmgr does, so neither starves.
        order: list[str] = []
        for i in range(max(len(fresh), len(due))):
            order.extend(q[i] for q in (fresh, due) if i < len(q))
        claimed: list[QueuedMessage] = []
        for message_id in order[:limit]:
            try:
                message = load_message(conn, message_id)
            except CorruptRecord:
                set_state(conn, message_id, QueueState.CORRUPT)
                continue
            if message is None:
                continue
            batch = [
                r
                for r in message.recipients
                if r.status is RecipientStatus.PENDING
                or (r.status is RecipientStatus.DEFERRED and r.next_attempt <= now)
            ]
            if not batch:  # e.g. released from hold before its retry time
                settle_state(conn, message_id)
                continue
            conn.executemany(
                "UPDATE recipients SET status = ? WHERE message_id = ? AND idx = ?",
                [(RecipientStatus.PENDING.value, message_id, r.index) for r in batch],
            )
            set_state(conn, message_id, QueueState.ACTIVE)
            for r in batch:
                r.status = RecipientStatus.PENDING
            message.state = QueueState.ACTIVE
            message.recipients = batch
            claimed.append(message)
        return claimed

    return job


def record_job(outcomes: Sequence[Outcome]) -> Any:
    rows = [(o.status.value, o.next_attempt, o.reply, o.message_id, o.index) for o in outcomes]
    touched = list(dict.fromkeys(o.message_id for o in outcomes))

    def job(conn: sqlite3.Connection) -> list[str]:
        conn.executemany(
            "UPDATE recipients SET status = ?, attempts = attempts + 1,"
            " next_attempt = COALESCE(?, next_attempt), last_reply = ?"
            " WHERE message_id = ? AND idx = ?",
            rows,
        )
        return [m for m in touched if settle_state(conn, m)]

    return job


def recover_job(conn: sqlite3.Connection) -> int:
    return conn.execute(
        "UPDATE messages SET state = ? WHERE state = ?",
        (QueueState.INCOMING.value, QueueState.ACTIVE.value),
    ).rowcount
