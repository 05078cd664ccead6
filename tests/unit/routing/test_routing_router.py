"""Recipient validation, alias expansion and resolution to a transport."""

from __future__ import annotations

from pathlib import Path

import pytest

from ironpost.routing import AddressClass, ExpansionLimitError

BASE = Path("/var/mail/vhosts")

# -- recipient_known -------------------------------------------------------------------

KNOWN_SETUP = {
    "virtual": {
        "info@alias.test": "alice@vmail.test",
        "@catchall.alias.test": "bob@vmail.test",
        "sales@example.com": "alice@vmail.test",
        "redirected@vmail.test": "carol@remote.test",
    },
    "mailboxes": {"alice@vmail.test": "vmail.test/alice/", "@any.vmail.test": "any/"},
    "local": {"root": "x", "joe@example.com": "x"},
}


@pytest.mark.parametrize(
    ("address", "known"),
    [
        ("info@alias.test", True),
        ("INFO@Alias.Test", True),
        ("info+tag@alias.test", True),  # recipient_delimiter
        ("nobody@alias.test", False),
        ("alice@vmail.test", True),
        ("alice+x@vmail.test", True),
        ("redirected@vmail.test", True),  # virtual alias counts in a mailbox domain
        ("nobody@vmail.test", False),
        ("root@example.com", True),  # bare local part key
        ("root+x@example.com", True),
        ("joe@example.com", True),  # full address key
        ("sales@example.com", True),  # virtual alias in a local domain
        ("nobody@example.com", False),
        ("root@mail.example.com", True),
        ("user@remote.test", None),
        ("user@relay.test", None),
        ("root%remote.test@example.com", None),  # final destination is remote
        ("joe%example.com@example.com", True),
    ],
)
def test_recipient_known(make_router, address: str, known: bool | None) -> None:
    assert make_router(**KNOWN_SETUP).recipient_known(address) is known


def test_catch_all_virtual_alias(make_router, dict_table) -> None:
    router = make_router(virtual={"@alias.test": "postmaster@example.com"})
    assert router.recipient_known("anyone@alias.test") is True


def test_empty_maps_accept_everyone(make_router) -> None:
    router = make_router()
    assert router.recipient_known("anyone@example.com") is True
    assert router.recipient_known("anyone@vmail.test") is True
    assert router.recipient_known("anyone@alias.test") is False  # alias domains need a map


def test_lookup_recipient_reports_class(make_router) -> None:
    router = make_router(**KNOWN_SETUP)
    assert router.lookup_recipient("nobody@vmail.test") == (AddressClass.VIRTUAL_MAILBOX, False)
    assert router.lookup_recipient("x@remote.test") == (AddressClass.DEFAULT, None)


def test_lookup_order_stops_at_full_address(make_router) -> None:
    router = make_router(virtual={"a@alias.test": "x@remote.test", "@alias.test": "c@r.test"})
    table = router.config.virtual_alias_maps[0]
    assert router.recipient_known("A+ext@ALIAS.test")
    assert table.lookups == ["a+ext@alias.test", "a@alias.test"]


# -- expand ----------------------------------------------------------------------------


def test_expand_one_to_many_and_recursion(make_router) -> None:
    router = make_router(
        virtual={
            "team@alias.test": "alice@vmail.test, lead@alias.test, x@remote.test",
            "lead@alias.test": "bob@vmail.test",
        }
    )
    assert router.expand("team@alias.test") == [
        "alice@vmail.test",
        "bob@vmail.test",
        "x@remote.test",
    ]


def test_expand_unknown_and_plain_addresses_unchanged(make_router) -> None:
    router = make_router(virtual={"a@alias.test": "b@vmail.test"})
    assert router.expand("nobody@example.com") == ["nobody@example.com"]
    assert router.expand("x@remote.test") == ["x@remote.test"]


def test_expand_self_mapping_is_final(make_router) -> None:
    router = make_router(virtual={"a@vmail.test": "a@vmail.test, archive@vmail.test"})
    assert router.expand("a@vmail.test") == ["a@vmail.test", "archive@vmail.test"]


def test_expand_dedupes_preserving_order(make_router) -> None:
    router = make_router(
        virtual={
            "all@alias.test": "x@alias.test, y@alias.test, c@vmail.test",
            "x@alias.test": "c@vmail.test, d@vmail.test",
            "y@alias.test": "D@vmail.test, e@vmail.test",
        }
    )
    assert router.expand("all@alias.test") == ["c@vmail.test", "d@vmail.test", "e@vmail.test"]


def test_expand_loop_raises(make_router) -> None:
    router = make_router(virtual={"a@alias.test": "b@alias.test", "b@alias.test": "a@alias.test"})
    with pytest.raises(ExpansionLimitError):
        router.expand("a@alias.test")


def test_expand_limits(make_router) -> None:
    chain = {f"u{i}@alias.test": f"u{i + 1}@alias.test" for i in range(20)}
    assert make_router(virtual=chain).expand("u0@alias.test") == ["u20@alias.test"]
    with pytest.raises(ExpansionLimitError):
        make_router(virtual=chain, virtual_alias_recursion_limit=5).expand("u0@alias.test")
    wide = {"list@alias.test": ", ".join(f"m{i}@remote.test" for i in range(10))}
    with pytest.raises(ExpansionLimitError):
        make_router(virtual=wide, virtual_alias_expansion_limit=5).expand("list@alias.test")


def test_expand_deep_chain_does_not_hit_python_recursion(make_router) -> None:
    chain = {f"u{i}@alias.test": f"u{i + 1}@alias.test" for i in range(1500)}
    assert make_router(virtual=chain, virtual_alias_recursion_limit=2000).expand(
        "u0@alias.test"
    ) == ["u1500@alias.test"]


def test_expand_propagates_unmatched_extension(make_router) -> None:
    router = make_router(
        virtual={
            "joe@alias.test": "joe.user@remote.test",
            "exact+tag@alias.test": "tagged@remote.test",
            "@catch.alias.test": "sink@remote.test",
        }
    )
    assert router.expand("joe+foo@alias.test") == ["joe.user+foo@remote.test"]
    assert router.expand("exact+tag@alias.test") == ["tagged@remote.test"]
    assert router.expand("x+y@catch.alias.test") == ["sink+y@remote.test"]


def test_expand_domain_rewrite_and_unqualified_targets(make_router) -> None:
    router = make_router(virtual={"@alias.test": "@vmail.test", "short@vmail.test": "root"})
    assert router.expand("who@alias.test") == ["who@vmail.test"]
    assert router.expand("short@vmail.test") == ["root@example.com"]


def test_expand_local_aliases(make_router) -> None:
    router = make_router(
        aliases={"postmaster": "root", "root": "admin@vmail.test, root", "list": "a, b"},
    )
    assert router.expand("postmaster@example.com") == ["admin@vmail.test", "root@example.com"]
    assert router.expand("Postmaster+x@example.com") == ["admin@vmail.test", "root@example.com"]
    assert router.expand("list@mail.example.com") == ["a@example.com", "b@example.com"]
    # aliases apply to local domains only
    assert router.expand("postmaster@vmail.test") == ["postmaster@vmail.test"]


def test_expand_virtual_before_aliases(make_router) -> None:
    router = make_router(virtual={"root@example.com": "v@vmail.test"}, aliases={"root": "a"})
    assert router.expand("root@example.com") == ["v@vmail.test"]


# -- resolve ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "transport", "where"),
    [
        ("alice@vmail.test", "maildir", BASE / "vmail.test/alice"),
        ("Alice+tag@VMAIL.test", "maildir", BASE / "vmail.test/alice"),
        ("z@vmail.test", "maildir", BASE / "any"),
        ("user@remote.test", "smtp", "remote.test"),
        ("user@sub.relay.test", "smtp", "sub.relay.test"),
        ("user%remote.test@example.com", "smtp", "remote.test"),
        ("root@example.com", "maildir", BASE / "root"),
        ("Root+Ext@example.com", "maildir", BASE / "root"),
        ("joe@example.com", "maildir", BASE / "custom/joe"),
    ],
)
def test_resolve(make_router, address: str, transport: str, where: object) -> None:
    router = make_router(
        mailboxes={"alice@vmail.test": "vmail.test/alice/", "@vmail.test": "any/"},
        local={"root": "x", "joe@example.com": "custom/joe/"},
    )
    res = router.resolve(address)
    assert res.transport == transport, res
    if transport == "maildir":
        assert res.mailbox == where
        assert res.nexthop is None
    else:
        assert res.nexthop == where
        assert res.mailbox is None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("vmail.test/mbox", "mailbox format not supported"),
        ("../etc/", "unsafe mailbox path"),
        ("a/../../b/", "unsafe mailbox path"),
        ("/etc/", "unsafe mailbox path"),
        ("~root/", "unsafe mailbox path"),
        ("./", "unsafe mailbox path"),
    ],
)
def test_resolve_mailbox_path_safety(make_router, value: str, error: str) -> None:
    res = make_router(mailboxes={"u@vmail.test": value}).resolve("u@vmail.test")
    assert res.transport == "error"
    assert res.error == error
    assert res.mailbox is None


@pytest.mark.parametrize(
    ("address", "kwargs", "error"),
    [
        ("nobody@vmail.test", {"mailboxes": {"a@vmail.test": "a/"}}, "virtual mailbox"),
        ("nobody@alias.test", {}, "virtual alias"),
        ("nobody@example.com", {"local": {"root": "x"}}, "local recipient"),
        ("|/bin/sh", {}, "not supported"),
        ("/var/spool/file", {}, "not supported"),
        (":include:/etc/list", {}, "not supported"),
        ("..@example.com", {}, "unsafe mailbox name"),
        ("a/b@example.com", {}, "unsafe mailbox name"),
    ],
)
def test_resolve_errors(make_router, address: str, kwargs: dict, error: str) -> None:
    res = make_router(**kwargs).resolve(address)
    assert res.transport == "error"
    assert res.error is not None and error in res.error


def test_resolved_address_is_the_final_one(make_router) -> None:
    res = make_router().resolve('"user@remote.test"@example.com')
    assert (res.address, res.klass, res.nexthop) == (
        "user@remote.test",
        AddressClass.DEFAULT,
        "remote.test",
    )
