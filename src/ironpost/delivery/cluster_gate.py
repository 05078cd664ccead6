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
- a slot is unlocked on the connection that took it; slots of a connection that was
  lost were released by PostgreSQL already, and are not released twice;
- a released slot stays locked by this node for at most ``keep`` seconds (0.5), for its
  next delivery to the destination: under load, no round trip per delivery.

The gate needs session-level locks, so its connection must not go through a
transaction-pooling proxy (PgBouncer in transaction mode); session mode is fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CONNECT_TIMEOUT = 5
#: How long a released slot stays locked for this node's next delivery (see ClusterGate).
KEEP_SECONDS = 0.5
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
    """Cluster-wide delivery slots per destination, through one connection per node.

    A released slot is kept for ``keep`` seconds before it is unlocked: under a steady
    load the next delivery to the same destination takes it back without a round trip
    (two per delivery otherwise, on one connection). The price is that another node may
    wait up to ``keep`` for a slot this node is not using."""

    def __init__(
        self,
        url: str,
        *,
        log: Callable[[str], None] | None = None,
        keep: float = KEEP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._log = log
        self._keep = keep
        self._clock = clock
        self._conn: Any = None  # psycopg.AsyncConnection, imported lazily
        self._generation = 0
        self._lock = asyncio.Lock()
        self._down = False
        self._mine: dict[int, set[int]] = {}  # key -> slots locked on this connection
        self._idle: dict[tuple[int, int], float] = {}  # locked, unused: since when
        self._sweeper: asyncio.Task[None] | None = None

    async def _connection(self) -> Any:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            import psycopg

            self._forget_locks()  # the old connection's locks went with it
            self._conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
            )
            self._generation += 1
        return self._conn

    def _forget_locks(self) -> None:
        self._mine.clear()
        self._idle.clear()

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
        for k, index in self._idle:
            if k == key and index < limit:
                del self._idle[(k, index)]
                return Slot(key, index, self._generation)
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
        """Slots this node has locked now, in use or kept (for tests and statistics)."""
        return sum(len(v) for v in self._mine.values())

    def release(self, slot: Slot) -> None:
        """Give the slot back: kept for reuse, unlocked ``keep`` seconds later if unused."""
        if slot.index < 0 or slot.generation != self._generation:
            return  # the gate was open, or that connection (and its locks) is gone
        self._idle[(slot.key, slot.index)] = self._clock()
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Unlock the slots kept longer than ``keep``, until none is kept."""
        while self._idle:
            await asyncio.sleep(self._keep / 2)
            cutoff = self._clock() - self._keep
            stale = [slot for slot, since in self._idle.items() if since <= cutoff]
            if stale:
                await self._unlock(stale)

    async def _unlock(self, slots: list[tuple[int, int]]) -> None:
        import psycopg

        async with self._lock:
            if self._conn is None:
                return
            for key, index in slots:
                if self._idle.pop((key, index), None) is None:
                    continue  # taken again meanwhile
                try:
                    await self._conn.execute(
                        "SELECT pg_advisory_unlock(%s::int4, %s::int4)", (key, index)
                    )
                except (psycopg.Error, OSError):
                    await self._drop()
                    return
                mine = self._mine.get(key)
                if mine is not None:
                    mine.discard(index)
                    if not mine:
                        del self._mine[key]

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._forget_locks()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        async with self._lock:
            await self._drop()
