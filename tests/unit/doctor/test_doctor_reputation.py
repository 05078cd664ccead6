"""DNSBL listings, error answers and the public-resolver warning, against FakeResolver."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_doctor_support import GOOD_ZONES, make_inputs, settings_for

from ironpost.doctor.check import Check
from ironpost.doctor.reputation import check_reputation, dnsbl_domains, public_resolvers

Q = "10.2.0.192"


def run(zones: dict[str, Any], extra: str = "", **kw: Any) -> dict[str, Check]:
    checks = asyncio.run(check_reputation(make_inputs({**GOOD_ZONES, **zones}, extra, **kw)))
    return {c.title: c for c in checks}


RBL = "smtpd_recipient_restrictions = reject_unlisted_recipient, reject_rbl_client bl.test\n"


def test_lists_in_use() -> None:
    loaded = settings_for(
        "smtpd_client_restrictions = reject_rbl_client a.test=127.0.0.2, reject_maps_rbl\n"
        "maps_rbl_domains = b.test\n" + RBL
    )
    assert dnsbl_domains([loaded.settings]) == [
        ("a.test=127.0.0.2", "a.test"),
        ("b.test", "b.test"),
        ("bl.test", "bl.test"),
    ]


def test_zen_is_asked_when_no_list_is_configured() -> None:
    checks = run({})
    assert "DNSBL zen.spamhaus.org 192.0.2.10" in checks


def test_listed_and_not_listed() -> None:
    assert run({}, RBL)["DNSBL bl.test 192.0.2.10"].status == "pass"
    listed = run({f"{Q}.bl.test": {"A": ["127.0.0.2"], "TXT": ["spam seen"]}}, RBL)
    check = listed["DNSBL bl.test 192.0.2.10"]
    assert check.status == "fail"
    assert check.detail == "192.0.2.10 is listed (127.0.0.2): spam seen"


@pytest.mark.parametrize("code", ["127.255.255.252", "127.255.255.254", "127.255.255.255"])
def test_error_answers_mean_the_query_was_refused(code: str) -> None:
    check = run({f"{Q}.bl.test": {"A": [code]}}, RBL)["DNSBL bl.test 192.0.2.10"]
    assert check.status == "warn"
    assert check.detail.startswith("query refused: your resolver is blocked")


def test_answers_outside_127_and_filtered_codes_are_no_listing() -> None:
    assert run({f"{Q}.bl.test": {"A": ["192.0.2.1"]}}, RBL)["DNSBL bl.test 192.0.2.10"].status == (
        "pass"
    )
    filtered = RBL.replace("bl.test", "bl.test=127.0.0.4")
    assert (
        run({f"{Q}.bl.test": {"A": ["127.0.0.2"]}}, filtered)["DNSBL bl.test 192.0.2.10"].status
        == "pass"
    )


def test_tempfail_warns() -> None:
    inputs = make_inputs(GOOD_ZONES, RBL)
    inputs.resolver.fail("bl.test")  # type: ignore[attr-defined]
    checks = {c.title: c for c in asyncio.run(check_reputation(inputs))}
    assert checks["DNSBL bl.test 192.0.2.10"].status == "warn"


def test_public_resolver_warns() -> None:
    assert public_resolvers(["8.8.8.8", "127.0.0.1:53", "[2606:4700:4700::1111]:53", "x"]) == [
        "8.8.8.8",
        "2606:4700:4700::1111",
    ]
    check = run({}, nameservers=("1.1.1.1:53",))["resolver"]
    assert check.status == "warn" and "Spamhaus" in check.detail
    assert run({})["resolver"].status == "pass"
