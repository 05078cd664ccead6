"""mynetworks-style lists: entry forms, IPv6, mapped addresses, files, tables, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.policy import NetworkList

NETS = NetworkList.build(
    ["127.0.0.0/8", "192.0.2.10", "[::1]/128", "[2001:db8::]/32", "10.1.2.3/16"],
)


@pytest.mark.parametrize(
    ("ip", "inside"),
    [
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("192.0.2.10", True),
        ("192.0.2.11", False),
        ("::1", True),
        ("2001:db8:ffff::1", True),
        ("2001:db9::1", False),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped
        ("10.1.99.99", True),  # host bits in the entry tolerated
        ("not-an-ip", False),
        ("", False),
    ],
)
def test_contains(ip: str, inside: bool) -> None:
    assert NETS.contains(ip) is inside
    assert NETS.contains(ip) is inside  # cached path


def test_hostnames_are_ignored_with_a_warning() -> None:
    warnings: list[str] = []
    nets = NetworkList.build(["gateway.example", "192.0.2.0/24"], warn=warnings.append)
    assert nets.contains("192.0.2.5")
    assert warnings and "gateway.example" in warnings[0]


@pytest.mark.parametrize("entry", ["[192.0.2.1", "300.1.1.1/8", "!192.0.2.1"])
def test_bad_entries_fail_at_build(entry: str) -> None:
    with pytest.raises(ValueError, match="mynetworks"):
        NetworkList.build([entry])


def test_file_and_table_entries(tmp_path: Path, dict_table) -> None:
    f = tmp_path / "nets"
    f.write_text("# trusted\n198.51.100.0/24, 203.0.113.5\n")
    table = dict_table({"192.0.2.99": "OK"}, "dict:n")
    nets = NetworkList.build([str(f), "dict:n"], open_table=lambda spec: table)
    assert nets.contains("198.51.100.200")
    assert nets.contains("203.0.113.5")
    assert nets.contains("192.0.2.99")
    assert not nets.contains("192.0.2.98")


@given(st.ip_addresses(v=4))
def test_ipv4_membership_matches_ipaddress(ip) -> None:
    import ipaddress

    expected = ip in ipaddress.ip_network("127.0.0.0/8") or ip == ipaddress.ip_address("192.0.2.10")
    expected = expected or ip in ipaddress.ip_network("10.1.0.0/16")
    assert NETS.contains(str(ip)) is expected
