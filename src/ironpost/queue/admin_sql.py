"""The administrative SQL of the queue: selections and bulk operations (``ironpost queue``
delete, hold, release, requeue, flush), the qshape counts and the mailq listing.

Plain functions of a :class:`~ironpost.queue.sql.Db` connection, shared by both engines
through :class:`ironpost.queue.admin.SqlAdmin`, which runs each in one transaction.

Invariants: selection and bulk operations work on explicit id lists in chunks
(:func:`~ironpost.queue.records.chunks`), so every statement stays within the engine's
bound-parameter limit and one transaction (one fsync) covers a whole "ALL" or
"--sender" operation; nothing here moves an ACTIVE message out of ACTIVE except to HOLD
(which ``record`` respects), so no recipient is ever handed out twice at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ironpost.queue.model import QueueState, RecipientStatus, address_domain, normalize_sender
from ironpost.queue.records import chunks, qmarks
from ironpost.queue.sql import Db

_LIVE = (RecipientStatus.PENDING.value, RecipientStatus.DEFERRED.value)
_FLUSHABLE = (QueueState.DEFERRED.value, QueueState.ACTIVE.value)
_HOLDABLE = (QueueState.INCOMING.value, QueueState.ACTIVE.value, QueueState.DEFERRED.value)
_REQUEUEABLE = (QueueState.HOLD.value, QueueState.INCOMING.value, QueueState.DEFERRED.value)


def select_ids(
    conn: Db,
    *,
    sender: str | None = None,
    domain: str | None = None,
    states: Sequence[QueueState] | None = None,
) -> list[str]:
    """Ids (in arrival order) of the messages matching every given criterion: the sender
    (exact, case-insensitive; "" is the null sender), a recipient still to be delivered in
    ``domain`` (exact, case-insensitive), the state."""
    sql = "SELECT id, sender FROM messages"
    where: list[str] = []
    params: list[object] = []
    if states is not None:
        where.append(f"state IN ({qmarks(states)})")
        params.extend(s.value for s in states)
    if domain is not None:
        where.append(
            "id IN (SELECT message_id FROM recipients"
            f" WHERE domain = ? AND status IN ({qmarks(_LIVE)}))"
        )
        params.extend((address_domain(domain), *_LIVE))
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = conn.execute(sql + " ORDER BY id", params).fetchall()
    if sender is None:
        return [r[0] for r in rows]
    # Compared in Python: SQL LOWER() folds ASCII only, and SMTPUTF8 senders exist.
    wanted = normalize_sender(sender).lower()
    return [r[0] for r in rows if str(r[1]).lower() == wanted]


def delete_ids(conn: Db, ids: Sequence[str]) -> int:
    count = 0
    for chunk in chunks(ids):
        marks = qmarks(chunk)
        conn.execute(f"DELETE FROM recipients WHERE message_id IN ({marks})", chunk)
        conn.execute(f"DELETE FROM message_content WHERE message_id IN ({marks})", chunk)
        count += conn.execute(f"DELETE FROM messages WHERE id IN ({marks})", chunk).rowcount
    return count


def _states_of(conn: Db, chunk: Sequence[str]) -> list[tuple[str, str]]:
    # By primary key only, then filtered in Python: a "state IN (...)" next to "id IN (...)"
    # can lead the planner to the (state, next_attempt) index and a scan per chunk.
    return [
        (str(r[0]), str(r[1]))
        for r in conn.execute(
            f"SELECT id, state FROM messages WHERE id IN ({qmarks(chunk)})", chunk
        )
    ]


def move_ids(conn: Db, ids: Sequence[str], to: QueueState, sources: Sequence[str]) -> int:
    """Set the state of those of ``ids`` currently in one of ``sources``; return how many."""
    count = 0
    for chunk in chunks(ids):
        moving = [i for i, state in _states_of(conn, chunk) if state in sources]
        if moving:
            conn.execute(
                f"UPDATE messages SET state = ? WHERE id IN ({qmarks(moving)})",
                (to.value, *moving),
            )
            count += len(moving)
    return count


def hold_ids(conn: Db, ids: Sequence[str]) -> int:
    return move_ids(conn, ids, QueueState.HOLD, _HOLDABLE)


def release_ids(conn: Db, ids: Sequence[str]) -> int:
    return move_ids(conn, ids, QueueState.INCOMING, (QueueState.HOLD.value,))


def requeue_ids(conn: Db, ids: Sequence[str], now: float) -> int:
    """``postsuper -r``: HOLD, INCOMING and DEFERRED messages go back to INCOMING with
    every undelivered recipient PENDING and due now (so a held message is released, as
    Postfix's requeue through the maildrop releases it). An ACTIVE message is being
    delivered; moving it would hand its recipients out twice, so only its deferred
    recipients are made due now, and it comes back as soon as its attempt ends. Final
    recipients stay final; attempts and the warned flag are kept."""
    count = 0
    for chunk in chunks(ids):
        states = _states_of(conn, chunk)
        movable = [i for i, state in states if state in _REQUEUEABLE]
        active = [i for i, state in states if state == QueueState.ACTIVE.value]
        if movable:
            moved = qmarks(movable)
            conn.execute(
                f"UPDATE recipients SET status = ?, next_attempt = ?"
                f" WHERE message_id IN ({moved}) AND status = ?",
                (RecipientStatus.PENDING.value, now, *movable, RecipientStatus.DEFERRED.value),
            )
            conn.execute(
                f"UPDATE messages SET state = ?, next_attempt = ? WHERE id IN ({moved})",
                (QueueState.INCOMING.value, now, *movable),
            )
        if active:
            conn.execute(
                f"UPDATE recipients SET next_attempt = ? WHERE message_id IN ({qmarks(active)})"
                " AND status = ? AND next_attempt > ?",
                (now, *active, RecipientStatus.DEFERRED.value, now),
            )
        count += len(movable) + len(active)
    return count


def flush_due(conn: Db, now: float, domain: str | None = None) -> int:
    """``postqueue -f`` (or ``-s domain``): make the deferred recipients (those in
    ``domain`` only, if given) of DEFERRED and ACTIVE messages due at ``now``; return how
    many messages have such recipients. HOLD and CORRUPT are left alone. A DEFERRED
    message's ``next_attempt`` stays the earliest of its deferred recipients'."""
    rcpt_where = "status = ?"
    rcpt_params: list[object] = [RecipientStatus.DEFERRED.value]
    if domain is not None:
        rcpt_where += " AND domain = ?"
        rcpt_params.append(address_domain(domain))
    states = qmarks(_FLUSHABLE)
    row = conn.execute(
        f"SELECT COUNT(*) FROM messages WHERE state IN ({states})"
        f" AND id IN (SELECT message_id FROM recipients WHERE {rcpt_where})",
        (*_FLUSHABLE, *rcpt_params),
    ).fetchone()
    conn.execute(
        f"UPDATE recipients SET next_attempt = ? WHERE {rcpt_where} AND next_attempt > ?"
        f" AND message_id IN (SELECT id FROM messages WHERE state IN ({states}))",
        (now, *rcpt_params, now, *_FLUSHABLE),
    )
    conn.execute(
        "UPDATE messages SET next_attempt = ? WHERE state = ? AND next_attempt > ?"
        f" AND id IN (SELECT message_id FROM recipients WHERE {rcpt_where})",
        (now, QueueState.DEFERRED.value, now, *rcpt_params),
    )
    return int(row[0])


def shape_rows(
    conn: Db,
    *,
    now: float,
    edges: Sequence[float],
    states: Sequence[QueueState],
    by_sender: bool = False,
) -> list[tuple[str, int, int]]:
    """``(key, bucket, count)`` rows for qshape: ``key`` is the recipient domain (one count
    per recipient still to be delivered) or, with ``by_sender``, the raw sender (one count
    per message). Bucket ``i`` holds ages below ``edges[i]`` seconds (and at least the
    previous edge); bucket ``len(edges)`` the rest. One GROUP BY query: the database does
    the counting, whatever the size of the queue."""
    if not states:
        return []
    case = " ".join(f"WHEN m.arrival > ? THEN {i}" for i in range(len(edges)))
    bucket = f"CASE {case} ELSE {len(edges)} END" if edges else "0"
    params: list[object] = [now - e for e in edges]
    # The state is grouped on, not filtered in WHERE: a state condition leads the planner
    # to the (state, next_attempt) index and a random walk over the table, while without
    # it the query is one sequential scan with primary-key lookups (3x faster at 100k).
    if by_sender:
        sql = f"SELECT m.sender, {bucket}, m.state, COUNT(*) FROM messages m GROUP BY 1, 2, 3"
    else:
        sql = (
            f"SELECT r.domain, {bucket}, m.state, COUNT(*) FROM recipients r"
            " JOIN messages m ON m.id = r.message_id"
            f" WHERE r.status IN ({qmarks(_LIVE)}) GROUP BY 1, 2, 3"
        )
        params.extend(_LIVE)
    wanted = {s.value for s in states}
    merged: dict[tuple[str, int], int] = {}
    for key, b, state, count in conn.execute(sql, params):
        if state in wanted:
            merged[(str(key), int(b))] = merged.get((str(key), int(b)), 0) + int(count)
    return [(k, b, c) for (k, b), c in merged.items()]


# -- the mailq listing (read only) ------------------------------------------------------

# (message id, state, size, arrival, sender, address, reason): one row per recipient still
# to be delivered, in queue-id then recipient order; the reason is the last reply of a
# DEFERRED recipient (None for a PENDING one), which is all mailq shows of its status.
ListingRow = tuple[str, str, int, float, str, str | None, str | None]

# Only the columns mailq prints, never the envelope JSON: decoding 100,000 envelopes was
# most of the listing's time. The order is the recipients primary key's, so the plan is
# one index scan with a primary-key lookup per row and no sort. CORRUPT is excluded with
# "!=", which no index serves: "state IN (...)" would lead the planner to the
# (state, next_attempt) index and a sort of the whole result.
_LISTING_SQL = (
    "SELECT r.message_id, m.state, m.size, m.arrival, m.sender, r.address,"
    " CASE WHEN r.status = ? THEN r.last_reply END"
    " FROM recipients r JOIN messages m ON m.id = r.message_id"
    f" WHERE r.status IN ({qmarks(_LIVE)}) AND m.state != ?"
    " ORDER BY r.message_id, r.idx"
)


def listing_rows(conn: Db) -> Iterable[ListingRow]:
    """The mailq listing's rows, streamed from the database (a cursor: consume it inside
    the read transaction that opened it). A message appears only through its live
    recipients; by the store's invariants every message has one (a message whose
    recipients are all final is deleted)."""
    cursor: Iterable[ListingRow] = conn.execute(
        _LISTING_SQL, (RecipientStatus.DEFERRED.value, *_LIVE, QueueState.CORRUPT.value)
    )
    return cursor


def has_id_longer_than(conn: Db, length: int) -> bool:
    """Whether any listed (not CORRUPT) message has an id longer than ``length``."""
    row = conn.execute(
        "SELECT 1 FROM messages WHERE LENGTH(id) > ? AND state != ? LIMIT 1",
        (length, QueueState.CORRUPT.value),
    ).fetchone()
    return row is not None
