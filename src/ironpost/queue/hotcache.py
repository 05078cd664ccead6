"""The bodies of just-accepted messages, kept for their first delivery.

Most mail is delivered seconds after it is accepted, by the same process. Reading the
body back from the database then costs a thread hop and a query for bytes that are
still in memory. The store puts each committed body here; the queue manager's first
``content()`` takes it out (a later attempt, after a deferral, reads the database).

Invariants:
- only committed content goes in (the store adds it after the commit returned), and a
  body is immutable, so a hit is always the stored bytes;
- the cache holds at most ``max_bytes`` in all and no body larger than ``max_body``; the
  oldest entries go first, so memory stays bounded when delivery lags behind accept
  (deferred mail, a dead destination, a process that only accepts);
- an entry is handed out once (``take`` removes it): a message is claimed by one
  delivery at a time, and its retries must not pin memory.
"""

from __future__ import annotations


class HotContent:
    def __init__(self, max_bytes: int, *, max_body: int = 256 * 1024) -> None:
        self.max_bytes = max_bytes
        self.max_body = min(max_body, max_bytes)
        self._entries: dict[str, bytes] = {}  # insertion order = age
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def put(self, message_id: str, content: bytes) -> None:
        size = len(content)
        if size > self.max_body:
            return
        entries = self._entries
        while entries and self._bytes + size > self.max_bytes:
            oldest = next(iter(entries))
            self._bytes -= len(entries.pop(oldest))
        entries[message_id] = content
        self._bytes += size

    def take(self, message_id: str) -> bytes | None:
        content = self._entries.pop(message_id, None)
        if content is None:
            self.misses += 1
            return None
        self._bytes -= len(content)
        self.hits += 1
        return content

    def discard(self, message_id: str) -> None:
        content = self._entries.pop(message_id, None)
        if content is not None:
            self._bytes -= len(content)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        return self._bytes
