"""The durable mail queue: the ``QueueStore`` interface, its SQLite engine, queue ids.

Owns storage only: a message is acknowledged (250) only after the store has committed it,
and each recipient carries its own status. When to retry is the scheduler's business.
"""

from ironpost.queue.ids import new_queue_id
from ironpost.queue.model import (
    ClientInfo,
    Envelope,
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    QueueState,
    QueueWriteError,
    RecipientSpec,
    RecipientStatus,
)
from ironpost.queue.sqlite import SqliteQueue, open_queue
from ironpost.queue.store import QueueStore

__all__ = [
    "ClientInfo",
    "Envelope",
    "Outcome",
    "QueueState",
    "QueueStore",
    "QueueWriteError",
    "QueuedMessage",
    "QueuedRecipient",
    "RecipientSpec",
    "RecipientStatus",
    "SqliteQueue",
    "new_queue_id",
    "open_queue",
]
