"""Policy fixtures: dict-backed tables, a router with our usual domains, an engine factory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from ironpost.policy import NetworkList, PolicyContext, PolicyEngine, Stage
from ironpost.policy.verdicts import Decision
from ironpost.routing import DomainList, Router, RoutingConfig
from ironpost.testing.tables import RecordingTable as DictTable


def make_router_config(**maps: Any) -> RoutingConfig:
    def t(name: str) -> tuple[DictTable, ...]:
        return (DictTable(maps[name]),) if name in maps else ()

    return RoutingConfig(
        mydestination=DomainList.build(["example.com", "mail.example.com", "localhost"]),
        virtual_alias_domains=DomainList.build(["alias.test"]),
        virtual_mailbox_domains=DomainList.build(["vmail.test"]),
        relay_domains=DomainList.build(["relay.test"], parent_matches_subdomains=True),
        virtual_alias_maps=t("virtual"),
        virtual_mailbox_maps=t("mailboxes"),
        alias_maps=t("aliases"),
        local_recipient_maps=t("local"),
        virtual_mailbox_base=Path("/var/mail/vhosts"),
        recipient_delimiter="+",
        allow_percent_hack=True,
        swap_bangpath=True,
        myorigin="example.com",
        myhostname="mail.example.com",
        local_addresses=frozenset({"192.0.2.1", "127.0.0.1"}),
    )


RELAY_DEFAULT = ("permit_mynetworks", "permit_sasl_authenticated", "reject_unauth_destination")


class Harness:
    """An engine plus a session context, with tables addressed by spec."""

    def __init__(
        self,
        lists: Mapping[Stage, Iterable[str]],
        tables: Mapping[str, Mapping[str, str]] | None = None,
        *,
        client: str = "198.51.100.7",
        client_name: str = "unknown",
        maps: Mapping[str, Mapping[str, str]] | None = None,
        **engine_kw: Any,
    ) -> None:
        self.tables = {spec: DictTable(data, spec) for spec, data in (tables or {}).items()}
        lists = dict(lists)
        lists.setdefault(Stage.RELAY, RELAY_DEFAULT)
        self.warnings: list[str] = []
        self.engine = PolicyEngine(
            lists,
            router=Router(make_router_config(**(maps or {}))),
            mynetworks=NetworkList.build(["127.0.0.0/8", "[2001:db8::]/32"]),
            open_table=self.tables.__getitem__,
            **engine_kw,
        )
        self.ctx: PolicyContext = self.engine.new_context(
            client, client_name, log_warning=self.warnings.append
        )

    def rcpt(self, address: str, sender: str | None = "s@sender.test") -> Decision:
        if sender is not None and self.ctx.sender != sender:
            self.ctx.set_sender(sender)
        self.ctx.set_recipient(address)
        return asyncio.run(self.engine.check_recipient(self.ctx))

    def check(self, stage: Stage) -> Decision:
        return asyncio.run(self.engine.check(stage, self.ctx))


@pytest.fixture
def harness() -> Callable[..., Harness]:
    return Harness


@pytest.fixture
def dict_table() -> type[DictTable]:
    return DictTable


@pytest.fixture
def make_engine() -> Callable[..., PolicyEngine]:
    def make(lists: Mapping[Stage, Iterable[str]], **kw: Any) -> PolicyEngine:
        return PolicyEngine(lists, router=Router(make_router_config()), **kw)

    return make
