"""Per-destination concurrency across a cluster: PostgreSQL session advisory locks.

Owns :class:`ClusterGate`. The queue manager's own limiter (slow start, dead marks,
``<transport>_destination_concurrency_limit``) counts this node's deliveries; with a
PostgreSQL queue several nodes deliver to one destination, so each delivery also holds
one of the destination's ``limit`` cluster slots. Slot ``i`` of destination ``d`` is the
advisory lock ``(crc32(d), i)`` taken with ``pg_try_advisory_lock`` on this node's gate
connection: nothing is written, and a node that dies (or loses its connection) frees its
slots at once, because PostgreSQL drops a session's locks with the session.

Invariants:
- at most ``limit`` deliveries to one destination hold a slot cluster-wide, for as long as
  the gate connections stay up (two destinations whose crc32 collide share their slots:
  stricter, never looser);
- the gate never blocks delivery on the database: when PostgreSQL is unreachable,
  :meth:`acquire` answers :data:`OPEN` and the per-node limits alone apply (logged once,
  and once again when the gate is back);
- a slot is released on the connection that took it; slots of a connection that was
  lost were released by PostgreSQL already, and are not released twice.

The gate needs session-level locks, so its connection must not go through a
transaction-pooling proxy (PgBouncer in transaction mode); session mode is fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CONNECT_TIMEOUT = 5
# A try-lock of each slot in order until one succeeds: the Limit stops the scan at the
# first row that passes the filter, so at most one lock is taken per call. Advisory locks
# are re-entrant within a session, so the slots this node holds already are skipped
# first (CASE fixes the order of evaluation, which AND does not).
_TRY = (
    "SELECT s FROM generate_series(0, %s::int4 - 1) AS s"
    " WHERE CASE WHEN s = ANY(%s::int4[]) THEN false"
    " ELSE pg_try_advisory_lock(%s::int4, s) END LIMIT 1"
)


@dataclass(frozen=True, slots=True)
class Slot:
    key: int
    index: int
    generation: int  # the gate connection that holds it


#: What :meth:`ClusterGate.acquire` answers when the database cannot be asked.
OPEN = Slot(0, -1, -1)


def destination_key(destination: str) -> int:
    """The first int4 of the destination's advisory locks."""
    return zlib.crc32(destination.encode("utf-8", "surrogateescape")) - 2**31


class ClusterGate:
    """Cluster-wide delivery slots per destination, through one connection per node."""

    def __init__(self, url: str, *, log: Callable[[str], None] | None = None) -> None:
        self._url = url
        self._log = log
        self._conn: Any = None  # psycopg.AsyncConnection, imported lazily
        self._generation = 0
        self._lock = asyncio.Lock()
        self._down = False
        self._releasing: set[asyncio.Task[None]] = set()
        self._mine: dict[int, set[int]] = {}  # key -> slots held on this connection

    async def _connection(self) -> Any:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            import psycopg

            self._conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
            )
            self._generation += 1
            self._mine.clear()  # the old connection's locks went with it
        return self._conn

    def _note(self, down: bool, why: object = "") -> None:
        if down != self._down and self._log is not None:
            if down:
                self._log(
                    f"warning: cluster destination gate unavailable ({why}): per-node limits only"
                )
            else:
                self._log("cluster destination gate available again")
        self._down = down

    async def acquire(self, destination: str, limit: int) -> Slot | None:
        """A free slot of ``destination`` (of ``limit``), None when all are taken, or
        :data:`OPEN` when the database cannot be asked."""
        import psycopg

        key = destination_key(destination)
        async with self._lock:
            try:
                conn = await self._connection()
                mine = self._mine.setdefault(key, set())
                cursor = await conn.execute(_TRY, (limit, list(mine), key))
                row = await cursor.fetchone()
            except (psycopg.Error, OSError) as exc:
                await self._drop()
                self._note(True, exc)
                return OPEN
            self._note(False)
            if row is None:
                return None
            mine.add(int(row[0]))
            return Slot(key, int(row[0]), self._generation)

    @property
    def held(self) -> int:
        """Slots this node holds now (for tests and statistics)."""
        return sum(len(v) for v in self._mine.values())

    def release(self, slot: Slot) -> None:
        """Give the slot back (in the background: a delivery's end never waits on it)."""
        if slot.index < 0:
            return
        task = asyncio.get_running_loop().create_task(self._release(slot))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release(self, slot: Slot) -> None:
        import psycopg

        async with self._lock:
            if slot.generation != self._generation or self._conn is None:
                return  # that connection is gone, and its locks with it
            try:
                await self._conn.execute(
                    "SELECT pg_advisory_unlock(%s::int4, %s::int4)", (slot.key, slot.index)
                )
            except (psycopg.Error, OSError):
                await self._drop()
                return
            mine = self._mine.get(slot.key)
            if mine is not None:
                mine.discard(slot.index)
                if not mine:
                    del self._mine[slot.key]

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._mine.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)
        async with self._lock:
            await self._drop()
