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
  active queue at start, and removes whatever a crash left of messages that are gone
  (the SQLite engine's orphaned body files).
- ``mark_warned`` records, through the same durable path, that a delay warning was
  queued for a message (``QueuedMessage.warned``), so there is one warning per message.
- The admin operations are synchronous and safe to call from another process while the
  server runs. They never take an ACTIVE message out of ACTIVE (except to HOLD), so a
  recipient is never handed out twice at once; ``flush``/``requeue`` only make mail due,
  and the caller pokes the server (:func:`ironpost.queue.trigger.notify`) to act now.

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

    async def abandon(self, message_ids: Sequence[str], *, next_attempt: float) -> None:
        """Give claimed messages back without outcomes (their delivery failed in a way
        that produced none): recipients in flight are deferred until ``next_attempt``."""
        ...

    async def mark_warned(self, message_ids: Sequence[str]) -> None: ...

    def close(self) -> None: ...

    # Admin operations (synchronous; usable from the CLI while the server runs).
    def list_messages(self) -> list[QueuedMessage]: ...

    def get(self, message_id: str) -> QueuedMessage | None: ...

    def delete(self, message_id: str) -> bool: ...

    def delete_all(self) -> int: ...

    def hold(self, message_id: str) -> bool: ...

    def release(self, message_id: str) -> bool: ...

    def stats(self) -> dict[QueueState, int]: ...

    # Selection and bulk operations (postsuper/postqueue); each is one transaction.
    def select(
        self,
        *,
        sender: str | None = None,
        domain: str | None = None,
        states: Sequence[QueueState] | None = None,
    ) -> list[str]: ...

    def delete_messages(self, message_ids: Sequence[str]) -> int: ...

    def hold_messages(self, message_ids: Sequence[str]) -> int: ...

    def release_messages(self, message_ids: Sequence[str]) -> int: ...

    def requeue(self, message_id: str, *, now: float | None = None) -> bool: ...

    def requeue_messages(self, message_ids: Sequence[str], *, now: float | None = None) -> int: ...

    def flush(self, *, now: float | None = None) -> int: ...

    def flush_domain(self, domain: str, *, now: float | None = None) -> int: ...

    def shape_rows(
        self,
        *,
        now: float,
        edges: Sequence[float],
        states: Sequence[QueueState],
        by_sender: bool = False,
    ) -> list[tuple[str, int, int]]: ...
