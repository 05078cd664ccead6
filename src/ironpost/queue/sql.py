"""What the queue's SQL needs of a database connection: :class:`Db`.

The record functions (:mod:`ironpost.queue.records`) are written against this protocol,
with ``?`` placeholders and portable SQL, so that one set of queries serves both engines:
``sqlite3.Connection`` satisfies it as it is, and the PostgreSQL engine wraps a psycopg
connection (:class:`ironpost.queue.postgres.PgDb`) that rewrites the placeholders.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...
