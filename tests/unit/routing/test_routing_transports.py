"""Transport selection: transport_maps, class defaults and relayhost, in transport(5) order."""

from __future__ import annotations

from dataclasses import replace

import pytest
from routing_testing import BASE

from ironpost.routing import Router
from ironpost.routing.transports import (
    Agent,
    TransportConfig,
    TransportSelector,
    split_transport,
)
from ironpost.testing.tables import RecordingTable as DictTable

DEFAULTS = TransportConfig((), "smtp", "relay", "local:$myhostname", "virtual", "", "+", False)


def selector(table: dict[str, str] | None = None, **kw: object) -> TransportSelector:
    tables = () if table is None else (DictTable(table),)
    return TransportSelector(replace(DEFAULTS, transport_maps=tables, **kw))  # type: ignore[arg-type]


def router(table: dict[str, str] | None = None, **kw: object) -> Router:
    tables = () if table is None else (DictTable(table),)
    config = replace(DEFAULTS, transport_maps=tables, **kw)  # type: ignore[arg-type]
    # A Dovecot-style map: the value is not a Maildir path, which LMTP does not need.
    mailboxes = (DictTable({"alice@vmail.test": "OK"}),)
    return Router(replace(BASE, transports=config, virtual_mailbox_maps=mailboxes))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("smtp:[10.0.0.1]:2525", ("smtp", "[10.0.0.1]:2525")),
        (":[gw.example]", ("", "[gw.example]")),
        ("lmtp:unix:/run/dovecot/lmtp", ("lmtp", "unix:/run/dovecot/lmtp")),
        ("local", ("local", "")),
        ("error:5.1.1 mailbox gone", ("error", "5.1.1 mailbox gone")),
        (" smtp: ", ("smtp", "")),
    ],
)
def test_split_transport(value: str, expected: tuple[str, str]) -> None:
    assert split_transport(value) == expected


def test_default_is_smtp_to_the_recipient_domain() -> None:
    route = selector().remote("u", "remote.test", relay_class=False)
    assert (route.transport, route.agent, route.nexthop) == ("smtp", Agent.SMTP, "remote.test")


def test_relay_class_uses_relay_transport() -> None:
    route = selector().remote("u", "relay.test", relay_class=True)
    assert (route.transport, route.agent) == ("relay", Agent.SMTP)


def test_relayhost_applies_when_nothing_more_specific() -> None:
    route = selector(relayhost="[smart.example]:587").remote("u", "x.test", relay_class=False)
    assert route.nexthop == "[smart.example]:587"


def test_nexthop_precedence() -> None:
    s = selector({"x.test": "smtp:[10.0.0.9]"}, relayhost="[smart]")
    assert s.remote("u", "x.test", relay_class=False).nexthop == "[10.0.0.9]"
    # An empty nexthop in the table falls through to the transport's own, then relayhost.
    s = selector({"x.test": "smtp:"}, relayhost="[smart]")
    assert s.remote("u", "x.test", relay_class=False).nexthop == "[smart]"
    s = selector({"x.test": "smtp:"}, default_transport="smtp:[own]", relayhost="[smart]")
    assert s.remote("u", "x.test", relay_class=False).nexthop == "[own]"
    # An empty transport keeps the class default and takes the table's nexthop.
    route = selector({"x.test": ":[gw]"}).remote("u", "x.test", relay_class=True)
    assert (route.transport, route.nexthop) == ("relay", "[gw]")


def test_lookup_order_address_domain_parent_wildcard() -> None:
    table = DictTable(
        {
            "a+b@sub.x.test": "smtp:[1.1.1.1]",
            "a@sub.x.test": "smtp:[2.2.2.2]",
            "sub.x.test": "smtp:[3.3.3.3]",
            ".x.test": "smtp:[4.4.4.4]",
            "*": "smtp:[5.5.5.5]",
        }
    )
    s = TransportSelector(replace(DEFAULTS, transport_maps=(table,)))
    assert s.lookup("A+B", "sub.x.test") == ("smtp", "[1.1.1.1]")
    assert s.lookup("a+c", "sub.x.test") == ("smtp", "[2.2.2.2]")
    assert s.lookup("z", "sub.x.test") == ("smtp", "[3.3.3.3]")
    assert s.lookup("z", "deep.other.x.test") == ("smtp", "[4.4.4.4]")
    assert s.lookup("z", "elsewhere.test") == ("smtp", "[5.5.5.5]")


def test_bare_parent_only_with_parent_domain_matching() -> None:
    s = selector({"x.test": "smtp:[9.9.9.9]"})
    assert s.lookup("u", "sub.x.test") is None
    s = selector({"x.test": "smtp:[9.9.9.9]"}, parent_matches=True)
    assert s.lookup("u", "sub.x.test") == ("smtp", "[9.9.9.9]")


def test_error_and_discard_and_unknown_transports() -> None:
    s = selector({"gone.test": "error:5.1.1 this domain is gone", "sink.test": "discard:"})
    err = s.remote("u", "gone.test", relay_class=False)
    assert (err.agent, err.nexthop) == (Agent.ERROR, "5.1.1 this domain is gone")
    assert s.remote("u", "sink.test", relay_class=False).agent is Agent.DISCARD
    weird = selector({"w.test": "uucp:host"}).remote("u", "w.test", relay_class=False)
    assert weird.agent is Agent.UNAVAILABLE


def test_router_resolves_remote_through_transport_maps() -> None:
    r = router({"remote.test": "smtp:[127.0.0.9]:2525"})
    res = r.resolve("bob@remote.test")
    assert (res.transport, res.nexthop, res.transport_name) == ("smtp", "[127.0.0.9]:2525", "smtp")
    assert r.resolve("bob@other.test").nexthop == "other.test"


def test_router_sends_local_domain_to_lmtp_when_configured() -> None:
    r = router(virtual_transport="lmtp:unix:/run/dovecot/lmtp")
    res = r.resolve("alice@vmail.test")
    assert (res.transport, res.nexthop) == ("lmtp", "unix:/run/dovecot/lmtp")
    assert r.resolve("nobody@vmail.test").transport == "error"  # still unknown
    # mydestination keeps the Maildir agent (local_transport is local:)
    assert r.resolve("root@example.com").transport == "maildir"


def test_router_transport_maps_override_local_domains() -> None:
    r = router({"example.com": "lmtp:inet:127.0.0.1:24"})
    res = r.resolve("root@example.com")
    assert (res.transport, res.nexthop) == ("lmtp", "inet:127.0.0.1:24")


def test_router_error_transport_bounces_text() -> None:
    res = router({"gone.test": "error:domain closed"}).resolve("u@gone.test")
    assert (res.transport, res.error) == ("error", "domain closed")
