"""Client host names (policy.client_names): PTR, forward confirmation, statuses."""

from __future__ import annotations

import asyncio
from typing import Any

from ironpost.policy import Stage, Verdict
from ironpost.policy.client_names import (
    MAX_PTR_NAMES,
    ClientNames,
    apply,
    lookup_client_names,
)
from ironpost.testing.dns import FakeResolver


def names(zones: dict[str, Any], address: str, **kw: Any) -> tuple[ClientNames, list[str]]:
    warnings: list[str] = []
    fake = FakeResolver(zones, **kw)
    got = asyncio.run(lookup_client_names(fake, address, log_warning=warnings.append))
    return got, warnings


def test_forward_confirmed_name() -> None:
    got, warnings = names(
        {"192.0.2.5": {"PTR": ["Mail.Example.test."]}, "mail.example.test": {"A": ["192.0.2.5"]}},
        "192.0.2.5",
    )
    assert got == ClientNames("mail.example.test", "mail.example.test", "ok", "ok")
    assert warnings == []


def test_ptr_that_does_not_resolve_back() -> None:
    got, warnings = names(
        {"192.0.2.5": {"PTR": ["dyn.example.test"]}, "dyn.example.test": {"A": ["192.0.2.6"]}},
        "192.0.2.5",
    )
    assert got == ClientNames("unknown", "dyn.example.test", "unknown", "ok")
    assert warnings == ["hostname dyn.example.test does not resolve to address 192.0.2.5"]


def test_no_ptr_and_tempfails() -> None:
    assert names({}, "192.0.2.5")[0] == ClientNames("unknown", "unknown", "unknown", "unknown")
    assert names({}, "192.0.2.5", tempfail=["2.0.192.in-addr.arpa"])[0] == ClientNames(
        "unknown", "unknown", "tempfail", "tempfail"
    )
    got, _ = names({"192.0.2.5": {"PTR": ["h.down.test"]}}, "192.0.2.5", tempfail=["down.test"])
    assert got == ClientNames("unknown", "h.down.test", "tempfail", "ok")


def test_several_ptr_names_any_may_confirm_and_work_is_bounded() -> None:
    ptrs = [f"h{i}.example.test" for i in range(MAX_PTR_NAMES + 3)]
    zones: dict[str, Any] = {"192.0.2.5": {"PTR": ptrs}, "h2.example.test": {"A": ["192.0.2.5"]}}
    fake = FakeResolver(zones)
    got = asyncio.run(lookup_client_names(fake, "192.0.2.5"))
    assert got == ClientNames("h2.example.test", "h0.example.test", "ok", "ok")
    assert fake.asked("A") == ptrs[:MAX_PTR_NAMES]


def test_invalid_ptr_names_are_never_used() -> None:
    got, warnings = names({"192.0.2.5": {"PTR": ["bad_-.", "-x.example"]}}, "192.0.2.5")
    assert got == ClientNames()
    assert warnings


def test_ipv6_uses_aaaa_and_bad_addresses_are_unknown() -> None:
    zones = {
        "2001:db8::5": {"PTR": ["v6.example.test"]},
        "v6.example.test": {"AAAA": ["2001:db8:0::5"]},
    }
    fake = FakeResolver(zones)
    got = asyncio.run(lookup_client_names(fake, "2001:db8::5"))
    assert got.name == "v6.example.test" and fake.asked("A") == []
    assert names({}, "not-an-address")[0] == ClientNames()


def test_apply_feeds_the_client_restrictions(harness: Any) -> None:
    h = harness(
        {Stage.CLIENT: ["reject_unknown_client_hostname"]},
        client="192.0.2.5",
    )
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT  # defaults: not looked up
    apply(h.ctx, ClientNames("unknown", "dyn.example.test", "unknown", "ok"))
    assert (h.ctx.client_name, h.ctx.reverse_client_name) == ("unknown", "dyn.example.test")
    assert h.rcpt("user@example.com").reply.text == (
        "Client host rejected: cannot find your hostname, [192.0.2.5]"
    )
