"""myhostname, PTR (FCrDNS and the generic-name heuristic) and MX, against FakeResolver."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_doctor_support import GOOD_ZONES, OUR_IP, make_inputs

from ironpost.doctor.check import Check
from ironpost.doctor.names import check_names, generic_reason

ADDR = ipaddress.IPv4Address(OUR_IP)


@pytest.mark.parametrize(
    "name",
    [
        "192-0-2-10.static.provider.net",
        "10.2.0.192.in-addr.example.net",
        "host192.000.002.010.example.net",
        "c000020a.cust.example.net",
        "ip-192-0-2-10.eu-west-1.compute.example",
        "dsl-pool-17.example.net",
        "adsl-line7.example.net",
        "dynamic-ip.example.net",
        "pool-71-2.example.net",
        "cable-modem9.example.net",
        "dhcp-22.example.net",
    ],
)
def test_generic_names(name: str) -> None:
    assert generic_reason(name, ADDR) is not None


@pytest.mark.parametrize(
    "name",
    [
        "mail.example.org",
        "mx1.example.org",
        "smtp2.mail.example.net",
        "poolside.example.org",
        "statics.example.org",
        "mail192.example.org",
        "a.b.dsl.net",  # the registered domain itself is not judged
        "mail-1-2-3-4.example.org",  # other numbers than our address
    ],
)
def test_chosen_names_are_not_generic(name: str) -> None:
    assert generic_reason(name, ADDR) is None


@given(st.ip_addresses(v=4), st.sampled_from(["-", ".", "_"]), st.booleans())
def test_any_address_spelled_in_the_name_is_generic(
    address: ipaddress.IPv4Address, sep: str, backwards: bool
) -> None:
    octets = [str(o) for o in address.packed]
    if backwards:
        octets.reverse()
    assert generic_reason(f"x{sep.join(octets)}.provider.example", address) is not None


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", max_size=80))
def test_the_heuristic_never_raises(name: str) -> None:
    generic_reason(name, ADDR)


def run(zones: dict[str, Any], **kw: Any) -> dict[str, Check]:
    checks = asyncio.run(check_names(make_inputs(zones, **kw)))
    return {c.title: c for c in checks}


def test_correct_names_pass() -> None:
    checks = run(GOOD_ZONES)
    assert {c.status for c in checks.values()} == {"pass"}, checks
    assert set(checks) == {"myhostname mail.example.org", f"PTR {OUR_IP}", "MX example.org"}


def test_hostname_resolving_elsewhere_fails() -> None:
    zones = {**GOOD_ZONES, "mail.example.org": {"A": ["192.0.2.99"]}}
    check = run(zones)["myhostname mail.example.org"]
    assert check.status == "fail"
    assert "resolves to 192.0.2.99, not to 192.0.2.10" in check.detail
    # and the PTR, though it names myhostname, is not forward-confirmed
    assert "no FCrDNS" in run(zones)[f"PTR {OUR_IP}"].detail


def test_single_label_hostname_fails() -> None:
    check = run(GOOD_ZONES, hostname="mail")["myhostname mail"]
    assert check.status == "fail" and "fully qualified" in check.detail


def test_no_ptr_and_generic_ptr_and_wrong_ptr_fail() -> None:
    zones = {k: v for k, v in GOOD_ZONES.items() if k != OUR_IP}
    assert run(zones)[f"PTR {OUR_IP}"].detail.startswith("no PTR record")
    generic = {**zones, OUR_IP: {"PTR": ["192-0-2-10.static.provider.net"]}}
    check = run(generic)[f"PTR {OUR_IP}"]
    assert check.status == "fail" and "generic name" in check.detail
    assert "set its PTR to mail.example.org" in check.fix
    other = {**zones, OUR_IP: {"PTR": ["www.example.org"]}}
    assert "not myhostname" in run(other)[f"PTR {OUR_IP}"].detail


def test_dns_tempfail_is_a_warning_not_an_absence() -> None:
    inputs = make_inputs(GOOD_ZONES)
    inputs.resolver.fail("mail.example.org")  # type: ignore[attr-defined]
    inputs.resolver.fail("example.org")  # type: ignore[attr-defined]
    checks = {c.title: c for c in asyncio.run(check_names(inputs))}
    assert checks["myhostname mail.example.org"].status == "warn"
    assert checks["MX example.org"].status == "warn"


def test_mx_cases() -> None:
    no_mx = {**GOOD_ZONES, "example.org": {"TXT": ["v=spf1 -all"]}}
    assert run(no_mx)["MX example.org"].status == "fail"
    null = {**GOOD_ZONES, "example.org": {"MX": [(0, ".")]}}
    assert "null MX" in run(null)["MX example.org"].detail
    alias = {
        **GOOD_ZONES,
        "example.org": {"MX": [(10, "mx.example.org")]},
        "mx.example.org": {"A": [OUR_IP]},
    }
    assert run(alias)["MX example.org"].status == "pass"
    elsewhere = {**GOOD_ZONES, "example.org": {"MX": [(10, "filter.example.net")]}}
    assert run(elsewhere)["MX example.org"].status == "warn"
