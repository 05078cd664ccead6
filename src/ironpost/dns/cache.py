"""The resolver's answer cache: a bounded LRU of :class:`Result` values with expiry.

Owns when a cached DNS result stops being served. Pure: no I/O, no asyncio; time
comes from an injected clock so that TTL behaviour is tested without waiting.

Invariants:
- at most ``max_entries`` entries are held: names chosen by an attacker (a spammer's
  HELO, a forged sender domain) cannot grow memory without limit; the least
  recently used entry goes first;
- an entry is never served at or after its expiry time; a TTL <= 0 is not stored;
- a served result's ``ttl`` is the time it has left, rounded up to whole seconds (so
  a hit right after the answer is the stored object itself, not a copy).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from ironpost.dns.types import Result

DEFAULT_MAX_ENTRIES = 10_000


class ResultCache:
    """Bounded, expiring map ``key -> Result``. Not thread-safe (one event loop)."""

    __slots__ = ("_clock", "_entries", "max_entries")

    def __init__(self, clock: Callable[[], float], max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self._clock = clock
        self.max_entries = max_entries
        # key -> (expires_at, result); insertion order is recency order.
        self._entries: OrderedDict[Hashable, tuple[float, Result[Any]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Result[Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, result = entry
        left = expires - self._clock()
        if left <= 0:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        remaining = math.ceil(left)
        if remaining == result.ttl:
            return result
        return Result(result.status, result.records, remaining, result.error)

    def put(self, key: Hashable, result: Result[Any], ttl: float) -> None:
        """Store ``result`` for ``ttl`` seconds; ``ttl`` <= 0 only drops an older entry
        (the newer answer says it must not be reused)."""
        if ttl <= 0 or self.max_entries == 0:
            self._entries.pop(key, None)
            return
        entries = self._entries
        entries[key] = (self._clock() + ttl, result)
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
