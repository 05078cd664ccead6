"""Fixtures for the queue tests: envelopes and a fresh on-disk store per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from queue_testing import EnvelopeFactory, build_envelope

from ironpost.queue import SqliteQueue, open_queue


@pytest.fixture
def envelope() -> EnvelopeFactory:
    return build_envelope


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteQueue]:
    s = open_queue(tmp_path / "queue")
    yield s
    s.close()
