"""Per-key event rates over a time unit: the counting primitive of the anvil.

Owns :class:`RateStore` (the interface a shared, database-backed store will implement for
issue #8) and :class:`RateTable`, the in-memory store: one sliding window per key.

The algorithm: a *slotted sliding window*. The time unit ``T`` is cut into ``k`` slots of
width ``w`` (``k * w >= T``, exactly, see :func:`slot_width`); a key keeps one counter per
slot for its last ``k + 1`` slots. Its count is the sum of those counters, which covers
every event in ``(now - T, now]`` and at most one slot more.

Why not Postfix's fixed window (a window starts at a key's first event, and its count
resets ``T`` later)? It lets ``2 * limit`` events through around a window's end. The
usual two-window weighted estimate smooths that, but it is an estimate: events bunched at
the end of the previous window are under-weighted, and it admits well over ``limit`` in
some windows. The slotted window costs ``k + 1`` small ints per key and gives a hard bound.

Guarantee (tested with hypothesis, in exact arithmetic): for a non-decreasing clock, the
events a key admits under a limit ``L`` never exceed ``L`` in any window of length ``T``.
Liveness: a key that has been idle for ``T + w`` has its whole limit again. The price of
the guarantee is conservatism: an event can keep counting for up to ``w`` after it left
the true window. A clock that goes backwards (it should not) counts in the newest slot.

Invariants of :class:`RateTable`: a refused event is not counted; keys are kept in
least-recently-used order, so idle keys sit at the front and are dropped a few per call
(O(1) amortised, bounded work per call), and the table never holds more than
``max_keys`` keys (the least recently used one is evicted).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from fractions import Fraction
from typing import Protocol

DEFAULT_SLOTS = 6  # a 60 s unit moves in 10 s steps; 7 ints per key
DEFAULT_MAX_KEYS = 100_000
_SWEEP_PER_CALL = 2  # > 1 insertion per call, so a steady flood cannot outgrow the sweep


class RateStore(Protocol):
    """Counts of events per key over one time unit (fixed at construction)."""

    def count(self, key: str, now: float) -> int:
        """Events counted for ``key`` in the window ending at ``now``."""
        ...

    def admit(self, key: str, now: float, limit: int, n: int = 1) -> int | None:
        """Count ``n`` events if the key's count stays within ``limit``; return the new
        count, or None (and count nothing) when it would not."""
        ...

    def add(self, key: str, now: float, n: int = 1) -> int:
        """Count ``n`` events unconditionally; return the new count."""
        ...

    def forget(self, key: str) -> None:
        """Drop the key's events."""
        ...

    def __len__(self) -> int:
        """Keys held in this process's memory (for statistics)."""
        ...


def slot_width(time_unit: float, slots: int) -> float:
    """The smallest float ``w`` near ``time_unit / slots`` with ``slots * w >= time_unit``
    in exact arithmetic: rounding down would shorten the window the guarantee is about."""
    if not (time_unit > 0 and math.isfinite(time_unit)):
        raise ValueError(f"time unit must be a positive number of seconds, not {time_unit!r}")
    if slots < 1:
        raise ValueError("a sliding window needs at least one slot")
    width = time_unit / slots
    while Fraction(width) * slots < Fraction(time_unit):
        width = math.nextafter(width, math.inf)
    return width


class _Window:
    """The last ``k + 1`` slot counters of one key, as a ring indexed by slot number."""

    __slots__ = ("counts", "slot", "total")

    def __init__(self, ring: int, slot: int) -> None:
        self.counts = [0] * ring
        self.slot = slot  # the newest slot this window has moved to
        self.total = 0


class RateTable:
    """In-memory :class:`RateStore`: one slotted sliding window per key, bounded in size."""

    __slots__ = ("_keys", "_ring", "_width", "evicted", "max_keys", "time_unit")

    def __init__(
        self,
        time_unit: float,
        *,
        slots: int = DEFAULT_SLOTS,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.time_unit = float(time_unit)
        self._width = slot_width(self.time_unit, slots)
        self._ring = slots + 1
        self.max_keys = max_keys
        self.evicted = 0  # keys dropped by the size cap (a flood indicator)
        self._keys: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def _slot(self, now: float) -> int:
        # Float // is the exact floor of the quotient (CPython's divmod is built on fmod),
        # so slot boundaries hold exactly, which the guarantee relies on.
        return int(now // self._width)

    def _advance(self, window: _Window, slot: int) -> None:
        gap = slot - window.slot
        if gap <= 0:
            return  # same slot, or a clock that went back: count in the newest slot
        counts = window.counts
        ring = self._ring
        if gap >= ring:
            for i in range(ring):
                counts[i] = 0
            window.total = 0
        else:
            total = window.total
            for s in range(window.slot + 1, slot + 1):
                i = s % ring
                total -= counts[i]
                counts[i] = 0
            window.total = total
        window.slot = slot

    def _touch(self, key: str, slot: int) -> _Window:
        """The key's window moved to ``slot`` and made most recently used."""
        keys = self._keys
        window = keys.get(key)
        if window is None:
            window = keys[key] = _Window(self._ring, slot)
            if len(keys) > self.max_keys:
                keys.popitem(last=False)
                self.evicted += 1
        else:
            keys.move_to_end(key)
            self._advance(window, slot)
        return window

    def _sweep(self, slot: int, budget: int) -> int:
        """Drop up to ``budget`` idle keys from the front; return how many went."""
        keys = self._keys
        idle_before = slot - self._ring  # a window whose newest slot is this old is empty
        dropped = 0
        while dropped < budget and keys:
            key, window = next(iter(keys.items()))
            if window.slot > idle_before:
                # Its slot may have moved on without a new event (a count, a refusal).
                self._advance(window, slot)
                if window.total:
                    break  # keys are in order of their last counted event: all newer
            del keys[key]
            dropped += 1
        return dropped

    def sweep(self, now: float) -> int:
        """Drop every idle key (for a periodic timer; calls already sweep a little)."""
        return self._sweep(self._slot(now), len(self._keys))

    def count(self, key: str, now: float) -> int:
        window = self._keys.get(key)
        if window is None:
            return 0
        self._advance(window, self._slot(now))
        return window.total

    def admit(self, key: str, now: float, limit: int, n: int = 1) -> int | None:
        slot = self._slot(now)
        self._sweep(slot, _SWEEP_PER_CALL)
        window = self._keys.get(key)
        if window is not None:
            self._advance(window, slot)
            if window.total + n > limit:
                return None  # refused: neither counted nor made more recent
        elif n > limit:
            return None
        window = self._touch(key, slot)
        window.counts[window.slot % self._ring] += n
        window.total += n
        return window.total

    def add(self, key: str, now: float, n: int = 1) -> int:
        slot = self._slot(now)
        self._sweep(slot, _SWEEP_PER_CALL)
        window = self._touch(key, slot)
        window.counts[window.slot % self._ring] += n
        window.total += n
        return window.total

    def forget(self, key: str) -> None:
        self._keys.pop(key, None)
