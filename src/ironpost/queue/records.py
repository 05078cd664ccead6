"""Queue records: the schema and its upgrades, the rows of a new message, row decoding,
and the write jobs of the queue (claim, record, abandon, recover, mark warned). The
administrative SQL (selections, bulk operations, qshape, mailq) is
:mod:`ironpost.queue.admin_sql`.

Everything here is plain functions of a :class:`~ironpost.queue.sql.Db` connection (a
``sqlite3.Connection``, or the PostgreSQL engine's wrapper); the engine
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
- a ``message_content`` row with a ``file_size`` has its body in a file
  (:mod:`ironpost.queue.bodies`); deleting such a row here leaves the file to the
  engine, which unlinks it after the commit;
- a row that does not decode raises :class:`CorruptRecord` and its message is moved to
  CORRUPT by ``claim``; nothing here raises anything else for bad stored data;
- ``recipients.domain`` is :func:`~ironpost.queue.model.address_domain` of ``address``,
  written with the row (and by the version 1 -> 2 upgrade for older rows);
- ``record`` respects a HOLD set while the message was in flight (it stays held).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ironpost.queue.model import (
    CorruptRecord,
    Envelope,
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    QueueState,
    RecipientSpec,
    RecipientStatus,
    address_domain,
    envelope_from_json,
    envelope_to_json,
    notify_from_text,
    notify_to_text,
)
from ironpost.queue.sql import Db


class QueueSchemaError(Exception):
    """The database was written by a newer ironpost (unknown schema version)."""


SCHEMA_VERSION = 3

# The current schema, for a new database. An existing one is brought up to date by the
# steps in UPGRADES, so never add an index here on a column that an upgrade adds.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS messages (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        arrival REAL NOT NULL,
        size INTEGER NOT NULL,
        sender TEXT NOT NULL,
        next_attempt REAL NOT NULL,
        envelope TEXT NOT NULL,
        warned INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS messages_due ON messages (state, next_attempt)",
    # file_size: NULL, the body is ``content``; otherwise ``content`` is empty and the body
    # is a file of that many bytes (:mod:`ironpost.queue.bodies`).
    """CREATE TABLE IF NOT EXISTS message_content (
        message_id TEXT PRIMARY KEY,
        content BLOB NOT NULL,
        file_size INTEGER
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
        domain TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (message_id, idx)
    )""",
)


def _upgrade_1_to_2(conn: Db) -> None:
    # Version 2: the per-message delay-warning flag, and each recipient's domain (computed
    # in Python, as at submit, so selection and qshape never parse addresses in SQL).
    conn.execute("ALTER TABLE messages ADD COLUMN warned INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE recipients ADD COLUMN domain TEXT NOT NULL DEFAULT ''")
    rows = conn.execute("SELECT message_id, idx, address FROM recipients").fetchall()
    conn.executemany(
        "UPDATE recipients SET domain = ? WHERE message_id = ? AND idx = ?",
        [(address_domain(str(address)), m, i) for m, i, address in rows],
    )


def _upgrade_2_to_3(conn: Db) -> None:
    # Version 3: large bodies may live in files; existing rows keep theirs (NULL).
    conn.execute("ALTER TABLE message_content ADD COLUMN file_size INTEGER")


# UPGRADES[n] turns a version-n database into version n + 1 (inside the opening
# transaction, so an interrupted upgrade leaves the old version intact).
UPGRADES: dict[int, Callable[[Db], None]] = {
    1: _upgrade_1_to_2,
    2: _upgrade_2_to_3,
}


def upgrade(conn: Db, found: int) -> None:
    """Bring a version-``found`` database to :data:`SCHEMA_VERSION`."""
    for version in range(found, SCHEMA_VERSION):
        step = UPGRADES.get(version)
        if step is None:
            raise QueueSchemaError(f"no upgrade path from queue schema version {version}")
        step(conn)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))


RCPT_COLUMNS = "idx, address, original, notify, orcpt, status, attempts, next_attempt, last_reply"
INSERT_MESSAGE = (
    "INSERT INTO messages (id, state, arrival, size, sender, next_attempt, envelope)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
INSERT_CONTENT = "INSERT INTO message_content (message_id, content, file_size) VALUES (?, ?, ?)"
SELECT_CONTENT = "SELECT content, file_size FROM message_content WHERE message_id = ?"
INSERT_RCPT = (
    "INSERT INTO recipients (message_id, idx, address, original, notify, orcpt, status,"
    " attempts, next_attempt, last_reply, domain) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, NULL, ?)"
)


MessageRow = tuple[str, str, float, int, str, float, str]


def submit_rows(
    message_id: str, envelope: Envelope, size: int
) -> tuple[MessageRow, list[tuple[Any, ...]]]:
    """The ``INSERT_MESSAGE`` row and the ``INSERT_RCPT`` rows of a new message (encoded
    on the caller's side, to keep the writer's critical path short)."""
    message_row = (
        message_id,
        QueueState.INCOMING.value,
        envelope.arrival,
        size,
        envelope.sender,
        envelope.arrival,
        envelope_to_json(envelope),
    )
    rcpt_rows = [
        (
            message_id,
            i,
            r.address,
            r.original,
            notify_to_text(r.notify),
            r.orcpt,
            RecipientStatus.PENDING.value,
            envelope.arrival,
            address_domain(r.address),
        )
        for i, r in enumerate(envelope.recipients)
    ]
    return message_row, rcpt_rows


# An outcome applied to its recipient: ``outcome_rows`` gives the parameters.
APPLY_OUTCOME = (
    "UPDATE recipients SET status = ?, attempts = attempts + 1,"
    " next_attempt = COALESCE(?, next_attempt), last_reply = ?"
    " WHERE message_id = ? AND idx = ?"
)


def outcome_rows(outcomes: Iterable[Outcome]) -> list[tuple[Any, ...]]:
    return [(o.status.value, o.next_attempt, o.reply, o.message_id, o.index) for o in outcomes]


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
    message_id: str,
    state: str,
    size: int,
    envelope_json: str,
    rcpt_rows: Iterable[Sequence[Any]],
    warned: Any = 0,
) -> QueuedMessage:
    """Build a :class:`QueuedMessage` from stored rows; :class:`CorruptRecord` if they are bad."""
    recipients = [_decode_recipient(r) for r in rcpt_rows]
    try:
        queue_state = QueueState(state)
    except ValueError as exc:
        raise CorruptRecord(f"unknown state {state!r}") from exc
    envelope = envelope_from_json(envelope_json, tuple(r.spec for r in recipients))
    return QueuedMessage(
        id=message_id,
        envelope=envelope,
        state=queue_state,
        recipients=recipients,
        size=size,
        warned=bool(warned),
    )


def load_message(conn: Db, message_id: str) -> QueuedMessage | None:
    row = conn.execute(
        "SELECT state, size, envelope, warned FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    if row is None:
        return None
    rcpts = conn.execute(
        f"SELECT {RCPT_COLUMNS} FROM recipients WHERE message_id = ? ORDER BY idx",
        (message_id,),
    ).fetchall()
    return decode_message(message_id, row[0], row[1], row[2], rcpts, row[3])


def delete_message(conn: Db, message_id: str) -> bool:
    conn.execute("DELETE FROM recipients WHERE message_id = ?", (message_id,))
    conn.execute("DELETE FROM message_content WHERE message_id = ?", (message_id,))
    return conn.execute("DELETE FROM messages WHERE id = ?", (message_id,)).rowcount > 0


def set_state(conn: Db, message_id: str, state: QueueState) -> None:
    conn.execute("UPDATE messages SET state = ? WHERE id = ?", (state.value, message_id))


def settle_state(conn: Db, message_id: str) -> bool:
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


def due_recipients(message: QueuedMessage, now: float) -> list[QueuedRecipient]:
    """What a claim at ``now`` hands out of ``message``: recipients still pending (new,
    or in flight when the process died) and deferred ones whose retry time has come."""
    return [
        r
        for r in message.recipients
        if r.status is RecipientStatus.PENDING
        or (r.status is RecipientStatus.DEFERRED and r.next_attempt <= now)
    ]


def claim_job(now: float, limit: int) -> Any:
    def job(conn: Db) -> list[QueuedMessage]:
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
            batch = due_recipients(message, now)
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


_FINAL_OUTCOMES = (RecipientStatus.DELIVERED, RecipientStatus.BOUNCED, RecipientStatus.DEFERRED)


def check_outcomes(outcomes: Sequence[Outcome]) -> None:
    """``ValueError`` unless every outcome is final or deferred with a retry time."""
    for o in outcomes:
        if o.status not in _FINAL_OUTCOMES:
            raise ValueError(f"outcome status must be delivered/deferred/bounced: {o}")
        if o.status is RecipientStatus.DEFERRED and o.next_attempt is None:
            raise ValueError(f"a deferred outcome needs next_attempt: {o}")


def record_job(outcomes: Sequence[Outcome]) -> Any:
    rows = outcome_rows(outcomes)
    touched = list(dict.fromkeys(o.message_id for o in outcomes))

    def job(conn: Db) -> list[str]:
        conn.executemany(APPLY_OUTCOME, rows)
        return [m for m in touched if settle_state(conn, m)]

    return job


def abandon_job(message_ids: Sequence[str], next_attempt: float) -> Any:
    """Give claimed (ACTIVE) messages back without outcomes: their recipients in flight
    are deferred until ``next_attempt`` (attempts unchanged), the messages filed as
    DEFERRED; a message held or deleted meanwhile is left as it is."""
    ids = list(dict.fromkeys(message_ids))

    def job(conn: Db) -> None:
        for chunk in chunks(ids):
            marks = qmarks(chunk)
            conn.execute(
                "UPDATE recipients SET status = ?, next_attempt = ?"
                f" WHERE message_id IN ({marks}) AND status = ?",
                (
                    RecipientStatus.DEFERRED.value,
                    next_attempt,
                    *chunk,
                    RecipientStatus.PENDING.value,
                ),
            )
            conn.execute(
                f"UPDATE messages SET state = ?, next_attempt = ? WHERE id IN ({marks})"
                " AND state = ?",
                (QueueState.DEFERRED.value, next_attempt, *chunk, QueueState.ACTIVE.value),
            )

    return job


def recover_job(conn: Db) -> int:
    return conn.execute(
        "UPDATE messages SET state = ? WHERE state = ?",
        (QueueState.INCOMING.value, QueueState.ACTIVE.value),
    ).rowcount


def mark_warned_job(message_ids: Sequence[str]) -> Any:
    ids = list(dict.fromkeys(message_ids))

    def job(conn: Db) -> None:
        for chunk in chunks(ids):
            conn.execute(f"UPDATE messages SET warned = 1 WHERE id IN ({qmarks(chunk)})", chunk)

    return job


_CHUNK = 500


def chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    """``ids`` in slices that keep every statement within the bound-parameter limit."""
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start : start + _CHUNK])


def qmarks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))
