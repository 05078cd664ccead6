"""FakeResolver: the zone format, statuses and the call log other tests rely on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from ironpost.dns import MxRecord, Resolver, Result, Status
from ironpost.dns.resolver import INVALID_NAME
from ironpost.testing.dns import FakeResolver

ZONES = {
    "example.com": {
        "MX": [(20, "MX2.example.com."), (10, "mx1.example.com")],
        "TXT": ["v=spf1 -all", ("v=DKIM1; ", "p=AB")],
    },
    "mx1.example.com": {"A": ["192.0.2.1"], "AAAA": ["2001:db8::1"]},
    "null.example": {"MX": [(0, ".")]},
    "192.0.2.1": {"PTR": ["mx1.example.com."]},
    "deep.sub.example.org": {"A": ["192.0.2.9"]},
}


def run(coro: Awaitable[Result[Any]]) -> Result[Any]:
    async def main() -> Result[Any]:
        return await coro

    return asyncio.run(main())


@pytest.fixture
def fake() -> FakeResolver:
    return FakeResolver(ZONES, tempfail={"broken.test"})


def test_answers_in_resolver_shapes(fake: FakeResolver) -> None:
    mx = run(fake.mx("Example.COM."))
    assert mx.ok and mx.records == (
        MxRecord(10, "mx1.example.com"),
        MxRecord(20, "mx2.example.com"),
    )
    assert run(fake.a("mx1.example.com")).records == ("192.0.2.1",)
    assert run(fake.aaaa("mx1.example.com")).records == ("2001:db8::1",)
    assert run(fake.txt("example.com")).records == ("v=spf1 -all", "v=DKIM1; p=AB")
    assert run(fake.ptr("192.0.2.1")).records == ("mx1.example.com",)
    assert run(fake.mx("null.example")).records == (MxRecord(0, ""),)


def test_statuses(fake: FakeResolver) -> None:
    assert run(fake.a("example.com")).status is Status.NODATA
    assert run(fake.a("sub.example.org")).status is Status.NODATA  # empty non-terminal
    assert run(fake.a("nowhere.example")).status is Status.NXDOMAIN
    assert run(fake.ptr("192.0.2.2")).status is Status.NXDOMAIN
    assert run(fake.mx("broken.test")).status is Status.TEMPFAIL
    assert run(fake.a("mx.broken.test")).status is Status.TEMPFAIL  # below it too
    invalid = run(fake.mx("a..b"))
    assert invalid.status is Status.NXDOMAIN and invalid.error == INVALID_NAME


def test_call_log_keeps_names_as_asked(fake: FakeResolver) -> None:
    run(fake.mx("Example.COM"))
    run(fake.a("mx1.example.com"))
    run(fake.ptr("192.0.2.1"))
    run(fake.mx("a..b"))
    assert fake.calls == [
        ("MX", "Example.COM"),
        ("A", "mx1.example.com"),
        ("PTR", "192.0.2.1"),
        ("MX", "a..b"),
    ]
    assert fake.asked("mx") == ["Example.COM", "a..b"]


def test_zones_can_change_during_a_test(fake: FakeResolver) -> None:
    fake.set("new.example", "A", ["192.0.2.50"])
    assert run(fake.a("new.example")).records == ("192.0.2.50",)
    fake.fail("new.example")
    assert run(fake.a("new.example")).status is Status.TEMPFAIL
    fake.heal("new.example")
    fake.remove("new.example")
    assert run(fake.a("new.example")).status is Status.NXDOMAIN
    fake.heal("broken.test")
    assert run(fake.a("broken.test")).status is Status.NXDOMAIN


def test_bad_zone_data_is_rejected() -> None:
    with pytest.raises(ValueError):
        FakeResolver({"example.com": {"SRV": ["0 0 25 mx.example.com"]}})
    with pytest.raises(ValueError):
        FakeResolver({"bad..name": {"A": ["192.0.2.1"]}})


def test_is_a_resolver() -> None:
    resolver: Resolver = FakeResolver()
    assert run(resolver.mx("example.com")).status is Status.NXDOMAIN
