"""PostgreSQL queue records: the schema and its migrations, and the write jobs that differ
from SQLite's because several nodes share one queue: claiming with leases, fenced
recording, and recovery of one node's own work.

The tables are SQLite's (:mod:`ironpost.queue.records`; ids in the "C" collation so
that ``ORDER BY id`` is arrival order as in SQLite), plus three lease columns on
``messages`` and a ``nodes`` table. Everything else (admin, listing, qshape) is the shared
SQL of :mod:`ironpost.queue.records`.

Leases. ``claim`` takes due messages with ``FOR UPDATE SKIP LOCKED``, so two nodes never
claim one message at once, and stamps each with the claiming node (``lease_owner``), a
fresh ``lease_token`` and ``lease_expires`` on the database's clock. The claiming node
renews its leases while it runs (:func:`renew`). A message whose lease expired (its node
died, or lost the database for longer than a lease) is claimable again by any node, with
the recipients that were in flight: delivery is at-least-once, and the duplicates are
bounded by what the dead node had in flight.

Invariants:
- a recipient is handed out by at most one live lease at a time;
- ``record`` applies a node's outcomes only to messages it still holds with the token
  of its claim (fencing): after its lease was taken over, a slow node's outcomes are
  dropped (counted), and the new holder's attempt decides;
- ``recover`` returns only this node's ACTIVE messages to INCOMING: a restarting node
  never takes another live node's work;
- migrations run in one transaction under an advisory lock, so nodes starting together
  create the schema once, and an interrupted migration leaves the old version intact.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ironpost.queue.model import CorruptRecord, Outcome, QueuedMessage, QueueState, RecipientStatus
from ironpost.queue.records import (
    APPLY_OUTCOME,
    RCPT_COLUMNS,
    QueueSchemaError,
    decode_message,
    due_recipients,
    outcome_rows,
    set_state,
    settle_state,
)
from ironpost.queue.sql import Db

PG_SCHEMA_VERSION = 3
_MIGRATION_LOCK = 0x1F05_7000  # pg_advisory_xact_lock key of schema changes

_QUEUE_TABLES = (
    """CREATE TABLE IF NOT EXISTS messages (
        id TEXT COLLATE "C" PRIMARY KEY,
        state TEXT NOT NULL,
        arrival DOUBLE PRECISION NOT NULL,
        size BIGINT NOT NULL,
        sender TEXT NOT NULL,
        next_attempt DOUBLE PRECISION NOT NULL,
        envelope TEXT NOT NULL,
        warned INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_token BIGINT,
        lease_expires DOUBLE PRECISION
    )""",
    "CREATE INDEX IF NOT EXISTS messages_due ON messages (state, next_attempt)",
    "CREATE INDEX IF NOT EXISTS messages_leases ON messages (lease_owner) WHERE state = 'active'",
    """CREATE TABLE IF NOT EXISTS message_content (
        message_id TEXT COLLATE "C" PRIMARY KEY,
        content BYTEA NOT NULL,
        file_size BIGINT
    )""",
    """CREATE TABLE IF NOT EXISTS recipients (
        message_id TEXT COLLATE "C" NOT NULL,
        idx INTEGER NOT NULL,
        address TEXT NOT NULL,
        original TEXT NOT NULL,
        notify TEXT,
        orcpt TEXT,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt DOUBLE PRECISION NOT NULL,
        last_reply TEXT,
        domain TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (message_id, idx)
    )""",
    """CREATE TABLE IF NOT EXISTS nodes (
        name TEXT PRIMARY KEY,
        started DOUBLE PRECISION NOT NULL,
        heartbeat DOUBLE PRECISION NOT NULL,
        pid INTEGER NOT NULL
    )""",
    "CREATE SEQUENCE IF NOT EXISTS lease_tokens",
)


def _step_queue(db: Db) -> None:
    """0 -> 1: the queue (messages, content, recipients) with leases, and the nodes."""
    for statement in _QUEUE_TABLES:
        db.execute(statement)


def _step_cluster_limits(db: Db) -> None:
    """1 -> 2: the tables of the cluster-wide anvil (:mod:`ironpost.anvil.cluster`)."""
    from ironpost.anvil.cluster import ANVIL_DDL

    for statement in ANVIL_DDL:
        db.execute(statement)


def _step_origin(db: Db) -> None:
    """2 -> 3: the node that accepted each message (NULL for older rows: anyone's)."""
    db.execute("ALTER TABLE messages ADD COLUMN IF NOT EXISTS origin TEXT")


# MIGRATIONS[n] turns a version-n database into version n + 1.
MIGRATIONS: dict[int, Callable[[Db], None]] = {
    0: _step_queue,
    1: _step_cluster_limits,
    2: _step_origin,
}

#: How long new mail is left to the node that accepted it (which delivers it from memory)
#: before any node may claim it: longer than a live node takes to claim what it accepted.
HANDOFF_SECONDS = 10.0

INSERT_MESSAGE = (
    "INSERT INTO messages (id, state, arrival, size, sender, next_attempt, envelope, origin)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def migrate(db: Db, *, target: int = PG_SCHEMA_VERSION) -> int:
    """Bring the database to ``target`` (in the caller's transaction); return the version
    found. :class:`QueueSchemaError` if it is newer than this ironpost."""
    db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    found = 0 if row is None or row[0] is None else int(row[0])
    if found > PG_SCHEMA_VERSION:
        raise QueueSchemaError(
            f"queue schema version {found} is newer than this ironpost ({PG_SCHEMA_VERSION})"
        )
    for version in range(found, target):
        MIGRATIONS[version](db)
    if found < target:
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
    return found


def db_now(db: Db) -> float:
    """The database's clock, which every node's leases are measured on."""
    return float(db.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8").fetchone()[0])


#: How a job hands the writer an action to run once its transaction has committed.
AfterCommit = Callable[[Callable[[], None]], None]


class Leases:
    """This node's claims: the token of each message it holds, and the messages whose
    leases the renewer extends (claimed, not yet settled nor given up after a failed
    record: a message given up keeps its lease only until it expires, and is then
    claimed again, by any node).

    Claims and records run on two writer threads, the renewer on a third, and the event
    loop gives messages up: every read and change of that state holds ``_lock``. A job
    changes it only through ``after`` (once its transaction has committed), so a batch
    that rolls back, or is retried, leaves it as it was."""

    def __init__(self, node: str, lease_seconds: float) -> None:
        self.node = node
        self.lease_seconds = lease_seconds
        self._tokens: dict[str, int] = {}
        self._live: set[str] = set()
        self._lock = threading.Lock()
        self.taken_over = 0  # messages claimed after another node's lease expired
        self.fenced = 0  # outcomes dropped because this node no longer held the lease

    @property
    def tokens(self) -> dict[str, int]:
        with self._lock:
            return dict(self._tokens)

    def live(self) -> list[str]:
        """The messages whose leases are to be renewed now."""
        with self._lock:
            return list(self._live)

    def forget(self, message_ids: Iterable[str]) -> None:
        """Stop renewing these leases and drop their tokens (settled, gone, or given up
        after a failed record)."""
        with self._lock:
            for m in message_ids:
                self._live.discard(m)
                self._tokens.pop(m, None)

    # -- jobs ---------------------------------------------------------------------------

    def claim_job(
        self, now: float, limit: int, after: AfterCommit
    ) -> Callable[[Db], list[QueuedMessage]]:
        """Claim up to ``limit`` messages. Run it in a transaction of its own: its row
        locks (``SKIP LOCKED`` keeps a lock on a row that fails the recheck) must not be
        held while the same transaction waits for another node's, or two nodes deadlock."""

        def job(db: Db) -> list[QueuedMessage]:
            row = db.execute(
                "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8, nextval('lease_tokens')"
            ).fetchone()
            clock, token = float(row[0]), int(row[1])
            # New mail is its accepting node's for HANDOFF_SECONDS (it has the body in
            # memory and was woken by the commit); after that, anyone's.
            fresh = _ids(
                db,
                "SELECT id FROM messages WHERE state = ?"
                " AND (origin = ? OR origin IS NULL OR arrival < ?)"
                " ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED",
                (QueueState.INCOMING.value, self.node, now - HANDOFF_SECONDS, limit),
            )
            due = _ids(
                db,
                "SELECT id FROM messages WHERE state = ? AND next_attempt <= ?"
                " ORDER BY next_attempt, id LIMIT ? FOR UPDATE SKIP LOCKED",
                (QueueState.DEFERRED.value, now, limit),
            )
            orphans = _ids(
                db,
                "SELECT id FROM messages WHERE state = ? AND lease_expires < ?"
                " ORDER BY lease_expires LIMIT ? FOR UPDATE SKIP LOCKED",
                (QueueState.ACTIVE.value, clock, limit),
            )
            # Alternate new and retried mail, as Postfix's qmgr does, so neither starves;
            # a dead node's work goes first: it has waited a lease already.
            order: list[str] = list(orphans)
            for i in range(max(len(fresh), len(due))):
                order.extend(q[i] for q in (fresh, due) if i < len(q))
            expires = clock + self.lease_seconds
            claimed = self._claim_many(db, order[:limit], now)
            if claimed:
                db.executemany(
                    "UPDATE messages SET state = ?, lease_owner = ?, lease_token = ?,"
                    " lease_expires = ? WHERE id = ?",
                    [(QueueState.ACTIVE.value, self.node, token, expires, m.id) for m in claimed],
                )
            ids = [m.id for m in claimed]
            taken = len(set(orphans).intersection(ids))

            def hold() -> None:
                with self._lock:
                    self._tokens.update(dict.fromkeys(ids, token))
                    self._live.update(ids)
                    self.taken_over += taken

            after(hold)
            return claimed

        return job

    @staticmethod
    def _claim_many(db: Db, message_ids: Sequence[str], now: float) -> list[QueuedMessage]:
        """Load the messages (two queries for all, not two per message), keep each one's
        due recipients, and mark those PENDING; a record that does not decode moves its
        message to CORRUPT, one with nothing due is settled (e.g. released early)."""
        if not message_ids:
            return []
        marks = _marks(message_ids)
        rows = db.execute(
            f"SELECT id, state, size, envelope, warned FROM messages WHERE id IN ({marks})",
            message_ids,
        ).fetchall()
        rcpts: dict[str, list[Sequence[Any]]] = {}
        for row in db.execute(
            f"SELECT message_id, {RCPT_COLUMNS} FROM recipients WHERE message_id IN ({marks})"
            " ORDER BY message_id, idx",
            message_ids,
        ):
            rcpts.setdefault(row[0], []).append(row[1:])
        by_id = {r[0]: r for r in rows}
        claimed: list[QueuedMessage] = []
        pending: list[tuple[str, str, int]] = []
        for message_id in message_ids:
            row = by_id.get(message_id)
            if row is None:
                continue
            try:
                message = decode_message(
                    message_id, row[1], row[2], row[3], rcpts.get(message_id, ()), row[4]
                )
            except CorruptRecord:
                set_state(db, message_id, QueueState.CORRUPT)
                continue
            batch = due_recipients(message, now)
            if not batch:  # e.g. released from hold before its retry time
                settle_state(db, message_id)
                continue
            for r in batch:
                r.status = RecipientStatus.PENDING
                pending.append((RecipientStatus.PENDING.value, message_id, r.index))
            message.state = QueueState.ACTIVE
            message.recipients = batch
            claimed.append(message)
        if pending:
            db.executemany(
                "UPDATE recipients SET status = ? WHERE message_id = ? AND idx = ?", pending
            )
        return claimed

    def record_job(
        self, outcomes: Sequence[Outcome], after: AfterCommit
    ) -> Callable[[Db], list[str]]:
        touched = sorted(dict.fromkeys(o.message_id for o in outcomes))

        def job(db: Db) -> list[str]:
            # Locked in id order, so two records of the same messages (a takeover race)
            # cannot lock them in opposite orders.
            rows = db.execute(
                "SELECT id, state, lease_owner, lease_token FROM messages"
                f" WHERE id IN ({_marks(touched)}) ORDER BY id FOR UPDATE",
                touched,
            ).fetchall()
            with self._lock:  # only the touched messages' tokens, not a copy of all
                tokens = {m: self._tokens.get(m) for m in touched}
            states = {
                m: state
                for m, state, owner, token in rows
                if owner == self.node and token is not None and token == tokens.get(m)
            }
            kept = [o for o in outcomes if o.message_id in states]
            present = {r[0] for r in rows}
            fenced = sum(1 for o in outcomes if o.message_id in present - states.keys())
            if kept:
                db.executemany(APPLY_OUTCOME, outcome_rows(kept))
            removed, in_flight = settle_many(db, states)

            def settle() -> None:
                self.forget([m for m in touched if m not in in_flight])
                with self._lock:
                    self.fenced += fenced

            after(settle)
            return removed

        return job

    def recover_job(self, after: AfterCommit) -> Callable[[Db], int]:
        """This node's ACTIVE messages back to INCOMING (its previous life's work), and
        the node registered as alive."""

        def job(db: Db) -> int:
            clock = db_now(db)
            db.execute(
                "INSERT INTO nodes (name, started, heartbeat, pid) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET started = EXCLUDED.started,"
                " heartbeat = EXCLUDED.heartbeat, pid = EXCLUDED.pid",
                (self.node, clock, clock, os.getpid()),
            )
            count = db.execute(
                "UPDATE messages SET state = ?, lease_owner = NULL, lease_token = NULL,"
                " lease_expires = NULL WHERE state = ? AND lease_owner = ?",
                (QueueState.INCOMING.value, QueueState.ACTIVE.value, self.node),
            ).rowcount

            def clear() -> None:
                with self._lock:
                    self._tokens.clear()
                    self._live.clear()

            after(clear)
            return int(count)

        return job


def settle_many(db: Db, states: Mapping[str, str]) -> tuple[list[str], set[str]]:
    """:func:`~ironpost.queue.records.settle_state` for many messages at once (their
    current states given, their rows locked): remove those whose recipients are all
    final, file as DEFERRED those left with deferred recipients only (unless held), and
    release the lease of every message with no recipient in flight. Returns the removed
    ids and those with recipients still in flight (they keep their lease)."""
    ids = sorted(states)
    if not ids:
        return [], set()
    live: dict[str, list[Any]] = {m: [0, 0, None] for m in ids}  # pending, deferred, earliest
    for m, status, count, first in db.execute(
        "SELECT message_id, status, COUNT(*), MIN(next_attempt) FROM recipients"
        f" WHERE message_id IN ({_marks(ids)}) AND status IN (?, ?) GROUP BY message_id, status",
        (*ids, RecipientStatus.PENDING.value, RecipientStatus.DEFERRED.value),
    ):
        if status == RecipientStatus.PENDING.value:
            live[m][0] = int(count)
        else:
            live[m][1], live[m][2] = int(count), first
    removed = [m for m in ids if not live[m][0] and not live[m][1]]
    frozen = (QueueState.HOLD.value, QueueState.CORRUPT.value)
    deferred = [
        (QueueState.DEFERRED.value, live[m][2], m)
        for m in ids
        if not live[m][0] and live[m][1] and states[m] not in frozen
    ]
    in_flight = {m for m in ids if live[m][0]}
    if removed:
        marks = _marks(removed)
        db.execute(f"DELETE FROM recipients WHERE message_id IN ({marks})", removed)
        db.execute(f"DELETE FROM message_content WHERE message_id IN ({marks})", removed)
        db.execute(f"DELETE FROM messages WHERE id IN ({marks})", removed)
    if deferred:
        db.executemany("UPDATE messages SET state = ?, next_attempt = ? WHERE id = ?", deferred)
    idle = [m for m in ids if m not in in_flight and m not in removed]
    if idle:
        db.execute(
            "UPDATE messages SET lease_owner = NULL, lease_token = NULL, lease_expires = NULL"
            f" WHERE id IN ({_marks(idle)})",
            idle,
        )
    return removed, in_flight


def renew(db: Db, node: str, lease_seconds: float, message_ids: Sequence[str]) -> int:
    """Extend the leases ``node`` holds on ``message_ids`` (those it is still working on)
    and beat its heart; return the leases renewed."""
    clock = db_now(db)
    db.execute("UPDATE nodes SET heartbeat = ? WHERE name = ?", (clock, node))
    if not message_ids:
        return 0
    return int(
        db.execute(
            "UPDATE messages SET lease_expires = ?"
            " WHERE lease_owner = ? AND state = ? AND id = ANY(?)",
            (clock + lease_seconds, node, QueueState.ACTIVE.value, list(message_ids)),
        ).rowcount
    )


def node_rows(db: Db) -> list[tuple[str, float, float, int, int]]:
    """``(name, started, heartbeat, pid, messages held)`` of every node ever seen."""
    return [
        (str(n), float(s), float(h), int(p), int(c))
        for n, s, h, p, c in db.execute(
            "SELECT n.name, n.started, n.heartbeat, n.pid,"
            " (SELECT COUNT(*) FROM messages m WHERE m.state = ? AND m.lease_owner = n.name)"
            " FROM nodes n ORDER BY n.name",
            (QueueState.ACTIVE.value,),
        )
    ]


def _ids(db: Db, sql: str, params: Sequence[Any]) -> list[str]:
    return [str(r[0]) for r in db.execute(sql, params)]


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))
