"""Cluster-wide anvil limits through PostgreSQL (issue #8): a documented approximation.

Owns :class:`ClusterAnvil`, which hands the :class:`~ironpost.anvil.limits.Anvil` its
rate and ban stores (``rate_store`` / ``ban_store`` are a ``RateStoreFactory`` and a
``BanStoreFactory``) and keeps them in step with the other nodes through the tables of
:data:`ANVIL_DDL`, from one background task (:meth:`ClusterAnvil.run`).

How it works. Each node counts its own events exactly, in memory, in an unchanged
:class:`~ironpost.anvil.rates.RateTable` per kind, and notes what it counted per
(key, slot) since its last sync. Every ``sync_interval`` seconds, :meth:`sync_once`
(a) adds those counts to this node's rows of ``anvil_counts`` (one row per kind, unit,
key, slot, node), (b) reads back the sum of the *other* nodes' rows for the slots still
inside each kind's window, and (c) pushes this node's new bans and pulls the others'.
A store then admits an event only if ``local window count + remote count + n <= limit``;
a ban store answers ``max(local ban, remote ban)``. Slots are numbered as in
``RateTable`` (``int(now // slot_width(unit, DEFAULT_SLOTS))``, on the wall clock), so a
remote count folds into the same window; **node clocks must be NTP-synced** (a skew of
``s`` seconds shifts the others' events by ``s`` in our window). Nodes must share their
anvil settings: rows carry their time unit, and counts of another unit are ignored.

The approximation and its bound. The anvil's calls stay in memory and O(1): the database
is only touched by the sync task, so a node does not see the events that another node
admitted after that node's last push before our last pull. With every node syncing every
``I`` seconds, each sync taking at most ``d``, that blind interval is at most
``2 * (I + d)`` long, and for any window of length T::

    events admitted cluster-wide <= limit + sum over the other nodes j of
                                     (events j admitted in the last 2 * (I + d))
                                 <= limit + (nodes - 1) * r * 2 * (I + d)

where ``r`` is the rate one node admits at (proof: take the last event admitted in the
window, on node X at time t; X's check counted every event of the window that X itself
admitted and every event the others pushed before X's last pull; only the blind ones
remain). Each node still admits at most ``limit`` on its own, so the excess never passes
``(nodes - 1) * limit``; a clock skew ``s`` adds the events of ``s`` more seconds. The
slot granularity only errs the safe way (an event counts up to one slot longer).
Measured (``tests/unit/anvil/test_anvil_cluster.py``: 3 nodes, one key, limit 100/60 s,
5 events/s offered per node, I = 1 s): at most 110 per window against a bound of 120,
and 300 without the sync. A failed sync keeps the last remote view, which ages out with
its window. The cost is in the sync task: each sync re-reads the window's rows of every
kind (one aggregate query per kind, bounded below), never the anvil's calls.

Forget. ``forget(key)`` (AUTH failures after a ban or a success) drops the local count,
deletes this node's rows of the key (so the others stop counting them), and records a
floor: remote slots up to the current one no longer count here for that key. Events
other nodes add in that very slot are ignored too (an undercount of at most one slot).
The other nodes' own local counts are not reset: they expire with their window.

Failure. When PostgreSQL is unreachable the stores keep counting locally (the limits are
then per node, as without a cluster), one line is logged through ``log``, pending counts
and bans are kept (bounded) and pushed when the database is back, which is logged too.
Nothing here raises into the anvil's callers; :meth:`sync_once` raises nothing either.
A push whose commit is lost in transit may be counted twice when retried: an overcount.

Bounds. Pending counts, bans and floors hold at most ``max_keys`` keys per store (more
keys between two syncs are counted locally but not shared, and logged); the pull of a
kind reads at most ``max_keys * (DEFAULT_SLOTS + 1)`` rows, the keys with the largest
remote counts first (keys beyond it count locally only: the smallest remote counts are
the ones lost); remote bans are pulled newest first, at most ``max_keys``. Rows whose
slot has left its window, and ended bans, are deleted by every sync.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ironpost.anvil.limits import BanList, BanStore
from ironpost.anvil.rates import DEFAULT_SLOTS, RateStore, RateTable, slot_width

if TYPE_CHECKING:
    import psycopg

ANVIL_DDL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS anvil_counts (
        kind text NOT NULL,
        unit double precision NOT NULL,
        key bytea NOT NULL,
        slot bigint NOT NULL,
        node text NOT NULL,
        n bigint NOT NULL,
        expires double precision NOT NULL,
        PRIMARY KEY (kind, unit, key, slot, node)
    )""",
    "CREATE INDEX IF NOT EXISTS anvil_counts_expires ON anvil_counts (expires)",
    """CREATE TABLE IF NOT EXISTS anvil_bans (
        kind text NOT NULL,
        key bytea NOT NULL,
        until double precision NOT NULL,
        node text NOT NULL,
        updated timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (kind, key)
    )""",
    "CREATE INDEX IF NOT EXISTS anvil_bans_updated ON anvil_bans (kind, updated)",
    "CREATE INDEX IF NOT EXISTS anvil_bans_until ON anvil_bans (until)",
)

_RING = DEFAULT_SLOTS + 1  # slots a RateTable window spans
# Ban pulls re-read this much of the past: a row stamped before our previous pull but
# committed after it would otherwise be missed forever.
_BAN_OVERLAP = timedelta(seconds=30)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_PUSH_COUNT = """INSERT INTO anvil_counts (kind, unit, key, slot, node, n, expires)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (kind, unit, key, slot, node) DO UPDATE SET n = anvil_counts.n + EXCLUDED.n"""
_FORGET = """DELETE FROM anvil_counts
WHERE kind = %s AND unit = %s AND key = %s AND node = %s AND slot <= %s"""
_PULL_COUNTS = """SELECT key, slot, n FROM (
    SELECT key, slot, sum(n)::bigint AS n, sum(sum(n)) OVER (PARTITION BY key) AS total
    FROM anvil_counts
    WHERE kind = %s AND unit = %s AND node <> %s AND slot > %s
    GROUP BY key, slot
) t ORDER BY total DESC, key, slot LIMIT %s"""
_PUSH_BAN = """INSERT INTO anvil_bans (kind, key, until, node) VALUES (%s, %s, %s, %s)
ON CONFLICT (kind, key) DO UPDATE
SET until = EXCLUDED.until, node = EXCLUDED.node, updated = clock_timestamp()
WHERE EXCLUDED.until > anvil_bans.until"""
_PULL_BANS = """SELECT key, until FROM anvil_bans
WHERE kind = %s AND node <> %s AND until > %s AND updated > %s
ORDER BY updated DESC LIMIT %s"""


def _db_key(key: str) -> bytes:
    # bytea, not text: keys hold NUL ("login\0ip") and may hold lone surrogates.
    return key.encode("utf-8", "surrogatepass")


def _str_key(raw: bytes) -> str:
    return bytes(raw).decode("utf-8", "surrogatepass")


class ClusterRates:
    """A :class:`RateStore` whose counts include the other nodes' (as of the last sync)."""

    __slots__ = (
        "_clock",
        "_floors",
        "_local",
        "_remote",
        "_width",
        "forgets",
        "max_keys",
        "name",
        "pending",
        "time_unit",
        "unshared",
    )

    def __init__(
        self, name: str, time_unit: float, max_keys: int, clock: Callable[[], float]
    ) -> None:
        self.name = name
        self.time_unit = float(time_unit)
        self.max_keys = max_keys
        self._clock = clock
        self._local = RateTable(time_unit, max_keys=max_keys)
        self._width = slot_width(self.time_unit, DEFAULT_SLOTS)
        # key -> (slot, n, slot, n, ...): the other nodes' sums, replaced by each pull.
        self._remote: dict[str, tuple[int, ...]] = {}
        self._floors: dict[str, int] = {}  # key -> last remote slot ignored (forget)
        self.pending: dict[str, dict[int, int]] = {}  # counted here, not yet pushed
        self.forgets: dict[str, int] = {}  # forgotten here, own rows not yet deleted
        self.unshared = 0  # events not pushed because ``pending`` was full

    def __len__(self) -> int:
        return len(self._local) + len(self._remote)

    @property
    def evicted(self) -> int:
        return self._local.evicted

    def _slot(self, now: float) -> int:
        return int(now // self._width)

    def remote(self, key: str, now: float) -> int:
        """The other nodes' count for ``key`` in the window ending at ``now``."""
        pairs = self._remote.get(key)
        if pairs is None:
            return 0
        low = self._slot(now) - _RING
        floor = self._floors.get(key)
        if floor is not None and floor > low:
            low = floor
        total = 0
        for i in range(0, len(pairs), 2):
            if pairs[i] > low:
                total += pairs[i + 1]
        return total

    def _note(self, key: str, slot: int, n: int) -> None:
        slots = self.pending.get(key)
        if slots is None:
            if len(self.pending) >= self.max_keys:
                self.unshared += n
                return
            slots = self.pending[key] = {}
        slots[slot] = slots.get(slot, 0) + n

    def count(self, key: str, now: float) -> int:
        return self._local.count(key, now) + self.remote(key, now)

    def admit(self, key: str, now: float, limit: int, n: int = 1) -> int | None:
        remote = self.remote(key, now)
        local = self._local.admit(key, now, limit - remote, n)
        if local is None:
            return None
        self._note(key, self._slot(now), n)
        return local + remote

    def add(self, key: str, now: float, n: int = 1) -> int:
        local = self._local.add(key, now, n)
        self._note(key, self._slot(now), n)
        return local + self.remote(key, now)

    def forget(self, key: str) -> None:
        self._local.forget(key)
        self.pending.pop(key, None)
        slot = self._slot(self._clock())
        floors = self._floors
        if key not in floors and len(floors) >= self.max_keys:
            del floors[next(iter(floors))]  # the oldest floor goes: its slots age out first
        floors[key] = slot
        forgets = self.forgets
        if key in forgets or len(forgets) < self.max_keys:
            forgets[key] = slot

    # --- for the sync task -----------------------------------------------------------

    def take(self) -> tuple[dict[str, dict[int, int]], dict[str, int]]:
        """The pending counts and forgets, handed over to a push (and reset here)."""
        batch = self.pending, self.forgets
        self.pending, self.forgets = {}, {}
        return batch

    def give_back(
        self, batch: tuple[dict[str, dict[int, int]], dict[str, int]], now: float
    ) -> None:
        """Requeue a batch whose push failed, minus what left the window or was
        forgotten since."""
        counts, forgets = batch
        low = self._slot(now) - _RING
        for key, slots in counts.items():
            # Only a forget made since the batch was taken cancels its counts.
            floor = max(self.forgets.get(key, low), low)
            for slot, n in slots.items():
                if slot > floor:
                    self._note(key, slot, n)
        for key, slot in forgets.items():
            if key in self.forgets or len(self.forgets) < self.max_keys:
                self.forgets[key] = max(slot, self.forgets.get(key, slot))

    def low_slot(self, now: float) -> int:
        """Slots up to this one have left the window at ``now``."""
        return self._slot(now) - _RING

    def expires(self, slot: int) -> float:
        """When a slot's row may go: one slot after it left every window (a margin for
        small clock differences between nodes)."""
        return (slot + _RING + 1) * self._width

    def replace_remote(self, rows: list[tuple[bytes, int, int]], now: float) -> None:
        """Install a pull's rows (grouped by key), at most ``max_keys`` keys."""
        remote: dict[str, tuple[int, ...]] = {}
        key_raw: bytes | None = None
        flat: list[int] = []
        for raw, slot, n in rows:
            if raw != key_raw:
                if key_raw is not None:
                    remote[_str_key(key_raw)] = tuple(flat)
                    if len(remote) >= self.max_keys:
                        key_raw = None
                        break
                key_raw, flat = raw, []
            flat += (slot, n)
        if key_raw is not None:
            remote[_str_key(key_raw)] = tuple(flat)
        self._remote = remote
        low = self._slot(now) - _RING
        self._floors = {k: s for k, s in self._floors.items() if s > low}


class ClusterBans:
    """A :class:`BanStore` that also answers the other nodes' bans (as of the last sync)."""

    __slots__ = ("_local", "_remote", "cutoff", "max_keys", "name", "pending", "unshared")

    def __init__(self, name: str, max_keys: int) -> None:
        self.name = name
        self.max_keys = max_keys
        self._local = BanList(max_keys)
        self._remote = BanList(max_keys)
        self.pending: dict[str, float] = {}
        self.unshared = 0
        self.cutoff = _EPOCH  # the next pull reads rows updated after this (DB clock)

    def __len__(self) -> int:
        return len(self._local) + len(self._remote)

    @property
    def evicted(self) -> int:
        return self._local.evicted + self._remote.evicted

    def until(self, key: str, now: float) -> float:
        local = self._local.until(key, now)
        remote = self._remote.until(key, now)
        return local if local >= remote else remote

    def ban(self, key: str, until: float) -> None:
        self._local.ban(key, until)
        pending = self.pending
        if key in pending or len(pending) < self.max_keys:
            pending[key] = until
        else:
            self.unshared += 1

    def take(self) -> dict[str, float]:
        batch, self.pending = self.pending, {}
        return batch

    def give_back(self, batch: dict[str, float], now: float) -> None:
        for key, until in batch.items():
            if until > now and key not in self.pending:
                if len(self.pending) >= self.max_keys:
                    self.unshared += 1
                    continue
                self.pending[key] = until

    def merge_remote(self, rows: list[tuple[bytes, float]]) -> None:
        # Rows come newest first; the oldest go in first so BanList keeps its ending order.
        remote = self._remote
        for raw, until in reversed(rows):
            remote.ban(_str_key(raw), until)


class ClusterAnvil:
    """The rate and ban stores of one node, synced through PostgreSQL (see module doc).

    ``clock`` must be the anvil's clock (``time.time``, the same on every node): ``forget``
    and the sync read it to number slots and to drop ended bans."""

    def __init__(
        self,
        url: str,
        node: str,
        *,
        sync_interval: float = 1.0,
        log: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        connect_timeout: float = 5.0,
    ) -> None:
        if not sync_interval > 0:
            raise ValueError("sync_interval must be positive")
        self.url = url
        self.node = node
        self.sync_interval = float(sync_interval)
        self._log = log
        self._clock = clock
        self._connect_timeout = max(1, round(connect_timeout))
        self._rates: dict[str, ClusterRates] = {}
        self._bans: dict[str, ClusterBans] = {}
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.down = False  # the last sync failed (logged once until one succeeds)
        self.syncs = 0  # syncs that succeeded

    # --- factories for Anvil (a new store for a name replaces the old one) -------------

    def rate_store(self, name: str, time_unit: float, max_keys: int) -> RateStore:
        store = self._rates[name] = ClusterRates(name, time_unit, max_keys, self._clock)
        return store

    def ban_store(self, name: str, max_keys: int) -> BanStore:
        store = self._bans[name] = ClusterBans(name, max_keys)
        return store

    # --- the sync task ---------------------------------------------------------------

    def _say(self, text: str) -> None:
        if self._log is not None:
            self._log(text)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        import psycopg

        self._conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=self._connect_timeout
        )
        return self._conn

    async def sync_once(self) -> None:
        """Push this node's new counts, forgets and bans; pull the others'; prune.
        Raises nothing: a failure is logged once and the batch is kept for next time."""
        now = self._clock()
        rates = list(self._rates.values())
        bans = list(self._bans.values())
        rate_batches = [store.take() for store in rates]
        ban_batches = [store.take() for store in bans]
        pushed = False
        failure: Exception | None = None
        try:
            # A hung database must not stall the sync forever; the next one retries.
            async with asyncio.timeout(max(10.0, 5 * self.sync_interval)):
                conn = await self._connection()
                await self._push(conn, rates, rate_batches, bans, ban_batches, now)
                pushed = True
                await self._pull(conn, rates, bans, now)
        except Exception as exc:  # any failure means "database away"
            failure = exc
        finally:
            if not pushed:  # (also when cancelled) the batch waits for the next push
                for store, rate_batch in zip(rates, rate_batches, strict=True):
                    store.give_back(rate_batch, now)
                for bstore, ban_batch in zip(bans, ban_batches, strict=True):
                    bstore.give_back(ban_batch, now)
        if failure is not None:
            await self._drop_connection()
            if not self.down:
                self.down = True
                self._say(
                    "anvil cluster: database unavailable, limits are per node until it is"
                    f" back: {type(failure).__name__}: {str(failure).strip()[:200]}"
                )
            return
        self.syncs += 1
        if self.down:
            self.down = False
            self._say("anvil cluster: database back, limits are cluster-wide again")
        unshared = sum(s.unshared for s in rates) + sum(s.unshared for s in bans)
        if unshared:
            for store in rates:
                store.unshared = 0
            for bstore in bans:
                bstore.unshared = 0
            self._say(f"anvil cluster: {unshared} events or bans not shared (too many keys)")

    async def _push(
        self,
        conn: psycopg.AsyncConnection[Any],
        rates: list[ClusterRates],
        rate_batches: list[tuple[dict[str, dict[int, int]], dict[str, int]]],
        bans: list[ClusterBans],
        ban_batches: list[dict[str, float]],
        now: float,
    ) -> None:
        node = self.node
        forgets: list[tuple[str, float, bytes, str, int]] = []
        counts: list[tuple[str, float, bytes, int, str, int, float]] = []
        for store, (pending, forgotten) in zip(rates, rate_batches, strict=True):
            name, unit, low = store.name, store.time_unit, store.low_slot(now)
            for key, slot in forgotten.items():
                forgets.append((name, unit, _db_key(key), node, slot))
            for key, slots in pending.items():
                raw = _db_key(key)
                for slot, n in slots.items():
                    if slot > low:
                        counts.append((name, unit, raw, slot, node, n, store.expires(slot)))
        new_bans = [
            (store.name, _db_key(key), until, node)
            for store, batch in zip(bans, ban_batches, strict=True)
            for key, until in batch.items()
            if until > now
        ]
        async with conn.transaction(), conn.cursor() as cur:
            # Forgets first: counts made after a forget (same slot) must survive it.
            if forgets:
                await cur.executemany(_FORGET, forgets)
            if counts:
                await cur.executemany(_PUSH_COUNT, counts)
            if new_bans:
                await cur.executemany(_PUSH_BAN, new_bans)
            await cur.execute("DELETE FROM anvil_counts WHERE expires <= %s", (now,))
            await cur.execute("DELETE FROM anvil_bans WHERE until <= %s", (now,))

    async def _pull(
        self,
        conn: psycopg.AsyncConnection[Any],
        rates: list[ClusterRates],
        bans: list[ClusterBans],
        now: float,
    ) -> None:
        node = self.node
        async with conn.cursor() as cur:
            pulled: list[list[tuple[bytes, int, int]]] = []
            for store in rates:
                low, most = store.low_slot(now), store.max_keys * _RING
                await cur.execute(_PULL_COUNTS, (store.name, store.time_unit, node, low, most))
                pulled.append(await cur.fetchall())
            await cur.execute("SELECT clock_timestamp()")
            row = await cur.fetchone()
            stamp: datetime | None = row[0] if row else None
            ban_rows: list[list[tuple[bytes, float]]] = []
            for bstore in bans:
                await cur.execute(
                    _PULL_BANS, (bstore.name, node, now, bstore.cutoff, bstore.max_keys)
                )
                ban_rows.append(await cur.fetchall())
        # Installed only once every query succeeded: a failed pull keeps the last view.
        for store, rows in zip(rates, pulled, strict=True):
            store.replace_remote(rows, now)
        for bstore, brows in zip(bans, ban_rows, strict=True):
            bstore.merge_remote(brows)
            if stamp is not None:
                bstore.cutoff = stamp - _BAN_OVERLAP

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # broken already: nothing to save
                pass

    async def run(self) -> None:
        """Sync every ``sync_interval`` seconds (start to start) until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.sync_once()
            await asyncio.sleep(max(0.0, self.sync_interval - (loop.time() - started)))

    async def close(self) -> None:
        """Close the database connection (pending counts are not pushed)."""
        await self._drop_connection()
