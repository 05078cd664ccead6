"""Routing fixtures: dict-backed lookup tables and a router factory with a typical setup."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ironpost.routing import DomainList, Router, RoutingConfig


class DictTable:
    """A LookupTable over a dict. Keys are stored as given: callers must lowercase."""

    def __init__(self, data: dict[str, str], spec: str = "dict:test") -> None:
        self._data = dict(data)
        self._spec = spec
        self.lookups: list[str] = []

    @property
    def spec(self) -> str:
        return self._spec

    def lookup(self, key: str) -> str | None:
        self.lookups.append(key)
        return self._data.get(key)


BASE = RoutingConfig(
    mydestination=DomainList.build(["example.com", "mail.example.com", "localhost"]),
    virtual_alias_domains=DomainList.build(["alias.test"]),
    virtual_mailbox_domains=DomainList.build(["vmail.test"]),
    relay_domains=DomainList.build(["relay.test"], parent_matches_subdomains=True),
    virtual_alias_maps=(),
    virtual_mailbox_maps=(),
    alias_maps=(),
    local_recipient_maps=(),
    virtual_mailbox_base=Path("/var/mail/vhosts"),
    recipient_delimiter="+",
    allow_percent_hack=True,
    swap_bangpath=True,
    myorigin="example.com",
    myhostname="mail.example.com",
    local_addresses=frozenset({"192.0.2.1", "127.0.0.1", "::1"}),
)


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
