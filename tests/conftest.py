"""Fixtures shared by unit and integration tests: a real PostgreSQL for the cluster queue
engine (issue #8), one server per test process, one fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from ironpost.testing.postgres import PostgresServer

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Debian's PostgreSQL on a loopback port, fsync off (tests kill processes, never the
    machine), started on first use and stopped at the end of the session."""
    server = PostgresServer(fsync=False)
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        server.cleanup()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database for this test."""
    return postgres_server.create_database(f"t{next(_databases)}")
