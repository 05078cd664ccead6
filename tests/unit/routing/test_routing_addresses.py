"""Address splitting, extensions, and the final-destination (resolve) loop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.routing import AddressClass, split_address, split_extension
from ironpost.routing.addresses import parse_targets


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("user@example.com", ("user", "example.com")),
        ('"user@remote"@example.com', ("user@remote", "example.com")),
        ('"a\\"b"@example.com', ('a"b', "example.com")),
        ("user@remote@example.com", ("user@remote", "example.com")),
        ("user", ("user", "")),
        ('"user@remote"', ("user@remote", "")),
        ("", ("", "")),
    ],
)
def test_split_address(address: str, expected: tuple[str, str]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize(
    ("local", "delims", "expected"),
    [
        ("user+ext", "+", ("user", "+ext")),
        ("user+a+b", "+", ("user", "+a+b")),
        ("user", "+", ("user", "")),
        ("+ext", "+", ("+ext", "")),
        ("user-ext", "+-", ("user", "-ext")),
        ("user+x-y", "-+", ("user", "+x-y")),
        ("owner-list", "-", ("owner-list", "")),
        ("list-request", "-", ("list-request", "")),
        ("user+ext", "", ("user+ext", "")),
    ],
)
def test_split_extension(local: str, delims: str, expected: tuple[str, str]) -> None:
    assert split_extension(local, delims) == expected


@pytest.mark.parametrize(
    ("local", "domain", "expected"),
    [
        ("user", "example.com", ("user", "example.com")),
        ("user", "EXAMPLE.COM.", ("user", "example.com")),
        ("user%remote.test", "example.com", ("user", "remote.test")),
        ("user%a.test%example.com", "example.com", ("user", "a.test")),
        ("user%a.test%remote.test", "example.com", ("user%a.test", "remote.test")),
        ("user@remote.test", "example.com", ("user", "remote.test")),  # quoted or double @
        ("remote.test!user", "example.com", ("user", "remote.test")),
        ("example.com!remote.test!user", "example.com", ("user", "remote.test")),
        ("user%remote.test", "[192.0.2.1]", ("user", "remote.test")),
        ("user%remote.test", "vmail.test", ("user%remote.test", "vmail.test")),  # not LOCAL
        ("user%example.com", "example.com", ("user", "example.com")),
        ("user", "", ("user", "mail.example.com")),
        ("user@", "example.com", ("user", "example.com")),
        ("!user", "example.com", ("!user", "example.com")),
    ],
)
def test_final_destination(make_router, local: str, domain: str, expected: tuple[str, str]) -> None:
    assert make_router().final_destination(local, domain) == expected


def test_hacks_can_be_disabled(make_router) -> None:
    router = make_router(allow_percent_hack=False, swap_bangpath=False)
    assert router.final_destination("u%remote.test", "example.com") == (
        "u%remote.test",
        "example.com",
    )
    assert router.final_destination("remote.test!u", "example.com") == (
        "remote.test!u",
        "example.com",
    )
    # A quoted @ is always cracked open: it is not a hack, it is the address.
    assert router.final_destination("u@remote.test", "example.com") == ("u", "remote.test")


_PIECES = st.sampled_from(["u", "example.com", "remote.test", "@", "%", "!", ".", "vmail.test"])


@given(st.lists(_PIECES, max_size=12).map("".join), st.sampled_from(["example.com", "x.test"]))
def test_final_destination_never_leaves_routing_inside_a_local_domain(
    base_router, local: str, domain: str
) -> None:
    router = base_router
    out_local, out_domain = router.final_destination(local, domain)
    if router.domain_class(out_domain) is AddressClass.LOCAL:
        # Everything routable was peeled off: what is left is delivered here, not relayed.
        assert "@" not in out_local
        assert "%" not in out_local
        # A bang path needs a non-empty site before the first "!".
        assert "!" not in out_local or out_local.startswith("!")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@x.test, b@y.test", ("a@x.test", "b@y.test")),
        ("a@x.test b@y.test,,c", ("a@x.test", "b@y.test", "c")),
        ('"|/usr/bin/prog arg", bob', ("|/usr/bin/prog arg", "bob")),
        ("  ", ()),
    ],
)
def test_parse_targets(value: str, expected: tuple[str, ...]) -> None:
    assert parse_targets(value) == expected
