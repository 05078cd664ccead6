"""The durable mail queue: the ``QueueStore`` interface, its SQLite engine, queue ids,
the qshape statistics (:mod:`~ironpost.queue.shape`) and the wake-up trigger
(:mod:`~ironpost.queue.trigger`).

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
from ironpost.queue.shape import Shape, ShapeRow, shape
from ironpost.queue.sqlite import SqliteQueue, open_queue
from ironpost.queue.store import QueueStore
from ironpost.queue.trigger import TriggerListener, notify, trigger_path

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
    "Shape",
    "ShapeRow",
    "SqliteQueue",
    "TriggerListener",
    "new_queue_id",
    "notify",
    "open_queue",
    "shape",
    "trigger_path",
]
