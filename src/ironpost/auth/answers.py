"""A thread-safe copy of the resolver's recent answers, for the blocking DNS bridge.

Owns :class:`AnswerCache`. pyspf and dkimpy run in worker threads and ask DNS through
:class:`~ironpost.auth.dnsbridge.BlockingDns`; without this cache every question costs two
thread hand-offs (worker → event loop → worker) even when the resolver answers from its own
TTL cache, which is not thread-safe and so cannot be read from a worker. This cache keeps
the :class:`~ironpost.dns.types.Result` values the resolver returned, for the time the
resolver said they stay valid, so a repeated question is answered in the worker itself.

Invariants:
- an entry is never served after the resolver's own copy would expire: it is kept for the
  result's ``ttl`` minus one second (the resolver rounds the time left *up* to a whole
  second), so a TTL of 1 s or less, and every TEMPFAIL (ttl 0), is never kept;
- at most ``max_entries`` entries: names a peer chooses cannot grow memory without bound
  (when full, the oldest insertions go first);
- reads take no lock (one dict lookup, atomic); writes take a short lock, from any thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ironpost.dns.types import Result

DEFAULT_MAX_ENTRIES = 4096


class AnswerCache:
    """``(qtype, name) -> Result`` with expiry; names compared case-insensitively."""

    __slots__ = ("_clock", "_entries", "_lock", "max_entries")

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, Result[Any]]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(qtype: str, name: str) -> tuple[str, str]:
        return qtype, name.rstrip(".").lower()

    def get(self, qtype: str, name: str) -> Result[Any] | None:
        entry = self._entries.get(self.key(qtype, name))
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def put(self, qtype: str, name: str, result: Result[Any]) -> None:
        keep = result.ttl - 1  # the resolver's ttl is rounded up: never outlive its copy
        if keep <= 0 or self.max_entries <= 0:
            return
        key = self.key(qtype, name)
        with self._lock:
            entries = self._entries
            if key not in entries and len(entries) >= self.max_entries:
                now = self._clock()
                for old in [k for k, (expires, _) in entries.items() if expires <= now]:
                    del entries[old]
                while len(entries) >= self.max_entries:
                    del entries[next(iter(entries))]  # dicts keep insertion order
            entries[key] = (self._clock() + keep, result)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
