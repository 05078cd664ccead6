"""A lookup table for tests: :class:`RecordingTable`, a dict behind the
:class:`~ironpost.config.tables.LookupTable` protocol that records every key asked.

Keys are stored and looked up exactly as given (callers lowercase, as the real tables'
callers do), so a test sees precisely what the code under test asked for.
"""

from __future__ import annotations

from collections.abc import Mapping


class RecordingTable:
    def __init__(self, data: Mapping[str, str], spec: str = "dict:test") -> None:
        self._data = dict(data)
        self._spec = spec
        self.lookups: list[str] = []

    @property
    def spec(self) -> str:
        return self._spec

    def lookup(self, key: str) -> str | None:
        self.lookups.append(key)
        return self._data.get(key)
