"""Domain lists and address classes: names, wildcards, parent matching, tables, literals."""

from __future__ import annotations

from pathlib import Path

import pytest

from ironpost.routing import AddressClass, DomainList


@pytest.mark.parametrize(
    ("domain", "klass"),
    [
        ("example.com", AddressClass.LOCAL),
        ("EXAMPLE.COM", AddressClass.LOCAL),
        ("example.com.", AddressClass.LOCAL),
        ("sub.example.com", AddressClass.DEFAULT),  # mydestination: no parent matching
        ("alias.test", AddressClass.VIRTUAL_ALIAS),
        ("vmail.test", AddressClass.VIRTUAL_MAILBOX),
        ("relay.test", AddressClass.RELAY),
        ("deep.sub.relay.test", AddressClass.RELAY),  # relay_domains: parent style
        ("remote.test", AddressClass.DEFAULT),
        ("[192.0.2.1]", AddressClass.LOCAL),
        ("[127.0.0.1]", AddressClass.LOCAL),
        ("[IPv6:::1]", AddressClass.LOCAL),
        ("[192.0.2.99]", AddressClass.DEFAULT),
        ("[not-an-ip]", AddressClass.DEFAULT),
    ],
)
def test_domain_class(make_router, domain: str, klass: AddressClass) -> None:
    router = make_router()
    assert router.domain_class(domain) is klass
    assert router.is_final_destination(domain) == (
        klass in (AddressClass.LOCAL, AddressClass.VIRTUAL_ALIAS, AddressClass.VIRTUAL_MAILBOX)
    )


def test_wildcard_entry_matches_subdomains_only() -> None:
    dl = DomainList.build([".wild.test"])
    assert dl.matches("a.wild.test")
    assert dl.matches("b.a.WILD.test")
    assert not dl.matches("wild.test")
    assert not dl.matches("notwild.test")


def test_parent_style_controls_bare_names() -> None:
    assert not DomainList.build(["d.test"]).matches("x.d.test")
    assert DomainList.build(["d.test"], parent_matches_subdomains=True).matches("x.d.test")
    assert not DomainList.build(["d.test"], parent_matches_subdomains=True).matches("xd.test")


def test_table_entries_and_parent_keys(dict_table) -> None:
    table = dict_table({"t.test": "x", ".p.test": "x"})
    dl = DomainList.build(["dict:t"], open_table=lambda spec: table)
    assert dl.matches("t.test")
    assert not dl.matches("sub.t.test")  # bare key, no parent style
    assert dl.matches("sub.p.test")  # ".p.test" key
    parent = DomainList.build(
        ["dict:t"], open_table=lambda spec: table, parent_matches_subdomains=True
    )
    assert parent.matches("sub.t.test")


def test_file_entries_are_read_at_build(tmp_path: Path) -> None:
    f = tmp_path / "domains"
    f.write_text("one.test, two.test  # comment\n.three.test\n")
    dl = DomainList.build([str(f), "four.test"])
    assert all(dl.matches(d) for d in ("one.test", "two.test", "x.three.test", "four.test"))
    assert not dl.matches("three.test")


def test_empty_list_matches_nothing() -> None:
    assert not DomainList()
    assert not DomainList().matches("example.com")
    assert not DomainList.build(["a.test"]).matches("")
