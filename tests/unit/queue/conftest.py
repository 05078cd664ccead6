"""Fixtures for the queue tests: envelopes and a fresh store per test.

``store`` runs each test on both engines (SQLite, and PostgreSQL through the session's
real server, see tests/conftest.py): the QueueStore contract is one, whatever the engine.
``sqlite_store`` is for the tests of SQLite's own files and failure modes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from queue_testing import EnvelopeFactory, build_envelope

from ironpost.queue import SqliteQueue, open_queue
from ironpost.queue.postgres import PostgresQueue


@pytest.fixture
def envelope() -> EnvelopeFactory:
    return build_envelope


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteQueue]:
    s = open_queue(tmp_path / "queue")
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteQueue]:
    # Typed as SqliteQueue for the tests' sake: PostgresQueue has the same interface.
    s: Any
    if request.param == "sqlite":
        s = open_queue(tmp_path / "queue")
    else:
        s = PostgresQueue(request.getfixturevalue("pg_url"), node="test-node")
    yield s
    s.close()
