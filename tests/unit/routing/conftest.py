"""Routing fixtures: dict-backed lookup tables and a router factory with a typical setup."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from routing_testing import BASE

from ironpost.routing import Router
from ironpost.testing.tables import RecordingTable as DictTable


def _tables(data: dict[str, str] | None) -> tuple[DictTable, ...]:
    return () if data is None else (DictTable(data),)


@pytest.fixture
def dict_table() -> type[DictTable]:
    return DictTable


@pytest.fixture
def make_router() -> Callable[..., Router]:
    def make(
        *,
        virtual: dict[str, str] | None = None,
        mailboxes: dict[str, str] | None = None,
        aliases: dict[str, str] | None = None,
        local: dict[str, str] | None = None,
        **overrides: Any,
    ) -> Router:
        config = replace(
            BASE,
            virtual_alias_maps=_tables(virtual),
            virtual_mailbox_maps=_tables(mailboxes),
            alias_maps=_tables(aliases),
            local_recipient_maps=_tables(local),
            **overrides,
        )
        return Router(config)

    return make


@pytest.fixture(scope="module")
def base_router() -> Router:
    """The BASE setup with no tables (module scope: usable from hypothesis tests)."""
    return Router(BASE)
