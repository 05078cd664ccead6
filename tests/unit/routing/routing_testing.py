"""Routing test helpers importable by test modules (a conftest is not a module to import:
with more than one conftest.py in the tree, "conftest" names whichever came first)."""

from __future__ import annotations

from pathlib import Path

from ironpost.routing import DomainList, RoutingConfig

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
