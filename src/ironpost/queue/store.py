"""The ``QueueStore`` interface: durable storage of messages and per-recipient state.

What an engine guarantees (SQLite now, PostgreSQL later):

- ``submit`` returns a queue id only after the transaction holding the message has
  committed durably; otherwise it raises :class:`QueueWriteError` (the server then
  answers 451 4.3.0). There is never a false success.
- ``claim`` moves due messages to ACTIVE and hands out their due recipients, which are
  (re)marked PENDING for the attempt under way; HOLD and CORRUPT are never claimed, and a
  record that does not decode moves its message to CORRUPT instead of raising.
- ``record`` applies delivery outcomes; a message whose recipients are all final is
  removed (and its id returned), one left with only deferred recipients goes to DEFERRED.
- ``recover`` (startup) puts ACTIVE messages back to INCOMING, as Postfix requeues its
  active queue at start.
- The admin operations are synchronous and safe to call from another process while the
  server runs.

Scheduling (when to retry) is not the store's business: the caller computes
``Outcome.next_attempt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ironpost.queue.model import Envelope, Outcome, QueuedMessage, QueueState


class QueueStore(Protocol):
    async def submit(
        self, envelope: Envelope, content: bytes, *, queue_id: str | None = None
    ) -> str:
        """``queue_id`` lets the caller name the message beforehand (for its Received
        header); it must come from :func:`ironpost.queue.ids.new_queue_id`."""
        ...

    async def claim(self, *, now: float, limit: int) -> list[QueuedMessage]: ...

    async def content(self, message_id: str) -> bytes: ...

    async def record(self, outcomes: Sequence[Outcome]) -> list[str]: ...

    async def recover(self) -> int: ...

    def close(self) -> None: ...

    # Admin operations (synchronous; usable from the CLI while the server runs).
    def list_messages(self) -> list[QueuedMessage]: ...

    def get(self, message_id: str) -> QueuedMessage | None: ...

    def delete(self, message_id: str) -> bool: ...

    def delete_all(self) -> int: ...

    def hold(self, message_id: str) -> bool: ...

    def release(self, message_id: str) -> bool: ...

    def stats(self) -> dict[QueueState, int]: ...
