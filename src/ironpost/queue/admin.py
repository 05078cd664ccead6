"""The administrative operations of a queue engine, written once for both engines.

Owns :class:`SqlAdmin`, the synchronous half of :class:`~ironpost.queue.store.QueueStore`
(listing, selection, hold, release, requeue, flush, delete, statistics), built on four
primitives each engine provides: a read snapshot, a write transaction, a deletion (which
the SQLite engine follows with unlinking body files) and a one-statement write. The SQL
is :mod:`ironpost.queue.admin_sql`', so SQLite and PostgreSQL answer the same way.

Invariants: each bulk operation (``ALL``, by sender, by domain) is one transaction; a
listing comes from one snapshot; nothing here takes an ACTIVE message out of ACTIVE
except to HOLD (see :mod:`ironpost.queue.records`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from ironpost.queue.admin_sql import (
    ListingRow,
    delete_ids,
    flush_due,
    has_id_longer_than,
    hold_ids,
    listing_rows,
    release_ids,
    requeue_ids,
    select_ids,
    shape_rows,
)
from ironpost.queue.model import CorruptRecord, QueuedMessage, QueueState
from ironpost.queue.records import (
    RCPT_COLUMNS,
    SELECT_CONTENT,
    decode_message,
    delete_message,
    load_message,
)
from ironpost.queue.sql import Db

T = TypeVar("T")


class SqlAdmin:
    """The admin operations; subclasses supply the primitives below."""

    def _admin_read(self, work: Callable[[Db], T]) -> T:
        """Run ``work`` in one read transaction (one snapshot)."""
        raise NotImplementedError

    def _admin_transaction(self, work: Callable[[Db], T]) -> T:
        """Run ``work`` in one write transaction."""
        raise NotImplementedError

    def _admin_delete(self, work: Callable[[Db], T], ids: Sequence[str] | None) -> T:
        """Run the deletion ``work`` of messages ``ids`` (None: all) in one transaction."""
        raise NotImplementedError

    def _admin_write(self, sql: str, params: Sequence[Any]) -> int:
        """Run one statement in its own transaction; return its row count."""
        raise NotImplementedError

    def _body_of(self, message_id: str, row: Sequence[Any]) -> bytes:
        """The message bytes from its ``SELECT_CONTENT`` row."""
        raise NotImplementedError

    def select(
        self,
        *,
        sender: str | None = None,
        domain: str | None = None,
        states: Sequence[QueueState] | None = None,
    ) -> list[str]:
        """Ids of the messages from ``sender`` (exact, case-insensitive; "" or "<>" is the
        null sender) and/or with a recipient still to deliver in ``domain`` (exact,
        case-insensitive) and/or in one of ``states``; no criterion means every message."""
        return self._admin_read(
            lambda conn: select_ids(conn, sender=sender, domain=domain, states=states)
        )

    def delete_messages(self, message_ids: Sequence[str]) -> int:
        """Delete these messages (any state) in one transaction; return how many existed."""
        return self._admin_delete(lambda conn: delete_ids(conn, message_ids), message_ids)

    def hold_messages(self, message_ids: Sequence[str]) -> int:
        """Put on hold those not already held (nor CORRUPT); return how many moved."""
        return self._admin_transaction(lambda conn: hold_ids(conn, message_ids))

    def release_messages(self, message_ids: Sequence[str]) -> int:
        """Return those on hold to INCOMING; return how many moved."""
        return self._admin_transaction(lambda conn: release_ids(conn, message_ids))

    def requeue_messages(self, message_ids: Sequence[str], *, now: float | None = None) -> int:
        """``postsuper -r`` on these messages (see :func:`admin_sql.requeue_ids`)."""
        when = time.time() if now is None else now
        return self._admin_transaction(lambda conn: requeue_ids(conn, message_ids, when))

    def requeue(self, message_id: str, *, now: float | None = None) -> bool:
        return self.requeue_messages([message_id], now=now) > 0

    def flush(self, *, now: float | None = None) -> int:
        """``postqueue -f``: every deferred recipient of a DEFERRED (or ACTIVE) message is
        due now; return the number of such messages. HOLD and CORRUPT are untouched."""
        when = time.time() if now is None else now
        return self._admin_transaction(lambda conn: flush_due(conn, when))

    def flush_domain(self, domain: str, *, now: float | None = None) -> int:
        """``postqueue -s``: as :meth:`flush`, for recipients in ``domain`` only."""
        when = time.time() if now is None else now
        return self._admin_transaction(lambda conn: flush_due(conn, when, domain))

    def shape_rows(
        self,
        *,
        now: float,
        edges: Sequence[float],
        states: Sequence[QueueState],
        by_sender: bool = False,
    ) -> list[tuple[str, int, int]]:
        """qshape's counts, ``(domain or sender, bucket, count)``; see :mod:`queue.shape`."""
        return self._admin_read(
            lambda conn: shape_rows(conn, now=now, edges=edges, states=states, by_sender=by_sender)
        )

    def list_messages(self) -> list[QueuedMessage]:
        """Every decodable message except CORRUPT ones, sorted by id (= arrival)."""

        def read(conn: Db) -> tuple[list[Any], dict[str, list[Sequence[Any]]]]:
            # One read transaction, so messages and recipients are from one snapshot.
            messages = conn.execute(
                "SELECT id, state, size, envelope, warned FROM messages"
                " WHERE state != ? ORDER BY id",
                (QueueState.CORRUPT.value,),
            ).fetchall()
            rcpts: dict[str, list[Sequence[Any]]] = {}
            for row in conn.execute(
                f"SELECT message_id, {RCPT_COLUMNS} FROM recipients ORDER BY message_id, idx"
            ):
                rcpts.setdefault(row[0], []).append(row[1:])
            return messages, rcpts

        messages, rcpts = self._admin_read(read)
        result: list[QueuedMessage] = []
        for message_id, state, size, envelope_json, warned in messages:
            try:
                result.append(
                    decode_message(
                        message_id, state, size, envelope_json, rcpts.get(message_id, ()), warned
                    )
                )
            except CorruptRecord:
                continue
        return result

    def scan_listing(self, consume: Callable[[Iterable[ListingRow]], T]) -> T:
        """``consume`` the mailq listing's rows (:func:`admin_sql.listing_rows`: only the
        columns mailq prints, one row per live recipient, by queue id) as they are read,
        inside one read snapshot; no message is decoded, nothing is held in memory."""
        return self._admin_read(lambda conn: consume(listing_rows(conn)))

    def has_id_longer_than(self, length: int) -> bool:
        """Whether a listed (not CORRUPT) message has an id longer than ``length``."""
        return self._admin_read(lambda conn: has_id_longer_than(conn, length))

    def get(self, message_id: str) -> QueuedMessage | None:
        """The message, or None if absent or undecodable."""

        def read(conn: Db) -> QueuedMessage | None:
            try:
                return load_message(conn, message_id)
            except CorruptRecord:
                return None

        return self._admin_read(read)

    def read_content(self, message_id: str) -> bytes | None:
        """The stored bytes (None if absent); :class:`CorruptRecord` if the body file is
        missing or damaged."""
        row = self._admin_read(lambda conn: conn.execute(SELECT_CONTENT, (message_id,)).fetchone())
        return None if row is None else self._body_of(message_id, row)

    def state_of(self, message_id: str) -> QueueState | str | None:
        """The raw state, CORRUPT included (None if absent)."""
        row = self._admin_read(
            lambda conn: conn.execute(
                "SELECT state FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
        )
        if row is None:
            return None
        try:
            return QueueState(row[0])
        except ValueError:
            return str(row[0])

    def delete(self, message_id: str) -> bool:
        return self._admin_delete(lambda conn: delete_message(conn, message_id), [message_id])

    def delete_all(self) -> int:
        def work(conn: Db) -> int:
            conn.execute("DELETE FROM recipients")
            conn.execute("DELETE FROM message_content")
            return int(conn.execute("DELETE FROM messages").rowcount)

        return self._admin_delete(work, None)

    def hold(self, message_id: str) -> bool:
        return (
            self._admin_write(
                "UPDATE messages SET state = ? WHERE id = ? AND state IN (?, ?, ?, ?)",
                (
                    QueueState.HOLD.value,
                    message_id,
                    QueueState.INCOMING.value,
                    QueueState.ACTIVE.value,
                    QueueState.DEFERRED.value,
                    QueueState.HOLD.value,
                ),
            )
            > 0
        )

    def release(self, message_id: str) -> bool:
        # Back to INCOMING: the next claim takes its pending and due recipients, or files it
        # as DEFERRED until its earliest retry time (Postfix's postsuper -H).
        return (
            self._admin_write(
                "UPDATE messages SET state = ? WHERE id = ? AND state = ?",
                (QueueState.INCOMING.value, message_id, QueueState.HOLD.value),
            )
            > 0
        )

    def stats(self) -> dict[QueueState, int]:
        counts = dict.fromkeys(QueueState, 0)
        rows = self._admin_read(
            lambda conn: conn.execute(
                "SELECT state, COUNT(*) FROM messages GROUP BY state"
            ).fetchall()
        )
        for state, count in rows:
            try:
                counts[QueueState(state)] += count
            except ValueError:
                counts[QueueState.CORRUPT] += count
        return counts
