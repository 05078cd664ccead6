"""Choosing the queue engine from the configuration: ``queue_engine``.

Owns :func:`open_store`, the one place that turns settings into a store, for the server
and for every command (queue, sendmail, mailq, privacy), so that no caller forks on the
engine. ``sqlite`` (the default) keeps the queue in ``queue_directory``; ``postgresql``
keeps it in the database at ``queue_database_url``, shared by every node of a cluster,
each under its own ``queue_node_name``. psycopg is imported only when PostgreSQL is
chosen (it is the ``postgresql`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias

from ironpost.queue.sqlite import DB_NAME, HOT_BYTES, SqliteQueue, open_queue

if TYPE_CHECKING:
    from ironpost.queue.postgres import PostgresQueue

Store: TypeAlias = "SqliteQueue | PostgresQueue"


class _Settings(Protocol):
    def text(self, name: str) -> str: ...

    def integer(self, name: str) -> int: ...

    def seconds(self, name: str) -> float: ...


class QueueConfigError(Exception):
    """The queue settings cannot work (e.g. PostgreSQL chosen without a URL)."""


def engine_of(settings: _Settings) -> str:
    return settings.text("queue_engine").strip().lower() or "sqlite"


def open_store(settings: _Settings, *, delivers: bool = True) -> Store:
    """The queue the settings name. ``delivers``: False in a process that only accepts
    (an SMTP worker, sendmail, the CLI), which keeps no bodies for a first delivery."""
    hot = HOT_BYTES if delivers else 0
    if engine_of(settings) == "postgresql":
        url = settings.text("queue_database_url").strip()
        if not url:
            raise QueueConfigError("queue_engine = postgresql needs queue_database_url")
        node = settings.text("queue_node_name").strip()
        if not node:
            raise QueueConfigError("queue_engine = postgresql needs queue_node_name")
        from ironpost.queue.postgres import PostgresQueue

        # queue_directory still holds this node's wake-up trigger socket.
        directory = Path(settings.text("queue_directory"))
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            directory.chmod(0o700)  # mkdir's mode is filtered by the umask
        return PostgresQueue(
            url, node=node, lease_seconds=settings.seconds("queue_lease_time"), hot_bytes=hot
        )
    return open_queue(
        Path(settings.text("queue_directory")),
        hot_bytes=hot,
        body_file_threshold=settings.integer("queue_body_file_threshold"),
    )


def queue_exists(settings: _Settings) -> bool:
    """Whether there is a queue to read without creating one (mailq on a fresh host):
    always for PostgreSQL, whose database the administrator made."""
    if engine_of(settings) == "postgresql":
        return True
    return (Path(settings.text("queue_directory")) / DB_NAME).exists()
