"""Fixtures shared by unit and integration tests: a real PostgreSQL for the cluster queue
engine (issue #8), one server per test process, one fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from ironpost.testing.postgres import PostgresServer

_databases = itertools.count()


def _running() -> Iterator[PostgresServer]:
    """Debian's PostgreSQL on a loopback port, fsync off (tests kill processes, never the
    machine), stopped and removed afterwards."""
    server = PostgresServer(fsync=False)
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        server.cleanup()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The test process's PostgreSQL, started on first use."""
    yield from _running()


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of the test's own, to stop, crash and start without disturbing the
    session's server that other tests share."""
    yield from _running()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database for this test."""
    return postgres_server.create_database(f"t{next(_databases)}")
